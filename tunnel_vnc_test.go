package crabbox_test

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The desktop starts its VNC server in the background: ForwardVNC on a
// box whose server starts listening a moment later waits for it instead
// of failing.
func TestForwardVNCWaitsForAServerStillStarting(t *testing.T) {
	// The local box has no CRABBOX_VNC_PORT: the default port, on the
	// loopback the box shares with the test.
	const port = 5900
	probe, err := net.Listen("tcp", "127.0.0.1:5900")
	if err != nil {
		t.Skipf("127.0.0.1:5900 is taken here (a VNC server of this machine?): %v", err)
	}
	require.NoError(t, probe.Close()) // free again: nothing listens yet
	l := uploadLease(t)

	started := make(chan net.Listener, 1)
	go func() {
		time.Sleep(time.Second)
		late, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Error(err)
			close(started)
			return
		}
		started <- late
		for {
			c, err := late.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("RFB 003.008\n"))
			_ = c.Close()
		}
	}()
	tun, err := l.ForwardVNC(testCtx(t))
	if late, ok := <-started; ok {
		defer late.Close()
	}
	require.NoError(t, err, "ForwardVNC must wait for a VNC server that is still starting")
	defer tun.Close()
	assert.Equal(t, "127.0.0.1:"+strconv.Itoa(port), tun.RemoteAddr())
}
