// Cloud, New, Start and their options, Close, Info; the state a
// persistent dir keeps between processes.

package crabboxtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/internal/cloudinit"

	"github.com/crabbox/crabbox-go/provider"
)

// Provider facts of the local cloud.
const (
	// Name is the provider name recorded on resources.
	Name = "local"
	// DefaultRegion is the region Info reports unless WithRegion is given.
	DefaultRegion = "local-1"
	// BaseImageID is the base image every machine boots unless told
	// otherwise. It exists in ListImages without crabbox ownership labels
	// and cannot be changed or deleted (ErrPermission).
	BaseImageID = "local-base"
	// MaxSessions is the number of concurrent sessions one SSH connection
	// allows, like OpenSSH's default MaxSessions.
	MaxSessions = 10
)

type options struct {
	dir          string
	persist      bool // WithPersistentDir
	region       string
	pendingPolls int
	bootDelay    time.Duration
}

// Option configures a Cloud.
type Option func(*options) error

// WithDir keeps the cloud's machines and images under dir (created if
// needed, left in place by Close). The default is a new temporary
// directory that Close removes.
func WithDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: empty dir")
		}
		o.dir = dir
		return nil
	}
}

// WithPersistentDir keeps the cloud in dir across processes, so that a
// program run several times (an operator tool, one runbook step per run)
// sees one cloud: New loads the images, channels and machines an earlier
// Cloud saved there and boots the machines that were running again (their
// file systems as they were, SSH on the same address when it is free, the
// same host key); Close saves them, stops the machines (their processes
// end with the process that ran them; a machine's own TTL shutdown is not
// scheduled again) and leaves dir in place. One Cloud
// at a time uses a dir: New fails with an error wrapping ErrConflict while
// another holds it.
func WithPersistentDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: empty dir")
		}
		o.dir, o.persist = dir, true
		return nil
	}
}

// WithRegion sets the region Info reports (default DefaultRegion).
func WithRegion(region string) Option {
	return func(o *options) error {
		if region == "" {
			return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: empty region")
		}
		o.region = region
		return nil
	}
}

// WithImagePendingPolls makes GetImage report a new image pending n times
// before it is available (or failed). The default is 1.
func WithImagePendingPolls(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: negative pending polls %d", n)
		}
		o.pendingPolls = n
		return nil
	}
}

// WithBootDelay makes each machine start its SSH listener d after
// CreateMachine; until then the machine is pending and its address refuses
// connections. The default is 0: SSH answers when CreateMachine returns.
func WithBootDelay(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: negative boot delay %v", d)
		}
		o.bootDelay = d
		return nil
	}
}

// Cloud is the embedded local cloud. It is safe for concurrent use.
type Cloud struct {
	o       options
	ownsDir bool

	mu       sync.Mutex
	closed   bool
	machines map[string]*machine
	images   map[string]*image
	channels map[string][]provider.ChannelEntry
	noCap    map[string]bool
	failNext []string
	faults   map[string]fault // by call, see InjectFault
	lock     *os.File         // held on a persistent dir
}

var (
	_ provider.Driver     = (*Cloud)(nil)
	_ provider.Images     = (*Cloud)(nil)
	_ provider.Channels   = (*Cloud)(nil)
	_ provider.Protector  = (*Cloud)(nil)
	_ provider.Deprecator = (*Cloud)(nil)
)

