// Package crabboxtest is an embedded local cloud for tests, demos and the
// driver conformance suite: a provider.Driver (with provider.Images,
// provider.Channels, provider.Protector and provider.Deprecator) whose
// machines are in-process SSH servers on 127.0.0.1.
//
// A machine boots from the cloud-init user-data crabbox renders
// (internal/cloudinit): its file system is a directory on the host,
// <dir>/machines/<id>/root (provider.Machine.FSRoot), populated from the
// image it boots and then from the user-data's files, work root, home and
// bootstrap marker. Its SSH server presents the host key from the user-data
// and accepts only the user-data's user with its authorized keys. Commands
// run on the host with /bin/sh -c, in FSRoot+WorkRoot, with
// CRABBOX_FS_ROOT=FSRoot, HOME=FSRoot/home/<user> and
// PATH=FSRoot/usr/local/bin:$PATH; like OpenSSH, a connection allows at most
// 10 concurrent sessions.
//
// Commands run as the test process's user on the host file system: a
// command that writes to an absolute path outside "$CRABBOX_FS_ROOT" writes
// to the host. Only run commands meant for the local cloud.
//
// Images copy a machine's file-system tree; channels are kept in memory.
// Hooks (FailNextImage, SetCapacity, KillMachine, ...) inject faults and
// inspect state. Everything a Cloud started ends with Close.
package crabboxtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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
	ms := make([]*machine, 0, len(c.machines))
	for _, m := range c.machines {
		ms = append(ms, m)
	}
	c.mu.Unlock()
	for _, m := range ms {
		m.stop()
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

// MachineTypes maps a class to its ordered fallback list, e.g. small ->
// [local-small-a local-small-b] for amd64 and [local-small-arm64-a
// local-small-arm64-b] for arm64.
func (c *Cloud) MachineTypes(class, arch string) ([]string, error) {
	if !provider.ValidClass(class) {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: unknown class %q (known: %s)", class, strings.Join(provider.Classes(), ", "))
	}
	if !provider.ValidArch(arch) {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: unknown architecture %q", arch)
	}
	return machineTypes(class, arch), nil
}

func machineTypes(class, arch string) []string {
	p := "local-" + class + "-"
	if arch == provider.ArchARM64 {
		p += "arm64-"
	}
	return []string{p + "a", p + "b"}
}

func knownType(typ string) bool {
	for _, class := range provider.Classes() {
		for _, arch := range provider.Arches() {
			if slices.Contains(machineTypes(class, arch), typ) {
				return true
			}
		}
	}
	return false
}

// BaseImage returns BaseImageID for amd64 and arm64.
func (c *Cloud) BaseImage(ctx context.Context, arch string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if !provider.ValidArch(arch) {
		return "", provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: unknown architecture %q", arch)
	}
	return BaseImageID, nil
}

// FailNextImage makes the next CreateImage produce an image that ends in
// the failed state with reason (after the usual pending polls). Calls
// queue up.
func (c *Cloud) FailNextImage(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if reason == "" {
		reason = "image creation failed (injected by crabboxtest)"
	}
	c.failNext = append(c.failNext, reason)
}

// SetCapacity sets whether machineType has capacity: without it,
// CreateMachine of that type fails with an error wrapping
// provider.ErrCapacity.
func (c *Cloud) SetCapacity(machineType string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		delete(c.noCap, machineType)
	} else {
		c.noCap[machineType] = true
	}
}

// MachineCount returns the number of machines that exist (not deleted).
func (c *Cloud) MachineCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.machines)
}

// ImageCount returns the number of images that exist, not counting the
// base image.
func (c *Cloud) ImageCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, im := range c.images {
		if !im.base {
			n++
		}
	}
	return n
}

// MachineDir returns the machine's file-system root (Machine.FSRoot).
func (c *Cloud) MachineDir(id string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.machines[id]
	if !ok {
		return "", provider.Errorf(provider.ErrNotFound, "crabboxtest: machine %q not found", id)
	}
	return m.root, nil
}

// KillMachine emulates the death of a box: its SSH listener and every
// connection close and its running commands are killed. The machine stays
// (stopped) until deleted.
func (c *Cloud) KillMachine(id string) error {
	c.mu.Lock()
	m, ok := c.machines[id]
	c.mu.Unlock()
	if !ok {
		return provider.Errorf(provider.ErrNotFound, "crabboxtest: machine %q not found", id)
	}
	m.stop()
	return nil
}

func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func cloneLabels(l map[string]string) map[string]string {
	out := make(map[string]string, len(l))
	for k, v := range l {
		out[k] = v
	}
	return out
}

func matchLabels(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}
