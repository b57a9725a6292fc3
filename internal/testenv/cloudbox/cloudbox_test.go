package cloudbox_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/testenv/cloudbox"
)

// boot renders the lease's user-data and boots a real cloud-init box from
// it; the box is closed when t ends (its boot log logged if t failed).
func boot(t *testing.T, l cloudbox.Lease) *cloudbox.Box {
	t.Helper()
	img := cloudbox.Require(t)
	doc, err := cloudinit.Render(l.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	b, err := cloudbox.Boot(ctx, doc, cloudbox.Options{Image: img, InstanceID: "i-" + l.Config.LeaseID, Hostname: "cbx-" + l.Kind})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s box booted in %v", l.Kind, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("boot log:\n%s", b.Log())
			if out, err := b.Run(context.Background(), "tail -n 60 /var/log/cloud-init.log; cat /var/log/cloud-init-output.log"); err == nil {
				t.Logf("cloud-init logs:\n%s", out)
			}
		}
		b.Close()
	})
	return b
}

// dial connects as the lease user to the box's port (inside its network
// namespace) with the lease's host key pinned.
func dial(t *testing.T, b *cloudbox.Box, l cloudbox.Lease, port int, auth ...ssh.AuthMethod) (*ssh.Client, error) {
	t.Helper()
	if auth == nil {
		auth = []ssh.AuthMethod{ssh.PublicKeys(l.Client)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	conn, err := b.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User: l.Config.User, Auth: auth, HostKeyCallback: ssh.FixedHostKey(l.HostKey),
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

func run(t *testing.T, c *ssh.Client, cmd string) (string, error) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	return string(out), err
}

func TestRealCloudInitBoxes(t *testing.T) {
	cloudbox.Require(t)
	for _, kind := range cloudbox.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			l, err := cloudbox.NewLease(kind)
			if err != nil {
				t.Fatal(err)
			}
			checkBox(t, l, boot(t, l))
		})
	}
}

