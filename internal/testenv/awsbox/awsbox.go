// Package awsbox emulates the boxes behind moto's EC2 instances: for each
// instance the SDK dials, it starts a real OpenSSH sshd on loopback with the
// host key, login user and authorized keys from that instance's user-data
// (read back from moto with DescribeInstanceAttribute userData), after
// "booting" the box's file system the way cloud-init would: the user-data's
// files, work root and bootstrap marker under a per-box directory that
// sessions see as CRABBOX_FS_ROOT (sshd SetEnv).
//
// The SDK reaches boxes through Emulator.Dial (crabbox.WithDialer), which
// maps the public or private address moto handed out to the box's loopback
// sshd. Addresses moto hands out are never dialled: an address that is not
// an emulated running instance is refused without touching the network.
//
// A box booted from an image made of another emulated box starts from a
// copy of that box's file system (the image's SourceInstanceId), so what a
// bake installed under CRABBOX_FS_ROOT is there on the candidate.
//
// Commands run on the host as the box's login user (created if missing; the
// tests run as root). Kill simulates box death.
package awsbox

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

// EC2API is what the emulator asks moto.
type EC2API interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeInstanceAttribute(ctx context.Context, in *ec2.DescribeInstanceAttributeInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstanceAttributeOutput, error)
	DescribeImages(ctx context.Context, in *ec2.DescribeImagesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
}

// ErrRefused is returned by Dial for addresses without a running emulated
// box (booting, killed, terminated, or not an instance at all).
var ErrRefused = errors.New("awsbox: connection refused")

// Emulator runs the boxes. Its methods are safe for concurrent use.
type Emulator struct {
	t   testing.TB
	ec2 EC2API
	dir string

	mu     sync.Mutex
	boxes  map[string]*box // by instance id
	closed bool
}

type box struct {
	id   string
	root string

	mu     sync.Mutex
	srv    *sshd.Server
	killed bool
}

// New returns an emulator asking c (a client of the moto server the driver
// uses) about instances. Everything it starts stops when t ends. Missing
// sshd skips t (fails it when CI=true).
func New(t testing.TB, c EC2API) *Emulator {
	t.Helper()
	sshd.Require(t)
	e, err := newEmulator(t, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// Start returns an emulator outside of tests (the runbook example). Close
// it when done.
func Start(c EC2API) (*Emulator, error) {
	if err := sshd.Available(); err != nil {
		return nil, err
	}
	return newEmulator(&standaloneTB{}, c)
}

func newEmulator(t testing.TB, c EC2API) (*Emulator, error) {
	dir, err := os.MkdirTemp("", "cbx-awsbox-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	return &Emulator{t: t, ec2: c, dir: dir, boxes: map[string]*box{}}, nil
}

// Close stops every box and removes their file systems.
func (e *Emulator) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	for _, b := range e.boxes {
		b.mu.Lock()
		if b.srv != nil {
			b.srv.Stop()
		}
		b.killed = true
		b.mu.Unlock()
	}
	if st, ok := e.t.(*standaloneTB); ok {
		st.runCleanups()
	}
	os.RemoveAll(e.dir)
}

// Dial is a crabbox.DialFunc: it connects to the sshd of the emulated box
// whose moto address is addr (host:22). Loopback addresses are dialled as
// is; any other address that is not a running emulated instance fails with
// ErrRefused and is never dialled.
func (e *Emulator) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return d.DialContext(ctx, network, addr)
	}
	b, err := e.boxFor(ctx, host)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	var target string
	if !b.killed && b.srv != nil {
		target = b.srv.Addr
	}
	b.mu.Unlock()
	if target == "" {
		return nil, fmt.Errorf("%w: %s (instance %s is down)", ErrRefused, addr, b.id)
	}
	return d.DialContext(ctx, "tcp", target)
}

