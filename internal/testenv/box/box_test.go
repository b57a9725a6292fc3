// Tests for booting a box from user-data: login over real sshd, the boot
// files, booting from another box's root, and what Close leaves behind.
package box_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/testenv/box"
	"github.com/crabbox/crabbox-go/internal/testenv/hostuser"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

type keys struct{ client, host *sshd.Key }

// render returns user-data for user with fresh keys and an extra file.
func render(t *testing.T, user, lease string) ([]byte, keys) {
	t.Helper()
	k := keys{sshd.MustKey(t), sshd.MustKey(t)}
	ud, err := cloudinit.Render(cloudinit.Config{
		LeaseID: lease, User: user,
		AuthorizedKeys: []string{strings.TrimSpace(string(k.client.AuthorizedKey()))},
		HostKeyPEM:     k.host.PEM,
		Files:          []cloudinit.File{{Path: "/etc/crabbox/extra", Content: []byte("extra\n"), Mode: 0o600}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return ud, k
}

func login(t *testing.T, b *box.Box, k keys) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", b.Addr(), &ssh.ClientConfig{
		User: b.User(), Auth: []ssh.AuthMethod{ssh.PublicKeys(k.client.Signer)},
		HostKeyCallback: ssh.FixedHostKey(k.host.PublicKey()), Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatalf("ssh %s@%s with the user-data's keys: %v", b.User(), b.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func run(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var stderr strings.Builder
	s.Stderr = &stderr
	out, err := s.Output(cmd)
	if err != nil {
		t.Fatalf("%s: %v (stderr %q)", cmd, err, stderr.String())
	}
	return string(out)
}

// tempDir is a directory the box's user can traverse (t.TempDir is 0700).
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cbx-box-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func owner(t *testing.T, p string) uint32 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}

func uniqueUser(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("cbxb%d", time.Now().UnixNano()%1e8)
	if hostuser.Exists(name) {
		t.Skipf("user %s exists", name)
	}
	return name
}

func TestBootLoginFilesAndClose(t *testing.T) {
	sshd.Require(t)
	ctx := context.Background()
	user := uniqueUser(t)
	ud, k := render(t, user, "cbx_0123456789ab")
	root := filepath.Join(tempDir(t), "root")
	b, err := box.Boot(ctx, ud, box.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if b.Root() != root || b.User() != user || b.LeaseID() != "cbx_0123456789ab" || !b.Running() {
		t.Fatalf("box = root %q user %q lease %q running %v", b.Root(), b.User(), b.LeaseID(), b.Running())
	}
	if !hostuser.Exists(user) {
		t.Fatalf("user %s was not created", user)
	}

	c := login(t, b, k)
	got := run(t, c, `whoami; echo "$CRABBOX_FS_ROOT"; echo "$HOME"; echo "$PATH"; cat "$CRABBOX_FS_ROOT/etc/crabbox/extra"; `+cloudinit.ReadyShellCommand)
	want := user + "\n" + root + "\n" + root + "/home/" + user + "\n" + root + "/usr/local/bin:"
	if !strings.HasPrefix(got, want) || !strings.Contains(got, "\nextra\n") || !strings.HasSuffix(got, "ready\n") {
		t.Fatalf("session = %q, want prefix %q, the extra file and ready", got, want)
	}
	fi, err := os.Stat(filepath.Join(root, "etc/crabbox/extra"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("extra file: %v %v", fi, err)
	}
	marker, err := os.ReadFile(filepath.Join(root, cloudinit.BootstrapMarker))
	if err != nil || string(marker) != "cbx_0123456789ab\n" {
		t.Fatalf("marker = %q, %v", marker, err)
	}
	for _, d := range []string{cloudinit.DefaultWorkRoot, "/home/" + user} {
		if fi, err := os.Stat(filepath.Join(root, d)); err != nil || !fi.IsDir() {
			t.Fatalf("%s: %v", d, err)
		}
	}
	// The user owns the whole file system, so a bake can write anywhere.
	run(t, c, `echo baked > "$CRABBOX_FS_ROOT/etc/baked" && echo n > "$HOME/notes"`)

	// A process left running on the box dies with it.
	run(t, c, `nohup sleep 300 >/dev/null 2>&1 &`)
	addr := b.Addr()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if b.Running() {
		t.Fatal("sshd runs after Close")
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Close", addr)
	}
	if hostuser.Exists(user) {
		t.Fatalf("user %s still exists after Close", user)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/baked")); err != nil {
		t.Fatalf("the root is the caller's and stays: %v", err)
	}
}

func TestBootFromAnotherBoxAndSharedUser(t *testing.T) {
	sshd.Require(t)
	ctx := context.Background()
	user := uniqueUser(t)
	dir := tempDir(t)
	ud1, k1 := render(t, user, "cbx_aaaaaaaaaaaa")
	one, err := box.Boot(ctx, ud1, box.Options{Root: filepath.Join(dir, "one")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = one.Close() })
	run(t, login(t, one, k1), `echo baked > "$HOME/notes"`)
	image := filepath.Join(dir, "image")
	if err := box.CopyRoot(ctx, one.Root(), image); err != nil {
		t.Fatal(err)
	}

	ud2, k2 := render(t, user, "cbx_bbbbbbbbbbbb")
	two, err := box.Boot(ctx, ud2, box.Options{Root: filepath.Join(dir, "two"), From: image, RootOwnedMarker: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = two.Close() })
	c2 := login(t, two, k2)
	if got := run(t, c2, `cat "$HOME/notes" "$CRABBOX_FS_ROOT`+cloudinit.BootstrapMarker+`"`); got != "baked\ncbx_bbbbbbbbbbbb\n" {
		t.Fatalf("box booted from the image = %q", got)
	}
	// RootOwnedMarker: the marker is root's, the rest the user's.
	userUID := owner(t, filepath.Join(two.Root(), "home", user))
	if got := owner(t, filepath.Join(two.Root(), cloudinit.BootstrapMarker)); got != 0 || userUID == 0 {
		t.Fatalf("marker owner %d, home owner %d", got, userUID)
	}
	if got := owner(t, filepath.Join(one.Root(), cloudinit.BootstrapMarker)); got != userUID {
		t.Fatalf("default marker owner %d, want the user's %d", got, userUID)
	}

	// One box closing keeps the user the other one still logs in as.
	if err := one.Close(); err != nil {
		t.Fatal(err)
	}
	if !hostuser.Exists(user) {
		t.Fatal("user removed while another box uses it")
	}
	run(t, c2, "true")
	two.Stop()
	if two.Running() {
		t.Fatal("Stop left sshd running")
	}
	if err := two.Close(); err != nil {
		t.Fatal(err)
	}
	if hostuser.Exists(user) {
		t.Fatalf("user %s outlived its last box", user)
	}
}

func TestBootErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := box.Boot(ctx, []byte("#cloud-config\n"), box.Options{}); !errors.Is(err, box.ErrNoRoot) {
		t.Fatalf("Boot without root = %v", err)
	}
	if _, err := box.Boot(ctx, []byte("not user-data"), box.Options{Root: t.TempDir()}); err == nil {
		t.Fatal("Boot of garbage user-data succeeded")
	}
}
