// Package cloudbox boots test boxes with the real cloud-init: the tier in
// which no one here wrote the code that reads the SDK's user-data.
//
// A box is a Debian bookworm image (EnsureImage: debootstrap, once per run,
// cached under CacheDir for every test package) mounted as an overlay in a
// new mount, PID, network, UTS and IPC namespace. Boot writes the user-data
// and meta-data into cloud-init's NoCloud seed directory
// (/var/lib/cloud/seed/nocloud), runs cloud-init's four boot stages as a
// real first boot does (init --local, init, modules --mode config, modules
// --mode final), then starts the box's own sshd (/usr/sbin/sshd -D, the
// configuration cloud-init left). The box's network is its namespace's
// loopback only: DialContext opens sockets inside that namespace, and Addr
// is a loopback address of the caller's namespace forwarding to the box's
// port 22. A box never reaches any network.
//
// The image is "baked": it has the readiness tools, the desktop tools and
// Chromium, so nothing is downloaded at boot; its apt sources are an
// offline repository holding ExtraPackage. Its shutdown command records
// requests in ShutdownLog instead of powering off.
//
// Everything needs root, util-linux (unshare's clone flags, mount, chroot
// via the host's /bin/sh) and iproute2; building the image also needs
// debootstrap and the Debian mirror. Require skips a test when something is
// missing, and fails it when CI=true.
package cloudbox

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

//go:embed init.sh
var initScript string

//go:embed boot.sh
var bootScript string

// ErrUnavailable is wrapped by errors saying the host cannot run boxes.
var ErrUnavailable = errors.New("cloudbox: unavailable")

const (
	pollInterval = 100 * time.Millisecond
	bootFile     = "/usr/lib/crabbox-testimage/boot"
	seedDir      = "/var/lib/cloud/seed/nocloud"
	// imageConfig is the per-box part of the image's cloud-init
	// configuration, what a cloud image sets for its platform: the
	// namespace's network is not cloud-init's to manage (it has only
	// loopback), the hostname resolves through /etc/hosts (there is no
	// DNS), the root file system is an overlay (nothing to resize), and
	// the minimal image has no locales package (update-locale).
	imageConfig = "network:\n  config: disabled\nmanage_etc_hosts: true\nresize_rootfs: false\nlocale: false\n"
)

// hostTools checks what booting needs on the host.
func hostTools() error {
	if err := platform(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: boxes need root (namespaces, mounts, chroot)", ErrUnavailable)
	}
	for _, tool := range []string{"mount", "chroot", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s not found (apt-get install -y util-linux iproute2)", ErrUnavailable, tool)
		}
	}
	return nil
}

// Available reports whether boxes can boot here now: root, the host tools
// and a built image (EnsureImage builds it; that needs the network).
func Available() error {
	if err := hostTools(); err != nil {
		return err
	}
	if !Built() {
		if _, err := exec.LookPath("debootstrap"); err != nil {
			return fmt.Errorf("%w: no image in %s and debootstrap not installed (apt-get install -y debootstrap)", ErrUnavailable, CacheDir())
		}
	}
	return nil
}