// boxFor finds the instance with address host and boots its box once.
func (e *Emulator) boxFor(ctx context.Context, host string) (*box, error) {
	in, err := e.instanceByAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	id := aws.ToString(in.InstanceId)
	e.mu.Lock()
	b, ok := e.boxes[id]
	if !ok {
		b = &box{id: id, root: filepath.Join(e.dir, id, "root")}
		e.boxes[id] = b
	}
	e.mu.Unlock()
	if in.State == nil || in.State.Name != types.InstanceStateNameRunning {
		b.mu.Lock()
		if b.srv != nil {
			b.srv.Stop() // stopped or terminated in moto: the box is gone
			b.killed = true
		}
		b.mu.Unlock()
		return nil, fmt.Errorf("%w: instance %s is %v", ErrRefused, id, in.State)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil || b.killed {
		return b, nil
	}
	if err := e.boot(ctx, b, in); err != nil {
		return nil, fmt.Errorf("awsbox: booting %s: %w", id, err)
	}
	return b, nil
}

func (e *Emulator) instanceByAddr(ctx context.Context, host string) (*types.Instance, error) {
	for _, f := range []string{"ip-address", "private-ip-address"} {
		out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
			{Name: aws.String(f), Values: []string{host}},
		}})
		if err != nil {
			return nil, fmt.Errorf("awsbox: looking up %s: %w", host, err)
		}
		var found *types.Instance
		for _, r := range out.Reservations {
			for i := range r.Instances {
				in := &r.Instances[i]
				// Prefer a live instance if moto reused an address.
				if found == nil || (in.State != nil && in.State.Name == types.InstanceStateNameRunning) {
					found = in
				}
			}
		}
		if found != nil {
			return found, nil
		}
	}
	return nil, fmt.Errorf("%w: %s is not an emulated instance (never dialled)", ErrRefused, host)
}

