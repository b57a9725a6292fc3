package crabbox_test

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
)

// The desktop starts its VNC server in the background: ForwardVNC on a
// box whose server starts listening a moment later waits for it instead
// of failing.
func TestForwardVNCWaitsForAServerStillStarting(t *testing.T) {
	// The local box's VNC port (its CRABBOX_VNC_PORT), on the loopback
	// the box shares with the test; nothing listens there yet.
	l := uploadLease(t)
	port := boxVNCPort(t, l)

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

// boxVNCPort is the local box's CRABBOX_VNC_PORT, which the local cloud
// sets to a port of the box's own.
func boxVNCPort(t *testing.T, l *crabbox.Lease) int {
	t.Helper()
	res, err := l.Run(testCtx(t), `printf '%s' "$CRABBOX_VNC_PORT"`)
	require.NoError(t, err)
	port, err := strconv.Atoi(res.StdoutTail)
	require.NoError(t, err, "the local box's CRABBOX_VNC_PORT")
	require.NotEqual(t, 5900, port, "a port of the box's own, not the default")
	return port
}