// New starts a local cloud.
func New(opts ...Option) (*Cloud, error) {
	o := options{region: DefaultRegion, pendingPolls: 1}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	c := &Cloud{
		machines: map[string]*machine{},
		images:   map[string]*image{},
		channels: map[string][]provider.ChannelEntry{},
		noCap:    map[string]bool{},
	}
	if o.dir == "" {
		dir, err := os.MkdirTemp("", "crabboxtest-")
		if err != nil {
			return nil, provider.Wrap(provider.ErrUnavailable, err)
		}
		o.dir = dir
		c.ownsDir = true
	} else {
		abs, err := filepath.Abs(o.dir)
		if err != nil {
			return nil, provider.Wrap(provider.ErrInvalidArgument, err)
		}
		o.dir = abs
	}
	c.o = o
	for _, sub := range []string{"machines", "images", filepath.Join("images", BaseImageID, "root")} {
		if err := os.MkdirAll(filepath.Join(o.dir, sub), 0o755); err != nil {
			c.cleanupDir()
			return nil, provider.Wrap(provider.ErrUnavailable, err)
		}
	}
	c.images[BaseImageID] = &image{
		img: provider.Image{
			ID:          BaseImageID,
			Name:        "local-base",
			Description: "empty base file system of the local cloud (commands run with the host's tools)",
			State:       provider.ImageAvailable,
			Arch:        provider.DefaultArch,
			Labels:      map[string]string{"os": "host"},
			Created:     time.Now().UTC(),
		},
		root: filepath.Join(o.dir, "images", BaseImageID, "root"),
		base: true,
	}
	if o.persist {
		if err := c.load(); err != nil {
			c.o.persist = false // keep what the dir holds
			_ = c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Start is New for tests: it fails t on error and closes the cloud in
// t.Cleanup.
func Start(t testing.TB, opts ...Option) *Cloud {
	t.Helper()
	c, err := New(opts...)
	if err != nil {
		t.Fatalf("crabboxtest: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("crabboxtest: close: %v", err)
		}
	})
	return c
}

// Dir returns the directory holding the cloud's machines and images.
func (c *Cloud) Dir() string { return c.o.dir }

// Close stops every machine (listeners, connections, processes), waits for
// everything the cloud started, and removes the cloud's directory when New
// created it. Later calls return nil; other methods fail after Close.
func (c *Cloud) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	var saveErr error
	if c.o.persist && c.lock != nil {
		saveErr = c.save()
	}
	ms := make([]*machine, 0, len(c.machines))
	for _, m := range c.machines {
		ms = append(ms, m)
	}
	c.mu.Unlock()
	for _, m := range ms {
		m.stop()
	}
	if c.lock != nil {
		_ = c.lock.Close()
	}
	if saveErr != nil {
		return saveErr
	}
	return c.cleanupDir()
}

func (c *Cloud) cleanupDir() error {
	if !c.ownsDir {
		return nil
	}
	if err := os.RemoveAll(c.o.dir); err != nil {
		return fmt.Errorf("crabboxtest: removing %s: %w", c.o.dir, err)
	}
	return nil
}

// errClosed is returned by calls on a closed cloud.
func errClosed() error {
	return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: cloud is closed")
}

// begin checks ctx and that the cloud is open; it returns with c.mu held
// on success.
func (c *Cloud) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errClosed()
	}
	return nil
}

// Info reports Name and the region.
func (c *Cloud) Info() provider.Info { return provider.Info{Name: Name, Region: c.o.region} }

func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// stateFile is the file in a persistent dir that holds the cloud's state.
const stateFile = "state.json"

// savedState is what a persistent dir keeps: everything but the base image
// and the machines' running processes.
type savedState struct {
	Images   []savedImage                       `json:"images"`
	Channels map[string][]provider.ChannelEntry `json:"channels"`
	Machines []savedMachine                     `json:"machines"`
}

type savedImage struct {
	Image       provider.Image `json:"image"`
	Token       string         `json:"token,omitempty"`
	PendingLeft int            `json:"pending_left,omitempty"`
	FailReason  string         `json:"fail_reason,omitempty"`
}

type savedMachine struct {
	Info      provider.Machine `json:"info"`
	Token     string           `json:"token,omitempty"`
	UserData  []byte           `json:"user_data"`
	Terminate bool             `json:"terminate,omitempty"`
}