// boot does what cloud-init does on first boot, under b.root, and starts
// the box's sshd. Called with b.mu held.
func (e *Emulator) boot(ctx context.Context, b *box, in *types.Instance) error {
	attr, err := e.ec2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
		InstanceId: in.InstanceId, Attribute: types.InstanceAttributeNameUserData,
	})
	if err != nil {
		return err
	}
	if attr.UserData == nil || aws.ToString(attr.UserData.Value) == "" {
		return errors.New("instance has no user-data")
	}
	raw, err := base64.StdEncoding.DecodeString(aws.ToString(attr.UserData.Value))
	if err != nil {
		return fmt.Errorf("user-data: %w", err)
	}
	cfg, err := cloudinit.Parse(raw)
	if err != nil {
		return fmt.Errorf("user-data: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(cfg.HostKeyPEM)
	if err != nil {
		return fmt.Errorf("host key: %w", err)
	}
	uid, gid, err := ensureUser(cfg.User)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(b.root, 0o755); err != nil {
		return err
	}
	if src := e.imageSourceRoot(ctx, aws.ToString(in.ImageId)); src != "" {
		if out, err := exec.CommandContext(ctx, "cp", "-a", src+"/.", b.root+"/").CombinedOutput(); err != nil {
			return fmt.Errorf("copying the image's file system: %v: %s", err, out)
		}
		_ = os.Remove(filepath.Join(b.root, cloudinit.BootstrapMarker))
	}
	files, err := cloudinit.BootFiles(*cfg)
	if err != nil {
		return err
	}
	home := "/home/" + cfg.User
	for _, f := range files {
		if err := writeFile(b.root, f.Path, f.Content, f.Mode); err != nil {
			return err
		}
	}
	for _, d := range []string{cfg.WorkRoot, home} {
		if err := os.MkdirAll(filepath.Join(b.root, filepath.FromSlash(d)), 0o755); err != nil {
			return err
		}
	}
	if err := writeFile(b.root, cloudinit.BootstrapMarker, cloudinit.BootstrapMarkerContent(cfg.LeaseID), 0o644); err != nil {
		return err
	}
	// The box's user owns the box's whole file system: on a real box it
	// has sudo, here it runs unprivileged on the host, so a bake writing
	// under "$CRABBOX_FS_ROOT" (like the local cloud) must be allowed to.
	if err := chownR(b.root, uid, gid); err != nil {
		return err
	}
	keys := make([][]byte, 0, len(cfg.AuthorizedKeys))
	for _, k := range cfg.AuthorizedKeys {
		keys = append(keys, []byte(k))
	}
	srv, err := newSSHD(e.t, sshd.Options{
		User:           cfg.User,
		AuthorizedKeys: keys,
		HostKey:        &sshd.Key{Signer: signer, PEM: cfg.HostKeyPEM},
		// Sessions see the box's file system root, and tools the bake
		// installed there come first on PATH, as on the local cloud.
		// HOME is the box's own home, so files a bake leaves there go into
		// the image (and the host's home stays untouched).
		Extra: []string{"SetEnv CRABBOX_FS_ROOT=" + b.root +
			" HOME=" + filepath.Join(b.root, "home", cfg.User) +
			" PATH=" + b.root + "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	})
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	b.srv = srv
	return nil
}

// imageSourceRoot returns the file-system root of the emulated box the
// image was made from, if any.
func (e *Emulator) imageSourceRoot(ctx context.Context, imageID string) string {
	out, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{imageID}})
	if err != nil || len(out.Images) == 0 {
		return ""
	}
	src := aws.ToString(out.Images[0].SourceInstanceId)
	if src == "" {
		return ""
	}
	e.mu.Lock()
	sb := e.boxes[src]
	e.mu.Unlock()
	if sb == nil {
		return ""
	}
	if _, err := os.Stat(sb.root); err != nil {
		return ""
	}
	return sb.root
}

// Kill simulates the death of an instance's box: its sshd stops and new
// connections are refused (moto still lists the instance).
func (e *Emulator) Kill(instanceID string) error {
	e.mu.Lock()
	b := e.boxes[instanceID]
	e.mu.Unlock()
	if b == nil {
		return fmt.Errorf("awsbox: no box for %s", instanceID)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.killed = true
	if b.srv != nil {
		b.srv.Stop()
	}
	return nil
}

// Root returns the box's file-system root (CRABBOX_FS_ROOT), "" if the box
// never booted.
func (e *Emulator) Root(instanceID string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if b := e.boxes[instanceID]; b != nil {
		return b.root
	}
	return ""
}

var userMu sync.Mutex

// ensureUser creates the login user if the host lacks it (unlocked for key
// login, like the sshd harness's users).
func ensureUser(name string) (int, int, error) {
	userMu.Lock()
	defer userMu.Unlock()
	lookup := func() (int, int, error) {
		u, err := user.Lookup(name)
		if err != nil {
			return 0, 0, err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return uid, gid, nil
	}
	if uid, gid, err := lookup(); err == nil {
		return uid, gid, nil
	}
	out, err := exec.Command("useradd", "-m", "-s", "/bin/bash", name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "already exists") {
		return 0, 0, fmt.Errorf("useradd %s: %v: %s", name, err, out)
	}
	if out, err := exec.Command("usermod", "-p", "*", name).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("usermod %s: %v: %s", name, err, out)
	}
	return lookup()
}

func writeFile(root, p string, content []byte, mode os.FileMode) error {
	if mode == 0 {
		mode = 0o644
	}
	full := filepath.Join(root, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(full, content, mode.Perm()); err != nil {
		return err
	}
	return os.Chmod(full, mode)
}

func chownR(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// newSSHD prepares an sshd; the harness reports setup failures with
// t.Fatal, which standaloneTB turns into a panic recovered here.
func newSSHD(t testing.TB, o sshd.Options) (srv *sshd.Server, err error) {
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(tbFatal); ok {
				err = errors.New(string(f))
				return
			}
			panic(r)
		}
	}()
	return sshd.New(t, o), nil
}

type tbFatal string

// standaloneTB lets the sshd harness run outside tests: cleanups run at
// Close, fatal errors become errors.
type standaloneTB struct {
	testing.TB // nil: only the methods below are used by the harness

	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

func (s *standaloneTB) Helper()                   {}
func (s *standaloneTB) Name() string              { return "awsbox" }
func (s *standaloneTB) Logf(string, ...any)       {}
func (s *standaloneTB) Log(...any)                {}
func (s *standaloneTB) Failed() bool              { s.mu.Lock(); defer s.mu.Unlock(); return s.failed }
func (s *standaloneTB) Errorf(f string, a ...any) { s.mu.Lock(); s.failed = true; s.mu.Unlock() }
func (s *standaloneTB) Fatalf(f string, a ...any) { panic(tbFatal(fmt.Sprintf(f, a...))) }
func (s *standaloneTB) Fatal(a ...any)            { panic(tbFatal(fmt.Sprint(a...))) }
func (s *standaloneTB) Skipf(f string, a ...any)  { panic(tbFatal(fmt.Sprintf(f, a...))) }
func (s *standaloneTB) Skip(a ...any)             { panic(tbFatal(fmt.Sprint(a...))) }
func (s *standaloneTB) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

func (s *standaloneTB) runCleanups() {
	s.mu.Lock()
	fs := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
