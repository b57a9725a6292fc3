// Tests against a real sshd.

package sshhost

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/providertest"
)

// dial connects to addr with the access credentials, pinning the host key,
// bounded by ctx (ssh.Dial has no context).
func dial(ctx context.Context, addr string, acc *provider.Access) (*ssh.Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User:            acc.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(acc.Signer)},
		HostKeyCallback: ssh.FixedHostKey(acc.HostKey),
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// TestRealSSHD leases a real OpenSSH sshd on loopback and logs in with the
// credentials MachineAccess returns.
func TestRealSSHD(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	other := sshd.MustKey(t)
	d := mustNew(t, []Host{{Addr: srv.Addr, User: srv.User, Signer: srv.ClientKey.Signer, HostKey: srv.HostKey}})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	m, err := d.CreateMachine(ctx, provider.CreateMachineRequest{Name: "real"})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := d.MachineAccess(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial(ctx, m.SSHAddr, acc)
	if err != nil {
		t.Fatalf("logging in to %s as %s with the MachineAccess credentials: %v", m.SSHAddr, acc.User, err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	if err := sess.Run("id -un"); err != nil {
		t.Fatalf("id -un: %v (stderr %q)", err, stderr.String())
	}
	if got := strings.TrimSpace(stdout.String()); got != srv.User {
		t.Errorf("id -un = %q, want %q", got, srv.User)
	}

	// The pinned host key is enforced: a host claiming another key is refused.
	wrong := *acc
	wrong.HostKey = other.PublicKey()
	if c, err := dial(ctx, m.SSHAddr, &wrong); err == nil {
		c.Close()
		t.Error("login succeeded although the host key did not match the pinned one")
	}
}

// TestConformanceRealSSHD runs the conformance suite with a real sshd as
// the pool.
func TestConformanceRealSSHD(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	d := mustNew(t, []Host{{Addr: srv.Addr, User: srv.User, Signer: srv.ClientKey.Signer, HostKey: srv.HostKey}})
	providertest.Run(t, providertest.Harness{Driver: d, PollInterval: time.Millisecond, Skip: conformanceSkips})
}
