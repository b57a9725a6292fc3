package sshx_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/sshx"
)

// sessionServer is an in-process SSH server whose sessions run no
// command: each exec answers "ran" with exit status 0. With idle > 0 a
// session that has no request within idle is closed (an idle-channel
// timeout, which OpenSSH 9.2's ChannelTimeout does not apply to a session
// without a command). It counts connections, channels opened, channels
// that ran a command, and channels it closed as idle.
type sessionServer struct {
	addr                           string
	hostKey                        ssh.PublicKey
	conns, opened, ran, idleClosed atomic.Int32
}

func startSessionServer(t *testing.T, idle time.Duration) *sessionServer {
	t.Helper()
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		return nil, nil
	}}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	srv := &sessionServer{addr: ln.Addr().String(), hostKey: hostSigner.PublicKey()}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			srv.conns.Add(1)
			go func() {
				_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for nch := range chans {
					ch, creqs, err := nch.Accept()
					if err != nil {
						return
					}
					srv.opened.Add(1)
					go func() {
						var r *ssh.Request
						if idle > 0 {
							select {
							case r = <-creqs:
							case <-time.After(idle):
								srv.idleClosed.Add(1)
								ch.Close()
								return
							}
						} else {
							r = <-creqs
						}
						for ; r != nil; r = <-creqs {
							if r.Type == "exec" {
								srv.ran.Add(1)
								r.Reply(true, nil)
								ch.Write([]byte("ran\n"))
								status := make([]byte, 4)
								binary.BigEndian.PutUint32(status, 0)
								ch.SendRequest("exit-status", false, status)
								ch.Close()
								return
							}
							r.Reply(false, nil)
						}
					}()
				}
			}()
		}
	}()
	return srv
}

func (s *sessionServer) client(t *testing.T) *sshx.Client {
	_, clientPriv, _ := ed25519.GenerateKey(rand.Reader)
	clientSigner, _ := ssh.NewSignerFromKey(clientPriv)
	return newClient(t, sshx.Config{Addr: s.addr, User: "u", Signer: clientSigner, HostKey: s.hostKey})
}

func runRan(t *testing.T, c *sshx.Client, i int) {
	t.Helper()
	out := newNotify("ran")
	res, err := c.Run(testCtx(t), sshx.Request{Command: "x", Stdout: out})
	if err != nil || res.ExitCode != 0 || out.buf.String() != "ran\n" {
		t.Fatalf("Run %d = %+v, %q, %v", i, res, out.buf.String(), err)
	}
}

// The second Run on a fresh connection runs in the spare session opened
// beside the first: three Runs open three channels, every one of which ran
// a command (without the spare's reuse: four, one left idle).
func TestSecondRunUsesTheSpareSession(t *testing.T) {
	srv := startSessionServer(t, 0)
	c := srv.client(t)
	for i := range 3 {
		runRan(t, c, i)
	}
	if o, r := srv.opened.Load(), srv.ran.Load(); o != 3 || r != 3 {
		t.Errorf("%d channels opened, %d ran a command; want 3 and 3", o, r)
	}
}

// A server that closes an idle session closes the spare the client opened
// with its first Run: the Run that picks the spare up runs its command in
// a session of its own, on the same connection.
func TestSpareSessionClosedByServer(t *testing.T) {
	// The first Run opens its own session unless the spare's open won the
	// race to it (then no spare is left to go stale): up to three tries.
	for try := 1; ; try++ {
		srv := startSessionServer(t, 1500*time.Millisecond)
		c := srv.client(t)
		runRan(t, c, 0)
		time.Sleep(3 * time.Second) // the spare is closed meanwhile
		runRan(t, c, 1)
		runRan(t, c, 2)
		if n := srv.conns.Load(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
		if srv.idleClosed.Load() == 1 {
			return
		}
		if try == 3 {
			t.Fatalf("the server never closed an idle spare (%d closed)", srv.idleClosed.Load())
		}
		t.Logf("try %d: the first Run took the spare", try)
	}
}
