// Machines: MachineTypes, CreateMachine, boot, power, GetMachine, ListMachines, DeleteMachine; capacity and kill hooks.

package crabboxtest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/testenv/ports"
	"github.com/crabbox/crabbox-go/provider"
)

// machine is one emulated box.
type machine struct {
	c     *Cloud
	id    string
	token string
	dir   string // <cloud>/machines/<id>
	root  string // dir/root: the box's file system
	cfg   *cloudinit.Config

	sshCfg *ssh.ServerConfig
	gate   *gate    // network partition
	env    []string // base environment of commands

	mu        sync.Mutex // guards everything below
	info      provider.Machine
	stopped   bool
	listener  net.Listener
	conns     map[net.Conn]struct{}
	pgids     map[int]uint64 // process groups started on the box: their leader's start time
	procs     map[*proc]struct{}
	timers    []*time.Timer
	xvfb      *exec.Cmd      // the desktop's display server, if any
	wg        sync.WaitGroup // goroutines serving the box
	terminate bool           // delete on its own shutdown
}

// snapshot returns a copy of the machine's provider view.
func (m *machine) snapshot() *provider.Machine {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.info
	out.Labels = cloneLabels(m.info.Labels)
	return &out
}

// CreateMachine boots a machine from req.Image ("" means the base image):
// it parses req.UserData (an error wrapping ErrInvalidArgument when it is
// not crabbox user-data), copies the image's tree to the machine's root,
// writes the user-data's files, work root, home and bootstrap marker, and
// starts the SSH server (after the boot delay, if any). A request with the
// Token of a live machine returns that machine.
func (c *Cloud) CreateMachine(ctx context.Context, req provider.CreateMachineRequest) (*provider.Machine, error) {
	fault, lost := c.takeFault("CreateMachine")
	if fault != nil && !lost {
		return nil, fault
	}
	m, err := c.createMachine(ctx, req)
	if lost && err == nil {
		return nil, fault
	}
	return m, err
}

func (c *Cloud) createMachine(ctx context.Context, req provider.CreateMachineRequest) (*provider.Machine, error) {
	spec, existing, err := c.machineSpec(ctx, req)
	if err != nil {
		return nil, err
	}
	if existing != nil {
		return existing.snapshot(), nil
	}
	if err := spec.check(); err != nil {
		return nil, err
	}
	m, err := c.newMachine(req, spec)
	if err != nil {
		return nil, err
	}
	if err := m.bootFS(ctx, spec.imgRoot); err != nil {
		_ = os.RemoveAll(m.dir)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, provider.Errorf(provider.ErrUnavailable, "crabboxtest: booting machine %s: %v", m.id, err)
	}
	winner, err := c.register(m)
	if err != nil {
		return nil, err
	}
	if winner != m {
		return winner.snapshot(), nil
	}
	return m.powerOn(ctx, spec.bootDelay)
}

// machineSpec is what CreateMachine reads from the cloud before it boots
// anything: the machine type and image it resolved, and the boot delay.
type machineSpec struct {
	typ       string
	noCap     bool // typ has no capacity (SetCapacity)
	imageID   string
	imgRoot   string // "" when the image does not exist
	imgState  string
	imgReason string
	bootDelay time.Duration
}

// machineSpec resolves req's type and image under c.mu; existing is the
// live machine with req.Token, if any.
func (c *Cloud) machineSpec(ctx context.Context, req provider.CreateMachineRequest) (spec machineSpec, existing *machine, err error) {
	if err := c.begin(ctx); err != nil {
		return machineSpec{}, nil, err
	}
	defer c.mu.Unlock()
	if req.Token != "" {
		for _, m := range c.machines {
			if m.token == req.Token {
				return machineSpec{}, m, nil
			}
		}
	}
	spec.typ = req.Type
	if spec.typ == "" {
		spec.typ = machineTypes(provider.ClassSmall, provider.DefaultArch)[0]
	}
	spec.noCap = c.noCap[spec.typ]
	spec.imageID = req.Image
	if spec.imageID == "" {
		spec.imageID = BaseImageID
	}
	if im, ok := c.images[spec.imageID]; ok {
		spec.imgRoot, spec.imgState, spec.imgReason = im.root, string(im.img.State), im.img.StateReason
	}
	spec.bootDelay = c.o.bootDelay
	return spec, nil, nil
}

