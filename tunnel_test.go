// Tests of tunnel.go against real OpenSSH: DialContext, Forward and Reverse,
// many concurrent streams, the lease closing under open streams, and a box
// whose sshd disables forwarding.

package crabbox_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

// echoServer echoes every line it reads, on 127.0.0.1, until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// sshLease leases a real sshd started with extra config lines.
func sshLease(t *testing.T, extra ...string) *crabbox.Lease {
	t.Helper()
	srv := sshd.Start(t, sshd.Options{Extra: extra})
	c, _ := sshhostClient(t, []sshhost.Host{hostFor(srv)})
	l, err := c.Warmup(testCtx(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	return l
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_, err := fmt.Fprintln(c, msg)
	require.NoError(t, err)
	got, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, msg+"\n", got)
}

func TestDialContextReachesTheBoxsLoopback(t *testing.T) {
	l := sshLease(t)
	ctx := testCtx(t)
	echo := echoServer(t)
	c, err := l.DialContext(ctx, "tcp", echo)
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, "hello through the lease")

	// Nothing listening there on the box: unavailable, not unsupported.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := dead.Addr().String()
	dead.Close()
	_, err = l.DialContext(ctx, "tcp", addr)
	assert.ErrorIs(t, err, crabbox.ErrUnavailable)
	assert.NotErrorIs(t, err, crabbox.ErrUnsupported)
	_, err = l.DialContext(ctx, "udp", echo)
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
}

