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

// A server that closes a session that has no request after 200 ms (an
// idle-channel timeout, which OpenSSH 9.2's ChannelTimeout does not apply
// to a session without a command) closes the spare session the client
// opened with its first Run: the Run that picks that session up runs its
// command in a session of its own, on the same connection.
func TestSpareSessionClosedByServer(t *testing.T) {
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	_, clientPriv, _ := ed25519.GenerateKey(rand.Reader)
	clientSigner, _ := ssh.NewSignerFromKey(clientPriv)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		return nil, nil
	}}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns, idleClosed atomic.Int32
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
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
					go func() {
						// A session without a request for 200 ms is closed.
						var r *ssh.Request
						select {
						case r = <-creqs:
						case <-time.After(200 * time.Millisecond):
							idleClosed.Add(1)
							ch.Close()
							return
						}
						for ; r != nil; r = <-creqs {
							if r.Type == "exec" {
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
	c := newClient(t, sshx.Config{Addr: ln.Addr().String(), User: "u", Signer: clientSigner, HostKey: hostSigner.PublicKey()})
	ctx := testCtx(t)
	for i := range 3 {
		if i == 1 {
			// The spare, opened with the first Run, is closed meanwhile.
			time.Sleep(500 * time.Millisecond)
		}
		out := newNotify("ran")
		res, err := c.Run(ctx, sshx.Request{Command: "x", Stdout: out})
		if err != nil || res.ExitCode != 0 || out.buf.String() != "ran\n" {
			t.Fatalf("Run %d = %+v, %q, %v", i, res, out.buf.String(), err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	if n := idleClosed.Load(); n != 1 {
		t.Errorf("the server closed %d idle sessions, want 1 (the spare)", n)
	}
}