// Require returns the image's root, building it if needed. It skips t when
// boxes cannot boot here, and fails t instead when CI=true.
func Require(t testing.TB) string {
	t.Helper()
	fail := t.Skipf
	if os.Getenv("CI") == "true" {
		fail = t.Fatalf
	}
	if err := Available(); err != nil {
		fail("real cloud-init boxes: %v", err)
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	img, err := EnsureImage(ctx)
	if err != nil {
		fail("real cloud-init boxes: %v (build it with network access first: go run ./internal/testenv/cloudbox/mkimage)", err)
		return ""
	}
	return img
}

// Options say how a box boots. Image is required.
type Options struct {
	// Image is the image root (EnsureImage).
	Image string
	// Layers are read-only layers over Image, topmost first: the upper
	// directories of the boxes an image was made of (Box.Snapshot).
	Layers []string
	// Dir holds the box's state (its overlay upper directory, boot log);
	// "" makes a temporary one. Close removes it.
	Dir string
	// InstanceID is the meta-data's instance-id; "" derives one from the
	// directory. A new id makes cloud-init run its first boot again on an
	// image that already booted.
	InstanceID string
	// Hostname is the meta-data's local-hostname; "" means "cloudbox".
	Hostname string
}

// Box is one booted box. Its methods are safe for concurrent use.
type Box struct {
	image  string
	dir    string
	layers []string
	cmd    *exec.Cmd
	done   chan struct{}
	netns  *os.File
	ln     net.Listener

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// Boot boots a box from userData and meta-data made from o, and returns
// once its sshd accepts connections on port 22 (or ctx ends, or the box
// stops). On error nothing is left running.
func Boot(ctx context.Context, userData []byte, o Options) (_ *Box, err error) {
	if o.Image == "" {
		return nil, errors.New("cloudbox: Options.Image is required")
	}
	if err := hostTools(); err != nil {
		return nil, err
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "cbx-cloudbox-"); err != nil {
			return nil, err
		}
	}
	b := &Box{image: o.Image, dir: dir, layers: append([]string{}, o.Layers...), done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	defer func() {
		if err != nil {
			if log := b.Log(); log != "" {
				err = fmt.Errorf("%w\nboot log:\n%s", err, tail(log, 4000))
			}
			b.Close()
		}
	}()
	if err := b.prepare(userData, o); err != nil {
		return nil, fmt.Errorf("cloudbox: %w", err)
	}
	if err := b.start(); err != nil {
		return nil, fmt.Errorf("cloudbox: %w", err)
	}
	if err := b.waitSSH(ctx); err != nil {
		return nil, fmt.Errorf("cloudbox: %w", err)
	}
	if err := b.listen(); err != nil {
		return nil, fmt.Errorf("cloudbox: %w", err)
	}
	return b, nil
}

// prepare writes the seed, the per-box image configuration and the boot
// script into the box's upper layer.
func (b *Box) prepare(userData []byte, o Options) error {
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(b.dir, d), 0o755); err != nil {
			return err
		}
	}
	id := o.InstanceID
	if id == "" {
		id = "cloudbox-" + filepath.Base(b.dir)
	}
	host := o.Hostname
	if host == "" {
		host = "cloudbox"
	}
	files := map[string]string{
		seedDir + "/user-data":                            string(userData),
		seedDir + "/meta-data":                            "instance-id: " + id + "\nlocal-hostname: " + host + "\n",
		"/etc/cloud/cloud.cfg.d/91-crabbox-testimage.cfg": imageConfig,
		bootFile: bootScript,
	}
	for p, content := range files {
		full := filepath.Join(b.dir, "upper", p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// start runs init.sh as PID 1 of the box's new namespaces.
func (b *Box) start() error {
	lower := strings.Join(append(append([]string{}, b.layers...), b.image), ":")
	logf, err := os.Create(filepath.Join(b.dir, "boot.log"))
	if err != nil {
		return err
	}
	cmd := initCommand(lower, b.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting the box's namespaces: %w", err)
	}
	b.cmd = cmd
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(b.done)
	}()
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
	if err != nil {
		return err
	}
	b.netns = ns
	return nil
}

// waitSSH waits for the boot script's sshd to accept on port 22.
func (b *Box) waitSSH(ctx context.Context) error {
	for {
		if strings.Contains(b.Log(), "cloudbox: sshd started") {
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			c, err := b.DialContext(dctx, "tcp", "127.0.0.1:22")
			cancel()
			if err == nil {
				c.Close()
				return nil
			}
		}
		select {
		case <-b.done:
			return errors.New("the box stopped while booting")
		case <-ctx.Done():
			return fmt.Errorf("booting: %w", ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// DialContext connects to addr inside the box's network namespace (the
// box's own 127.0.0.1, say "127.0.0.1:2222").
func (b *Box) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return nil, errors.New("cloudbox: box closed")
	}
	var (
		c   net.Conn
		err error
	)
	ok := inNetns(b.netns, func() {
		// One address, no resolution: the socket is made on this
		// (namespace-switched) thread.
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
	})
	if !ok && err == nil {
		return nil, errors.New("cloudbox: cannot enter the box's network namespace")
	}
	return c, err
}

// listen starts the loopback forwarder behind Addr.
func (b *Box) listen() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	b.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.forward(c)
		}
	}()
	return nil
}

func (b *Box) forward(c net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	up, err := b.DialContext(ctx, "tcp", "127.0.0.1:22")
	cancel()
	if err != nil {
		c.Close()
		return
	}
	if !b.track(c, up) {
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	go pipe(up, c)
	go pipe(c, up)
	wg.Wait()
	b.untrack(c, up)
}

func (b *Box) track(cs ...net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		b.conns[c] = struct{}{}
	}
	return true
}

func (b *Box) untrack(cs ...net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(b.conns, c)
	}
}

// Addr is a loopback host:port of the caller's network namespace that
// forwards to the box's sshd (port 22).
func (b *Box) Addr() string {
	if b.ln == nil {
		return ""
	}
	return b.ln.Addr().String()
}

// Dir is the box's state directory; Upper its overlay upper directory
// (what the box changed on its image).
func (b *Box) Dir() string   { return b.dir }
func (b *Box) Upper() string { return filepath.Join(b.dir, "upper") }

// Layers are the box's read-only layers over the image, topmost first.
func (b *Box) Layers() []string { return append([]string{}, b.layers...) }

// Snapshot copies what the box changed on its image into dst (created) and
// returns the layers of an image made of the box, topmost first: pass them
// as Options.Layers to boot a box from it.
func (b *Box) Snapshot(ctx context.Context, dst string) ([]string, error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", b.Upper()+"/.", dst+"/").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cloudbox: snapshot: %v: %s", err, out)
	}
	return append([]string{dst}, b.layers...), nil
}

// Log returns the box's boot output so far (cloud-init's stages, sshd).
func (b *Box) Log() string {
	data, _ := os.ReadFile(filepath.Join(b.dir, "boot.log"))
	return string(data)
}

// Running reports whether the box runs (not stopped or closed).
func (b *Box) Running() bool {
	if b.cmd == nil {
		return false
	}
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

// Run runs the shell command cmd as root inside the box (its namespaces
// and root) and returns its combined output.
func (b *Box) Run(ctx context.Context, cmd string) (string, error) {
	if !b.Running() {
		return "", errors.New("cloudbox: box is not running")
	}
	c := exec.CommandContext(ctx, "nsenter", "--target", fmt.Sprint(b.cmd.Process.Pid),
		"--mount", "--pid", "--net", "--uts", "--ipc", "--root", "--wd",
		"/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root",
		"/bin/sh", "-c", "cd / && "+cmd)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	if err != nil {
		return out.String(), fmt.Errorf("cloudbox: %q: %w: %s", cmd, err, out.String())
	}
	return out.String(), nil
}

// Stop simulates the box's death: every process in it is killed, clients
// see their connections drop. Its state directory stays until Close.
func (b *Box) Stop() {
	if b.cmd != nil && b.cmd.Process != nil {
		_ = b.cmd.Process.Kill() // PID 1: the kernel kills the namespace
		<-b.done
	}
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
}

// Close stops the box and removes its state directory. Idempotent.
func (b *Box) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	if b.ln != nil {
		b.ln.Close()
	}
	b.mu.Unlock()
	b.Stop()
	if b.netns != nil {
		b.netns.Close()
	}
	return os.RemoveAll(b.dir)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
