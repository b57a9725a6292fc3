// Package desktoptest runs a desktop host on this machine, for tests of QA
// harnesses and desktop bake programs: a real OpenSSH sshd on 127.0.0.1
// for a fresh, temporary Unix user, used like any existing host
// (provider/sshhost), whose leases get a display (:99 unless another X
// server or another host, in this process or any other, has it; reserved
// until Close) on which the SDK starts Xvfb, Chromium, recordings and
// screenshots as on a desktop box.
//
// It needs root (to create the user and run sshd) and the tools of
// scripts/setup: openssh-server, Xvfb, xdotool, scrot, ffmpeg, x11vnc and
// Chromium; Start says which of the first it lacks (wrapping ErrMissing).
//
// The user is not root, so the host's crabbox state (what a real box keeps
// in /var/lib/crabbox and /tmp) lives below a temporary directory given to
// the sessions as CRABBOX_FS_ROOT, the display is given as CRABBOX_DISPLAY
// and the VNC port (Host.VNCPort, not 5900) as CRABBOX_VNC_PORT. Close
// stops everything Start started and removes the user and the
// directories.
//
//	h, err := desktoptest.Start()
//	defer h.Close()
//	drv, err := sshhost.New([]sshhost.Host{h.SSH})
package desktoptest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/testenv/hostuser"
	"github.com/crabbox/crabbox-go/internal/testenv/ports"
	"github.com/crabbox/crabbox-go/internal/testenv/xdisplay"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

// ErrMissing is wrapped by Start's error when a component it needs is not
// installed or the process is not root.
var ErrMissing = errors.New("desktoptest: missing component")

// Host is a running desktop host.
type Host struct {
	// SSH is the host for provider/sshhost: address, user, client key and
	// the host key to pin.
	SSH sshhost.Host
	// Display is the X display its leases use, e.g. ":99".
	Display string
	// VNCPort is the loopback port its desktop leases' VNC server listens
	// on (CRABBOX_VNC_PORT, which Lease.ForwardVNC reads): free when the
	// host started, so hosts and other VNC servers of this machine do not
	// share 5900.
	VNCPort int

	root    string         // CRABBOX_FS_ROOT of the host
	dir     string         // sshd's config, keys and log
	user    *hostuser.User // the temporary login user
	sshd    *exec.Cmd
	display *xdisplay.Reservation
}

func newKey() (ssh.Signer, []byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "crabbox-qa")
	if err != nil {
		return nil, nil, err
	}
	return s, pem.EncodeToMemory(blk), nil
}

// Start starts the host. Close it when done.
func Start() (_ *Host, err error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: the local desktop host needs root (it creates a temporary user and runs sshd)", ErrMissing)
	}
	for _, tool := range []string{"/usr/sbin/sshd", "useradd", "userdel", "usermod"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%w: the local desktop host needs %s (run scripts/setup): %v", ErrMissing, tool, err)
		}
	}
	d := &Host{}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	// :99 unless another X server or host has it; reserved until Close,
	// since the X server starts only with a lease's desktop.
	if d.display, err = xdisplay.Reserve(99, 999, 99); err != nil {
		return nil, err
	}
	d.Display = d.display.Display()
	if d.dir, err = os.MkdirTemp("", "crabbox-qa-sshd-"); err != nil {
		return nil, err
	}
	if d.root, err = os.MkdirTemp("", "crabbox-qa-host-"); err != nil {
		return nil, err
	}
	for _, p := range []string{d.dir, d.root} {
		if err := os.Chmod(p, 0o755); err != nil {
			return nil, err
		}
	}
	if d.user, err = hostuser.Fresh("crabqa"); err != nil {
		return nil, err
	}
	for _, p := range []string{"tmp", "work/crabbox", "var/lib/crabbox"} {
		if err := os.MkdirAll(filepath.Join(d.root, p), 0o755); err != nil {
			return nil, err
		}
	}
	if err := filepath.Walk(d.root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, d.user.UID, d.user.GID)
	}); err != nil {
		return nil, err
	}

	hostSigner, hostPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	clientSigner, _, err := newKey()
	if err != nil {
		return nil, err
	}
	hostKeyPath := filepath.Join(d.dir, "ssh_host_ed25519_key")
	if err := os.WriteFile(hostKeyPath, hostPEM, 0o600); err != nil {
		return nil, err
	}
	akPath := filepath.Join(d.dir, "authorized_keys")
	if err := os.WriteFile(akPath, ssh.MarshalAuthorizedKey(clientSigner.PublicKey()), 0o644); err != nil {
		return nil, err
	}
	// sshd's port and the box's VNC server's (a port of its own: the
	// host's loopback is every box's, so the default 5900 would be
	// shared), from below the ephemeral range, so that nothing else on
	// this host is given them before their servers bind them.
	addr, err := ports.Addr("127.0.0.1")
	if err != nil {
		return nil, err
	}
	if d.VNCPort, err = ports.Free("127.0.0.1"); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`SetEnv CRABBOX_DISPLAY=%s CRABBOX_FS_ROOT=%s CRABBOX_VNC_PORT=%d
ListenAddress %s
HostKey %s
PidFile %s
AuthorizedKeysFile %s
AllowUsers %s
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UseDNS no
PrintMotd no
`, d.Display, d.root, d.VNCPort, addr, hostKeyPath, filepath.Join(d.dir, "sshd.pid"), akPath, d.user.Name)
	cfgPath := filepath.Join(d.dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(d.dir, "sshd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d.sshd = exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", cfgPath)
	d.sshd.Stdout, d.sshd.Stderr = logf, logf
	d.sshd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.sshd.Start(); err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if i > 150 {
			log, _ := os.ReadFile(filepath.Join(d.dir, "sshd.log"))
			return nil, fmt.Errorf("sshd on %s did not start: %s", addr, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.SSH = sshhost.Host{Addr: addr, User: d.user.Name, Signer: clientSigner, HostKey: hostSigner.PublicKey()}
	return d, nil
}

// Close stops the display gracefully (so Xvfb removes its lock), then
// sshd and every process of the temporary user, removes the user and the
// directories.
func (d *Host) Close() error {
	if d.user != nil {
		uid := strconv.Itoa(d.user.UID)
		_ = exec.Command("pkill", "-TERM", "-u", uid).Run()
		for i := 0; i < 50 && exec.Command("pgrep", "-u", uid).Run() == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		_ = exec.Command("pkill", "-KILL", "-u", uid).Run()
	}
	if d.sshd != nil && d.sshd.Process != nil {
		_ = syscall.Kill(-d.sshd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = d.sshd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-d.sshd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	if d.user != nil {
		// Kills what still runs as the user and removes it with its home.
		_ = d.user.Release()
	}
	for _, p := range []string{d.root, d.dir} {
		if p != "" && strings.HasPrefix(p, os.TempDir()) {
			_ = os.RemoveAll(p)
		}
	}
	if d.display != nil {
		d.display.Release() // its X server is gone with the user
	}
	return nil
}
