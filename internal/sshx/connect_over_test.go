// Tests of ConnectOver: a handshake over a connection the caller dialled.

package sshx_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/internal/sshx"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

func TestConnectOverUsesTheGivenConnection(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	cfg := config(srv)
	dials := 0
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials++
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	c := newClient(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c.Connected() {
		t.Fatal("connected before any dial")
	}
	tcp, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ConnectOver(ctx, tcp); err != nil {
		t.Fatalf("ConnectOver: %v", err)
	}
	if !c.Connected() {
		t.Fatal("not connected after ConnectOver")
	}
	if res, err := c.Run(ctx, sshx.Request{Command: "exit 3"}); err != nil || res.ExitCode != 3 {
		t.Fatalf("run: %v %v", res, err)
	}
	if dials != 0 {
		t.Fatalf("the client dialled %d times; it should have used the given connection", dials)
	}
	// Already connected: the extra connection is closed, nothing changes.
	extra, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ConnectOver(ctx, extra); err != nil {
		t.Fatalf("second ConnectOver: %v", err)
	}
	if _, err := extra.Write([]byte("x")); err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the extra connection should be closed, write: %v", err)
	}
}

func TestConnectOverPinsTheHostKey(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	cfg := config(srv)
	cfg.HostKey = sshd.MustKey(t).PublicKey()
	c := newClient(t, cfg)
	tcp, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	err = c.ConnectOver(context.Background(), tcp)
	if !errors.Is(err, sshx.ErrHostKeyMismatch) {
		t.Fatalf("want a host key mismatch, got %v", err)
	}
}