// check refuses an unknown type, a type without capacity and an image that
// is missing, pending or failed.
func (s machineSpec) check() error {
	switch {
	case !knownType(s.typ):
		return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: unknown machine type %q", s.typ)
	case s.noCap:
		return provider.Errorf(provider.ErrCapacity, "crabboxtest: no capacity for machine type %q", s.typ)
	case s.imgRoot == "":
		return provider.Errorf(provider.ErrNotFound, "crabboxtest: image %q not found", s.imageID)
	case s.imgState == string(provider.ImagePending):
		return provider.Errorf(provider.ErrConflict, "crabboxtest: image %q is still pending", s.imageID)
	case s.imgState == string(provider.ImageFailed):
		return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: image %q failed: %s", s.imageID, s.imgReason)
	}
	return nil
}

// newMachine parses req.UserData and returns the pending machine it
// describes: its SSH server configuration and base environment are set, its
// file system is not written yet.
func (c *Cloud) newMachine(req provider.CreateMachineRequest, spec machineSpec) (*machine, error) {
	cfg, err := cloudinit.Parse(req.UserData)
	if err != nil {
		return nil, err
	}
	id := newID("m-")
	dir := filepath.Join(c.o.dir, "machines", id)
	sshCfg, err := sshServerConfig(cfg, filepath.Join(dir, "root", "home", cfg.User, ".ssh", "authorized_keys"))
	if err != nil {
		return nil, err
	}
	m := &machine{
		c:      c,
		id:     id,
		token:  req.Token,
		dir:    dir,
		cfg:    cfg,
		sshCfg: sshCfg,
		conns:  map[net.Conn]struct{}{},
		gate:   newGate(),
		pgids:  map[int]uint64{},
		procs:  map[*proc]struct{}{},
		info: provider.Machine{
			ID:      id,
			Name:    machineName(req.Name, id),
			Type:    spec.typ,
			Image:   spec.imageID,
			State:   provider.MachinePending,
			Labels:  cloneLabels(req.Labels),
			Created: time.Now().UTC(),
		},
		terminate: req.TerminateOnShutdown,
	}
	m.root = filepath.Join(m.dir, "root")
	m.env = boxEnv(m.root, cfg.User)
	return m, nil
}

// sshServerConfig is the box's SSH server: the user-data's host key, and
// public-key authentication of the user-data's user with the keys in the
// box's authorized_keys file (the user-data's keys, written at boot), which,
// as OpenSSH does, it reads at every login: a key removed from the file (an
// image's preparation removes them all) no longer logs in.
func sshServerConfig(cfg *cloudinit.Config, authorizedKeys string) (*ssh.ServerConfig, error) {
	signer, err := ssh.ParsePrivateKey(cfg.HostKeyPEM)
	if err != nil {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: host key: %v", err)
	}
	for _, line := range cfg.AuthorizedKeys {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
			return nil, provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: authorized key: %v", err)
		}
	}
	user := cfg.User
	sshCfg := &ssh.ServerConfig{
		PublicKeyCallback: func(conn ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if conn.User() == user && authorizedIn(authorizedKeys, key) {
				return &ssh.Permissions{}, nil
			}
			return nil, errors.New("public key not authorized")
		},
		ServerVersion: "SSH-2.0-OpenSSH_9.6 crabboxtest",
	}
	sshCfg.AddHostKey(signer)
	return sshCfg, nil
}

// authorizedIn reports whether the authorized_keys file at path lists key.
// A missing or unreadable file authorizes nothing.
func authorizedIn(path string, key ssh.PublicKey) bool {
	rest, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	want := key.Marshal()
	for len(rest) > 0 {
		k, _, _, r, err := ssh.ParseAuthorizedKey(rest)
		if err != nil {
			return false
		}
		if bytes.Equal(k.Marshal(), want) {
			return true
		}
		rest = r
	}
	return false
}

// boxEnv is the base environment of the commands of user's box rooted at
// root: the host's PATH behind the box's /usr/local/bin, and a VNC port of
// its own.
func boxEnv(root, user string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	home := filepath.Join(root, "home", user)
	env := []string{
		"HOME=" + home,
		"USER=" + user,
		"LOGNAME=" + user,
		"SHELL=/bin/sh",
		"LANG=C.UTF-8",
		"CRABBOX_FS_ROOT=" + root,
		"PATH=" + filepath.Join(root, "usr", "local", "bin") + ":" + path,
	}
	// Every box shares this host's loopback, so the default VNC port
	// (5900) would be every desktop box's, and the port of whatever else
	// listens there: a box's own, free when it boots.
	// (From below the ephemeral range: no ":0" listener or client socket
	// of this host can be given it before a VNC server binds it.)
	if port, err := ports.Free("127.0.0.1"); err == nil {
		env = append(env, "CRABBOX_VNC_PORT="+strconv.Itoa(port))
	}
	return env
}

