package sshbox_test

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake/sshbox"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

func userData(t *testing.T, client, host *sshd.Key) string {
	t.Helper()
	ud, err := cloudinit.Render(cloudinit.Config{
		LeaseID:        "cbx_0123456789ab",
		AuthorizedKeys: []string{strings.TrimSpace(string(client.AuthorizedKey()))},
		HostKeyPEM:     host.PEM,
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(ud)
}

func dialSSH(t *testing.T, f *hcloudfake.Fake, ip string, client, host *sshd.Key) *ssh.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addr := net.JoinHostPort(ip, "22")
	conn, err := f.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User:            cloudinit.DefaultUser,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(client.Signer)},
		HostKeyCallback: ssh.FixedHostKey(host.PublicKey()),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	cl := ssh.NewClient(c, chans, reqs)
	t.Cleanup(func() { cl.Close() })
	return cl
}

func run(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	if err := s.Run(cmd); err != nil {
		t.Fatalf("%s: %v (stderr %q)", cmd, err, errb.String())
	}
	return out.String()
}

func TestBoxBootsFromUserDataAndSnapshotsCarryTheDisk(t *testing.T) {
	boxes := sshbox.New(t)
	f := hcloudfake.New(boxes.Options(hcloudfake.Options{}))
	t.Cleanup(f.Close)
	hc := hcloud.NewClient(hcloud.WithEndpoint(f.URL()), hcloud.WithToken("t"),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(time.Millisecond)}))
	ctx := context.Background()
	clientKey, hostKey := sshd.MustKey(t), sshd.MustKey(t)

	res, _, err := hc.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "one", ServerType: &hcloud.ServerType{Name: "cx22"},
		Image: &hcloud.Image{Name: "ubuntu-24.04"}, UserData: userData(t, clientKey, hostKey)})
	if err != nil {
		t.Fatal(err)
	}
	if err := hc.Action.WaitFor(ctx, res.Action); err != nil {
		t.Fatal(err)
	}
	c := dialSSH(t, f, res.Server.PublicNet.IPv4.IP.String(), clientKey, hostKey)
	if got := run(t, c, `whoami; "${CRABBOX_FS_ROOT:-}"`+cloudinit.ReadyCommand); got != "crabbox\nready\n" {
		t.Fatalf("whoami+ready = %q", got)
	}
	// HOME and PATH live on the box's disk.
	if got := run(t, c, `echo "$HOME"; echo "$PATH"`); !strings.HasPrefix(got, "/") ||
		!strings.Contains(got, "/home/crabbox\n") || !strings.Contains(got, "/usr/local/bin:") || strings.HasPrefix(got, "/home/") {
		t.Fatalf("HOME and PATH = %q", got)
	}
	// The bake writes into the work root, its home and a tool on PATH; the
	// snapshot keeps them.
	run(t, c, `echo baked > "$CRABBOX_FS_ROOT"/work/crabbox/marker && echo note > "$HOME/notes" &&
mkdir -p "$CRABBOX_FS_ROOT/usr/local/bin" && printf '#!/bin/sh\necho hello\n' > "$CRABBOX_FS_ROOT/usr/local/bin/cbx-hello" && chmod 755 "$CRABBOX_FS_ROOT/usr/local/bin/cbx-hello"`)
	ci, _, err := hc.Server.CreateImage(ctx, res.Server, &hcloud.ServerCreateImageOpts{Type: hcloud.ImageTypeSnapshot})
	if err != nil {
		t.Fatal(err)
	}
	if err := hc.Action.WaitFor(ctx, ci.Action); err != nil {
		t.Fatal(err)
	}

	clientKey2, hostKey2 := sshd.MustKey(t), sshd.MustKey(t)
	res2, _, err := hc.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "two", ServerType: &hcloud.ServerType{Name: "cx22"},
		Image: &hcloud.Image{ID: ci.Image.ID}, UserData: userData(t, clientKey2, hostKey2)})
	if err != nil {
		t.Fatal(err)
	}
	c2 := dialSSH(t, f, res2.Server.PublicNet.IPv4.IP.String(), clientKey2, hostKey2)
	if got := run(t, c2, `cat "$CRABBOX_FS_ROOT"/work/crabbox/marker "$HOME/notes"; cbx-hello`); got != "baked\nnote\nhello\n" {
		t.Fatalf("marker in the lease booted from the snapshot = %q", got)
	}
	// A deleted server is unreachable.
	if _, _, err := hc.Server.DeleteWithResult(ctx, res.Server); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Dial(ctx, "tcp", net.JoinHostPort(res.Server.PublicNet.IPv4.IP.String(), "22")); err == nil {
		t.Fatal("dial to a deleted server succeeded")
	}
	if st := f.State(); st.Boxes != 1 || st.Servers != 1 {
		t.Fatalf("state = %+v", st)
	}

}