func TestForwardCarriesManyConcurrentStreams(t *testing.T) {
	l := sshLease(t)
	ctx := testCtx(t)
	tun, err := l.Forward(ctx, echoServer(t))
	require.NoError(t, err)
	defer tun.Close()
	host, _, err := net.SplitHostPort(tun.LocalAddr())
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1", host)

	const streams = 40
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", tun.LocalAddr())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			for j := 0; j < 20; j++ {
				msg := fmt.Sprintf("stream %d line %d %s", i, j, strings.Repeat("x", i*100))
				if _, err := fmt.Fprintln(c, msg); err != nil {
					errs <- err
					return
				}
				got, err := r.ReadString('\n')
				if err != nil || got != msg+"\n" {
					errs <- fmt.Errorf("stream %d: got %q, %v", i, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestReverseLetsTheBoxReachTheHarness(t *testing.T) {
	l := sshLease(t)
	ctx := testCtx(t)
	tun, err := l.Reverse(ctx, "127.0.0.1:0", echoServer(t))
	require.NoError(t, err)
	defer tun.Close()
	_, port, err := net.SplitHostPort(tun.RemoteAddr())
	require.NoError(t, err)
	require.NotEqual(t, "0", port)
	// The box connects to its own loopback port, which sshd forwards back.
	res, err := l.Run(ctx, `exec 3<>/dev/tcp/127.0.0.1/`+port+`; echo from-the-box >&3; head -n 1 <&3`)
	require.NoError(t, err)
	assert.Equal(t, "from-the-box\n", res.StdoutTail)

	// Concurrent streams through the reverse tunnel.
	res, err = l.Run(ctx, `for i in $(seq 1 20); do ( exec 3<>/dev/tcp/127.0.0.1/`+port+`; echo "r$i" >&3; head -n 1 <&3 ) & done; wait`)
	require.NoError(t, err)
	assert.Equal(t, 20, strings.Count(res.StdoutTail, "\n"))

	require.NoError(t, tun.Close())
	_, err = l.Run(ctx, `exec 3<>/dev/tcp/127.0.0.1/`+port)
	assert.ErrorIs(t, err, crabbox.ErrCommandFailed, "the box's listener is gone after Close")
}

func TestLeaseCloseEndsOpenStreamsAndTunnels(t *testing.T) {
	l := sshLease(t)
	ctx := testCtx(t)
	echo := echoServer(t)
	stream, err := l.DialContext(ctx, "tcp", echo)
	require.NoError(t, err)
	roundTrip(t, stream, "before")
	fwd, err := l.Forward(ctx, echo)
	require.NoError(t, err)
	local, err := net.Dial("tcp", fwd.LocalAddr())
	require.NoError(t, err)
	defer local.Close()
	roundTrip(t, local, "through the forward")
	rev, err := l.Reverse(ctx, "127.0.0.1:0", echo)
	require.NoError(t, err)

	readErr := make(chan error, 1)
	go func() {
		_, err := stream.Read(make([]byte, 1))
		readErr <- err
	}()
	require.NoError(t, l.Close())

	select {
	case err := <-readErr:
		assert.ErrorIs(t, err, crabbox.ErrConnectionLost)
	case <-time.After(10 * time.Second):
		t.Fatal("a read on an open stream did not end when the lease closed")
	}
	_, err = stream.Write([]byte("after\n"))
	assert.ErrorIs(t, err, crabbox.ErrConnectionLost)
	for _, tun := range []*crabbox.Tunnel{fwd, rev} {
		select {
		case <-tun.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("tunnel %s did not end with the lease", tun.RemoteAddr())
		}
	}
	_ = local.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = local.Read(make([]byte, 1))
	assert.Error(t, err, "the forwarded stream ends with the lease")
	var ne net.Error
	assert.False(t, errors.As(err, &ne) && ne.Timeout(), "closed, not left hanging: %v", err)
	_, err = net.Dial("tcp", fwd.LocalAddr())
	assert.Error(t, err, "the forward's listener is closed")

	// The lease itself reconnects for the next call.
	c, err := l.DialContext(ctx, "tcp", echo)
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, "after reconnect")
}

func TestForwardingDisabledIsUnsupported(t *testing.T) {
	l := sshLease(t, "AllowTcpForwarding no")
	ctx := testCtx(t)
	echo := echoServer(t)
	_, err := l.DialContext(ctx, "tcp", echo)
	assert.ErrorIs(t, err, crabbox.ErrUnsupported)
	_, err = l.Forward(ctx, echo)
	assert.ErrorIs(t, err, crabbox.ErrUnsupported)
	_, err = l.Reverse(ctx, "127.0.0.1:0", echo)
	assert.ErrorIs(t, err, crabbox.ErrUnsupported)
	// Commands still run.
	_, err = l.Run(ctx, "true")
	assert.NoError(t, err)
}

// The local cloud's in-process SSH server forwards as OpenSSH does.
func TestTunnelsOnTheLocalCloud(t *testing.T) {
	c := localClient(t, crabboxtest.Start(t))
	ctx := testCtx(t)
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer l.Release(context.Background())
	echo := echoServer(t)

	s, err := l.DialContext(ctx, "tcp", echo)
	require.NoError(t, err)
	roundTrip(t, s, "direct")
	fwd, err := l.Forward(ctx, echo)
	require.NoError(t, err)
	lc, err := net.Dial("tcp", fwd.LocalAddr())
	require.NoError(t, err)
	defer lc.Close()
	roundTrip(t, lc, "forwarded")

	rev, err := l.Reverse(ctx, "127.0.0.1:0", echo)
	require.NoError(t, err)
	_, port, _ := net.SplitHostPort(rev.RemoteAddr())
	res, err := l.Run(ctx, `bash -c 'exec 3<>/dev/tcp/127.0.0.1/`+port+`; echo reversed >&3; head -n 1 <&3'`)
	require.NoError(t, err)
	assert.Equal(t, "reversed\n", res.StdoutTail)
	require.NoError(t, rev.Close())
	_, err = net.Dial("tcp", rev.RemoteAddr())
	assert.Error(t, err, "cancel-tcpip-forward closed the box's listener")

	require.NoError(t, l.Close())
	_, err = s.Read(make([]byte, 1))
	assert.ErrorIs(t, err, crabbox.ErrConnectionLost)
	<-fwd.Done()
}
