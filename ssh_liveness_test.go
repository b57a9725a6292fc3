// Tests of the SSH liveness options of crabbox.go (WithSSHKeepalive) and of
// how Lease.Run reports a box that froze or a session the server ended.

package crabbox_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/hostuser"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

// markerWriter closes seen once the output written to it contains marker.
type markerWriter struct {
	mu     sync.Mutex
	b      strings.Builder
	marker string
	seen   chan struct{}
	once   sync.Once
}

func newMarker(marker string) *markerWriter {
	return &markerWriter{marker: marker, seen: make(chan struct{})}
}

func (w *markerWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if strings.Contains(w.b.String(), w.marker) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

// freezeSSHD stops (SIGSTOP) sshd and every process it started, as a box
// whose kernel froze: connections stay open, nothing answers. Registered
// cleanup thaws them (SIGCONT) before anything else is torn down.
func freezeSSHD(t *testing.T, srv *sshd.Server) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(srv.Dir, "sshd.pid"))
	require.NoError(t, err)
	root, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	children := map[int][]int{}
	ents, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, state, ok := hostuser.ProcInfo(pid); ok && state != "Z" {
			children[ppid] = append(children[ppid], pid)
		}
	}
	pids := []int{root}
	for i := 0; i < len(pids); i++ {
		pids = append(pids, children[pids[i]]...)
	}
	require.Greater(t, len(pids), 1, "sshd has no connection processes to freeze")
	t.Cleanup(func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	for _, pid := range pids {
		require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	}
}

func TestSSHKeepaliveDefaultsDetectAFrozenBoxInAbout15s(t *testing.T) {
	bound := time.Duration(crabbox.DefaultSSHKeepaliveCount+1) * crabbox.DefaultSSHKeepaliveInterval
	assert.LessOrEqual(t, bound, 20*time.Second, "default detection bound")
	assert.GreaterOrEqual(t, bound, 10*time.Second, "defaults must not flap on a slow link")
}

func TestWithSSHKeepaliveRejectsBadValues(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	drv := mustDriver(t, hostFor(srv))
	for _, opt := range []crabbox.Option{
		crabbox.WithSSHKeepalive(0, 3),
		crabbox.WithSSHKeepalive(-time.Second, 3),
		crabbox.WithSSHKeepalive(time.Second, 0),
	} {
		_, err := crabbox.New(drv, crabbox.WithStateDir(t.TempDir()), opt)
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	}
}

// A box frozen mid-command (SIGSTOP: the TCP connection stays open, nothing
// answers) is declared lost within the keepalive bound set on the client.
func TestFrozenBoxDeclaredLostWithinKeepaliveBound(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	c, _ := sshhostClient(t, []sshhost.Host{hostFor(srv)}, crabbox.WithSSHKeepalive(200*time.Millisecond, 3))
	ctx := testCtx(t)
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Release(context.Background()) })

	out := newMarker("started")
	done := make(chan error, 1)
	go func() {
		_, err := l.Run(ctx, "echo started; sleep 60", crabbox.WithStdout(out))
		done <- err
	}()
	select {
	case <-out.seen:
	case <-ctx.Done():
		t.Fatal("command never started")
	}
	freezeSSHD(t, srv)
	start := time.Now()
	select {
	case err = <-done:
	case <-time.After(15 * time.Second): // the bound is 0.8 s; the default 20 s
		t.Fatal("a frozen box was not declared lost within 15 s")
	}
	require.ErrorIs(t, err, crabbox.ErrConnectionLost)
	assert.Contains(t, err.Error(), "keepalive")
	t.Logf("declared lost after %v", time.Since(start).Round(time.Millisecond))
}

// A box whose sshd closes quiet sessions after 1 s (ChannelTimeout, in
// OpenSSH 9.2's spelling): the command's error says the session ended, not
// that the connection was lost, and the lease keeps working.
func TestSessionClosedByBoxIsNotConnectionLost(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{Extra: []string{"ChannelTimeout session:command=1"}})
	c, _ := sshhostClient(t, []sshhost.Host{hostFor(srv)})
	ctx := testCtx(t)
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	_, err = l.Run(ctx, "sleep 4")
	require.Error(t, err)
	assert.NotErrorIs(t, err, crabbox.ErrConnectionLost)
	assert.ErrorIs(t, err, crabbox.ErrSessionEnded)
	res, err := l.Run(ctx, "echo still here")
	require.NoError(t, err)
	assert.Equal(t, "still here\n", res.StdoutTail)
}