// register adds the booted m to the cloud and returns it, or returns the
// machine of a concurrent create with the same token that won (or an error
// if the cloud closed); m's directory is removed when m is not registered.
func (c *Cloud) register(m *machine) (*machine, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = os.RemoveAll(m.dir)
		return nil, errClosed()
	}
	if m.token != "" {
		for _, other := range c.machines {
			if other.token == m.token { // a concurrent create with the same token won
				c.mu.Unlock()
				_ = os.RemoveAll(m.dir)
				return other, nil
			}
		}
	}
	c.machines[m.id] = m
	c.mu.Unlock()
	return m, nil
}

// powerOn starts the registered machine's display (desktop boxes) and SSH
// (now or after bootDelay) and schedules its own shutdown. A failure
// returns the machine with the error: it is registered and the caller
// deletes it.
func (m *machine) powerOn(ctx context.Context, bootDelay time.Duration) (*provider.Machine, error) {
	if m.cfg.Desktop {
		display, err := m.startDisplay(ctx)
		if err != nil {
			return m.snapshot(), provider.Errorf(provider.ErrUnavailable, "crabboxtest: machine %s: starting Xvfb: %v", m.id, err)
		}
		if display != "" {
			m.env = append(m.env, "DISPLAY="+display, "CRABBOX_DISPLAY="+display)
		}
	}
	if err := m.bootSSH(bootDelay); err != nil {
		return m.snapshot(), err
	}
	if d := m.cfg.ShutdownAfter; d > 0 {
		m.mu.Lock()
		if !m.stopped {
			m.timers = append(m.timers, time.AfterFunc(d, m.powerOff))
		}
		m.mu.Unlock()
	}
	return m.snapshot(), nil
}

// bootSSH starts SSH now, or, with a boot delay, reserves its address and
// starts it after the delay.
func (m *machine) bootSSH(bootDelay time.Duration) error {
	if bootDelay == 0 {
		if err := m.startSSH("127.0.0.1:0"); err != nil {
			return provider.Errorf(provider.ErrUnavailable, "crabboxtest: machine %s: starting SSH: %v", m.id, err)
		}
		return nil
	}
	// Reserve an address now so SSHAddr is known; it refuses
	// connections until the listener starts (a port from below the
	// ephemeral range, which nothing else of this host is given
	// meanwhile).
	addr, err := ports.Addr("127.0.0.1")
	if err != nil {
		return provider.Errorf(provider.ErrUnavailable, "crabboxtest: machine %s: %v", m.id, err)
	}
	m.mu.Lock()
	m.info.SSHAddr = addr
	m.timers = append(m.timers, time.AfterFunc(bootDelay, func() { _ = m.startSSH(addr) }))
	m.mu.Unlock()
	return nil
}

// bootFS does what cloud-init does on first boot, under m.root.
func (m *machine) bootFS(ctx context.Context, imgRoot string) error {
	if err := os.MkdirAll(m.root, 0o755); err != nil {
		return err
	}
	if _, err := copyTree(ctx, imgRoot, m.root); err != nil {
		return err
	}
	files, err := cloudinit.BootFiles(*m.cfg)
	if err != nil {
		return err
	}
	cfg := m.cfg
	home := filepath.Join("/home", cfg.User)
	files = append(files,
		cloudinit.File{Path: cloudinit.HostKeyFile, Content: cfg.HostKeyPEM, Mode: 0o600},
		cloudinit.File{Path: cloudinit.HostKeyFile + ".pub", Content: []byte(cfg.HostKeyPublic + "\n"), Mode: 0o644},
		cloudinit.File{Path: home + "/.ssh/authorized_keys", Content: []byte(strings.Join(cfg.AuthorizedKeys, "\n") + "\n"), Mode: 0o600},
	)
	for _, f := range files {
		if err := writeFile(m.root, f.Path, f.Content, f.Mode); err != nil {
			return err
		}
	}
	for _, d := range []string{cfg.WorkRoot, home} {
		if err := os.MkdirAll(filepath.Join(m.root, filepath.FromSlash(d)), 0o755); err != nil {
			return err
		}
	}
	return writeFile(m.root, cloudinit.BootstrapMarker, cloudinit.BootstrapMarkerContent(cfg.LeaseID), 0o644)
}