// load takes the persistent dir's lock and restores what it holds.
func (c *Cloud) load() error {
	lock, err := os.OpenFile(filepath.Join(c.o.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return provider.Wrap(provider.ErrUnavailable, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = lock.Close()
		return provider.Errorf(provider.ErrConflict, "crabboxtest: %s is in use by another local cloud: %v", c.o.dir, err)
	}
	c.lock = lock
	b, err := os.ReadFile(filepath.Join(c.o.dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return provider.Wrap(provider.ErrUnavailable, err)
	}
	var st savedState
	if err := json.Unmarshal(b, &st); err != nil {
		return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: %s: %v", filepath.Join(c.o.dir, stateFile), err)
	}
	for _, si := range st.Images {
		c.images[si.Image.ID] = &image{img: si.Image, root: filepath.Join(c.o.dir, "images", si.Image.ID, "root"),
			token: si.Token, pendingLeft: si.PendingLeft, failReason: si.FailReason}
	}
	for ch, h := range st.Channels {
		c.channels[ch] = h
	}
	for _, sm := range st.Machines {
		if err := c.restoreMachine(sm); err != nil {
			return err
		}
	}
	return nil
}

// restoreMachine registers a saved machine and boots it again if it was
// running.
func (c *Cloud) restoreMachine(sm savedMachine) error {
	cfg, err := cloudinit.Parse(sm.UserData)
	if err != nil {
		return err
	}
	id := sm.Info.ID
	dir := filepath.Join(c.o.dir, "machines", id)
	sshCfg, err := sshServerConfig(cfg, filepath.Join(dir, "root", "home", cfg.User, ".ssh", "authorized_keys"))
	if err != nil {
		return err
	}
	info := sm.Info
	info.Labels = cloneLabels(sm.Info.Labels)
	wasRunning := info.State == provider.MachineRunning || info.State == provider.MachinePending
	addr := info.SSHAddr
	if wasRunning {
		info.State = provider.MachinePending
	}
	m := &machine{c: c, id: id, token: sm.Token, dir: dir, root: filepath.Join(dir, "root"), cfg: cfg, sshCfg: sshCfg,
		conns: map[net.Conn]struct{}{}, gate: newGate(), pgids: map[int]uint64{}, procs: map[*proc]struct{}{},
		info: info, terminate: sm.Terminate}
	m.env = boxEnv(m.root, cfg.User)
	c.mu.Lock()
	c.machines[id] = m
	c.mu.Unlock()
	if !wasRunning {
		return nil
	}
	if cfg.Desktop {
		display, err := m.startDisplay(context.Background())
		if err == nil && display != "" {
			m.env = append(m.env, "DISPLAY="+display, "CRABBOX_DISPLAY="+display)
		}
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if err := m.startSSH(addr); err != nil {
		return provider.Errorf(provider.ErrUnavailable, "crabboxtest: machine %s: starting SSH: %v", id, err)
	}
	return nil
}

// save writes the cloud's state to the persistent dir. Called with c.mu
// held.
func (c *Cloud) save() error {
	st := savedState{Channels: c.channels}
	for _, im := range c.images {
		if im.base {
			continue
		}
		st.Images = append(st.Images, savedImage{Image: *im.snapshot(), Token: im.token,
			PendingLeft: im.pendingLeft, FailReason: im.failReason})
	}
	for _, m := range c.machines {
		ud, err := cloudinit.Render(*m.cfg)
		if err != nil {
			return err
		}
		m.mu.Lock()
		st.Machines = append(st.Machines, savedMachine{Info: *m.snapshotLocked(), Token: m.token, UserData: ud, Terminate: m.terminate})
		m.mu.Unlock()
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.o.dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return provider.Wrap(provider.ErrUnavailable, err)
	}
	if err := os.Rename(tmp, filepath.Join(c.o.dir, stateFile)); err != nil {
		return provider.Wrap(provider.ErrUnavailable, err)
	}
	return nil
}

// snapshotLocked is snapshot with m.mu held.
func (m *machine) snapshotLocked() *provider.Machine {
	out := m.info
	out.Labels = cloneLabels(m.info.Labels)
	return &out
}