// checkBox asserts what every lease kind's box must be after its first
// boot by the real cloud-init.
func checkBox(t *testing.T, l cloudbox.Lease, b *cloudbox.Box) {
	ctx := context.Background()
	cfg, err := cloudinit.Normalize(l.Config)
	if err != nil {
		t.Fatal(err)
	}
	root := func(cmd string) string {
		t.Helper()
		out, err := b.Run(ctx, cmd)
		if err != nil {
			t.Errorf("in the box: %v", err)
		}
		return out
	}

	// cloud-init finished without errors.
	if out, err := b.Run(ctx, "cloud-init status --long"); err != nil || !strings.Contains(out, "status: done") {
		t.Errorf("cloud-init status: %v\n%s", err, out)
	}
	if out := root("cat /run/cloud-init/result.json"); !strings.Contains(out, `"errors": []`) {
		t.Errorf("cloud-init result has errors:\n%s", out)
	}

	// The lease user, exactly the lease's key, passwordless sudo.
	home := strings.TrimSpace(root("getent passwd " + cfg.User + " | cut -d: -f6"))
	if home == "" {
		t.Fatalf("user %s does not exist", cfg.User)
	}
	if got := strings.TrimSpace(root("cat " + home + "/.ssh/authorized_keys")); got != strings.Join(cfg.AuthorizedKeys, "\n") {
		t.Errorf("authorized_keys = %q, want exactly %q", got, cfg.AuthorizedKeys)
	}

	// The lease host key is the only host key.
	if got := strings.Fields(root("ls /etc/ssh/ | grep '^ssh_host_' | tr '\\n' ' '")); strings.Join(got, " ") != "ssh_host_ed25519_key ssh_host_ed25519_key.pub" {
		t.Errorf("host key files = %v, want only the lease's ed25519 pair", got)
	}
	if got := strings.Fields(root("cat /etc/ssh/ssh_host_ed25519_key.pub")); len(got) < 2 || got[0]+" "+got[1] != cfg.HostKeyPublic {
		t.Errorf("host public key = %v, want %s", got, cfg.HostKeyPublic)
	}
	if got := root("sshd -T | grep -iE '^(port|hostkey|passwordauthentication|kbdinteractiveauthentication|permitrootlogin) ' | sort"); got !=
		"hostkey /etc/ssh/ssh_host_ed25519_key\nkbdinteractiveauthentication no\npasswordauthentication no\npermitrootlogin no\nport 22\nport 2222\n" {
		t.Errorf("sshd effective configuration:\n%s", got)
	}

	// sshd listens on every configured port; the lease key logs in with
	// the host key pinned; passwords are refused.
	for _, port := range cfg.SSHPorts {
		c, err := dial(t, b, l, port)
		if err != nil {
			t.Errorf("ssh to port %d with the pinned host key: %v", port, err)
			continue
		}
		if out, err := run(t, c, "sudo -n id -u"); err != nil || strings.TrimSpace(out) != "0" {
			t.Errorf("port %d: passwordless sudo: %v: %s", port, err, out)
		}
		c.Close()
	}
	if c, err := dial(t, b, l, 22, ssh.Password("crabbox"), ssh.KeyboardInteractive(
		func(string, string, []string, []bool) ([]string, error) { return []string{"crabbox"}, nil })); err == nil {
		c.Close()
		t.Errorf("password login accepted")
	} else if !strings.Contains(err.Error(), "no supported methods remain") {
		t.Errorf("password login: unexpected error %v", err)
	}
	wrong, err := cloudbox.NewLease("base")
	if err != nil {
		t.Fatal(err)
	}
	if c, err := dial(t, b, l, 22, ssh.PublicKeys(wrong.Client)); err == nil {
		c.Close()
		t.Errorf("a key that is not the lease's logged in")
	}
	if _, err := dial(t, b, wrong, 22, ssh.PublicKeys(l.Client)); err == nil || !strings.Contains(err.Error(), "host key mismatch") {
		t.Errorf("another host key pinned: err = %v, want a host key mismatch", err)
	}

	c, err := dial(t, b, l, 22)
	if err != nil {
		t.Fatalf("ssh: %v", err)
	}
	defer c.Close()
	// The work root, the ready marker of this lease, the ready command.
	if out, err := run(t, c, "stat -c '%U %F' "+cfg.WorkRoot); err != nil || strings.TrimSpace(out) != cfg.User+" directory" {
		t.Errorf("work root: %v: %s", err, out)
	}
	if out, err := run(t, c, "cat "+cloudinit.BootstrapMarker); err != nil || out != string(cloudinit.BootstrapMarkerContent(cfg.LeaseID)) {
		t.Errorf("bootstrap marker = %q (%v), want %q", out, err, cloudinit.BootstrapMarkerContent(cfg.LeaseID))
	}
	if out, err := run(t, c, cloudinit.ReadyShellCommand); err != nil || strings.TrimSpace(out) != "ready" {
		t.Errorf("ready command: %v: %s", err, out)
	}

	// The TTL shutdown was scheduled (recorded by the image's shutdown).
	if out := root("cat " + cloudbox.ShutdownLog); out != "-P +90 crabbox lease TTL reached\n" {
		t.Errorf("scheduled shutdown = %q", out)
	}

	// Kind-specific results.
	bootstrap := root("stat -c '%a %U' " + cloudinit.DesktopBootstrapFile + " 2>&1 || true")
	switch {
	case cfg.Desktop || cfg.Browser:
		if strings.TrimSpace(bootstrap) != "755 root" {
			t.Errorf("desktop bootstrap: %q", bootstrap)
		}
	default:
		if !strings.Contains(bootstrap, "No such file") {
			t.Errorf("desktop bootstrap installed on a %s box: %q", l.Kind, bootstrap)
		}
	}
	if cfg.Desktop {
		if out, err := run(t, c, "DISPLAY="+cloudinit.Display+" xdotool getdisplaygeometry"); err != nil || strings.TrimSpace(out) != "1280 800" {
			t.Errorf("display: %v: %s", err, out)
		}
	}
	if cfg.Browser {
		if out, err := run(t, c, ". "+cloudinit.BrowserEnvFile+" && \"$BROWSER\" --version"); err != nil || !strings.Contains(out, "Chromium") {
			t.Errorf("browser: %v: %s", err, out)
		}
	}
	for _, p := range cfg.Packages {
		if out := root("dpkg-query -W -f '${Status}' " + p); out != "install ok installed" {
			t.Errorf("package %s: %q", p, out)
		}
	}
	for _, f := range cfg.Files {
		if out, err := run(t, c, "cat "+f.Path); err != nil || !bytes.Equal([]byte(out), f.Content) {
			t.Errorf("file %s = %q (%v), want %q", f.Path, out, err, f.Content)
		}
		if out := root("stat -c '%a %U:%G' " + f.Path); strings.TrimSpace(out) != fmt.Sprintf("%o root:root", f.Mode.Perm()) {
			t.Errorf("file %s: %q", f.Path, out)
		}
	}
}

// TestBoxIsolated: a box has only its own loopback, and its processes are
// in their own PID namespace.
func TestBoxIsolated(t *testing.T) {
	l, err := cloudbox.NewLease("base")
	if err != nil {
		t.Fatal(err)
	}
	b := boot(t, l)
	ctx := context.Background()
	if out, err := b.Run(ctx, "ip -o link | cut -d: -f2 | tr -d ' \\n'"); err != nil || out != "lo" {
		t.Errorf("box links: %q (%v), want only lo", out, err)
	}
	if out, err := b.Run(ctx, "cat /proc/1/cmdline | tr '\\0' ' '"); err != nil || !strings.Contains(out, "crabbox-testimage/boot") {
		t.Errorf("PID 1 of the box is %q (%v), want its boot script", out, err)
	}
	// Addr forwards from the caller's loopback to the box's sshd.
	conn, err := net.DialTimeout("tcp", b.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 8)
	if _, err := conn.Read(buf); err != nil || !strings.HasPrefix(string(buf), "SSH-2.0-") {
		t.Errorf("Addr %s: %q, %v", b.Addr(), buf, err)
	}
	b.Stop()
	if b.Running() {
		t.Error("box runs after Stop")
	}
}