// startSSH starts the SSH listener on addr (any free loopback port if addr
// is taken) and marks the machine running.
func (m *machine) startSSH(addr string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil && addr != "127.0.0.1:0" {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return err
	}
	m.listener = l
	m.info.SSHAddr = l.Addr().String()
	m.info.State = provider.MachineRunning
	m.wg.Add(1)
	go m.acceptLoop(l)
	return nil
}

// powerOff is the box's own scheduled shutdown (TTL).
func (m *machine) powerOff() {
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return
	}
	m.info.State = provider.MachineStopped
	terminate := m.terminate
	m.mu.Unlock()
	m.stop()
	if terminate {
		_ = m.c.DeleteMachine(context.Background(), m.id)
	}
}

// stop closes the listener and every connection, kills every process
// group the box started, and waits for the goroutines serving the box.
func (m *machine) stop() {
	m.mu.Lock()
	m.stopped = true
	if m.info.State == provider.MachineRunning || m.info.State == provider.MachinePending {
		m.info.State = provider.MachineStopped
	}
	for _, t := range m.timers {
		t.Stop()
	}
	m.stopDisplay()
	if m.listener != nil {
		_ = m.listener.Close()
	}
	for nc := range m.conns {
		_ = nc.Close()
	}
	for p := range m.procs {
		p.kill()
	}
	for _, pgid := range boxGroups(m.pgids, m.root) {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// GetMachine returns the machine, or an error wrapping ErrNotFound.
func (c *Cloud) GetMachine(ctx context.Context, id string) (*provider.Machine, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	m, ok := c.machines[id]
	c.mu.Unlock()
	if !ok {
		return nil, provider.Errorf(provider.ErrNotFound, "crabboxtest: machine %q not found", id)
	}
	return m.snapshot(), nil
}

// ListMachines returns the machines having all the given labels, oldest
// first.
func (c *Cloud) ListMachines(ctx context.Context, labels map[string]string) ([]*provider.Machine, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	ms := make([]*machine, 0, len(c.machines))
	for _, m := range c.machines {
		ms = append(ms, m)
	}
	c.mu.Unlock()
	var out []*provider.Machine
	for _, m := range ms {
		s := m.snapshot()
		if matchLabels(s.Labels, labels) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// DeleteMachine stops the machine and removes its directory. Deleting a
// machine that does not exist returns nil.
func (c *Cloud) DeleteMachine(ctx context.Context, id string) error {
	if err := c.begin(ctx); err != nil {
		return err
	}
	m, ok := c.machines[id]
	delete(c.machines, id)
	c.mu.Unlock()
	if !ok {
		return nil
	}
	m.stop()
	m.mu.Lock()
	m.info.State = provider.MachineTerminated
	m.mu.Unlock()
	if err := os.RemoveAll(m.dir); err != nil {
		return provider.Errorf(provider.ErrUnavailable, "crabboxtest: removing machine %s: %v", id, err)
	}
	return nil
}

// UpdateMachineLabels merges labels into the machine's labels.
func (c *Cloud) UpdateMachineLabels(ctx context.Context, id string, labels map[string]string) error {
	if err := c.begin(ctx); err != nil {
		return err
	}
	m, ok := c.machines[id]
	c.mu.Unlock()
	if !ok {
		return provider.Errorf(provider.ErrNotFound, "crabboxtest: machine %q not found", id)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.info.Labels == nil {
		m.info.Labels = map[string]string{}
	}
	for k, v := range labels {
		if v == "" {
			delete(m.info.Labels, k)
			continue
		}
		m.info.Labels[k] = v
	}
	return nil
}

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

// MachineDir returns the host directory the machine's file system is in
// (what its sessions see as CRABBOX_FS_ROOT). It is this cloud's side of
// the emulation: the driver contract never carries it.
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

// machineName is the name a machine gets: the request's, as a label value,
// or its id when nothing of it is left.
func machineName(name, id string) string {
	if s := provider.SanitizeLabelValue(name); s != "" {
		return s
	}
	return id
}
