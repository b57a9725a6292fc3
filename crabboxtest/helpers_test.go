// Test helpers: leases, booting, dialing, running commands.

package crabboxtest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/provider"
)

// lease is what a test needs to reach a machine: the user-data's keys.
type lease struct {
	cfg     cloudinit.Config
	ud      []byte
	signer  ssh.Signer    // client key
	hostKey ssh.PublicKey // pinned host key
}

func newLease(t testing.TB, mut func(*cloudinit.Config)) *lease {
	t.Helper()
	_, cpriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(cpriv)
	if err != nil {
		t.Fatal(err)
	}
	hpub, hpriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(hpriv, "")
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.NewPublicKey(hpub)
	if err != nil {
		t.Fatal(err)
	}
	cfg := cloudinit.Config{
		LeaseID:        newID("cbx_")[:16],
		AuthorizedKeys: []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))},
		HostKeyPEM:     pem.EncodeToMemory(blk),
	}
	if mut != nil {
		mut(&cfg)
	}
	ud, err := cloudinit.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n, err := cloudinit.Normalize(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &lease{cfg: n, ud: ud, signer: signer, hostKey: hostKey}
}

func (l *lease) request(labels map[string]string) provider.CreateMachineRequest {
	return provider.CreateMachineRequest{
		Name:     "test-" + l.cfg.LeaseID,
		Type:     "local-small-a",
		UserData: l.ud,
		Labels:   labels,
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// booted is a machine a test booted, with the host directory its file
// system is in (the cloud's side of the interface, MachineDir).
type booted struct {
	*provider.Machine
	FSRoot string
}

// boot creates a machine for l on c and returns it running.
func boot(t testing.TB, c *Cloud, l *lease) *booted {
	t.Helper()
	m, err := c.CreateMachine(ctxT(t), l.request(map[string]string{"lease": l.cfg.LeaseID}))
	if err != nil {
		t.Fatalf("CreateMachine: %v", err)
	}
	return running(t, c, m)
}

// running checks that m is running with an address and a file system.
func running(t testing.TB, c *Cloud, m *provider.Machine) *booted {
	t.Helper()
	root, err := c.MachineDir(m.ID)
	if m.State != provider.MachineRunning || m.SSHAddr == "" || err != nil || root == "" {
		t.Fatalf("machine not running with an address and root: %+v, %q, %v", m, root, err)
	}
	return &booted{Machine: m, FSRoot: root}
}

// dialAs opens an SSH connection, pinning hostKey.
func dialAs(addr, user string, signer ssh.Signer, hostKey ssh.PublicKey) (*ssh.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	cc, chans, reqs, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
	})
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return ssh.NewClient(cc, chans, reqs), nil
}

func dial(t testing.TB, m *provider.Machine, l *lease) *ssh.Client {
	t.Helper()
	cl, err := dialAs(m.SSHAddr, l.cfg.User, l.signer, l.hostKey)
	if err != nil {
		t.Fatalf("dial %s: %v", m.SSHAddr, err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// run runs a command and returns stdout, stderr and the error of Run.
func run(t testing.TB, cl *ssh.Client, cmd string) (string, string, error) {
	t.Helper()
	s, err := cl.NewSession()
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	err = s.Run(cmd)
	return out.String(), errb.String(), err
}

func mustRun(t testing.TB, cl *ssh.Client, cmd string) string {
	t.Helper()
	out, errOut, err := run(t, cl, cmd)
	if err != nil {
		t.Fatalf("%q: %v (stderr %q)", cmd, err, errOut)
	}
	return out
}

// eventually polls cond until it holds or a generous bound passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
