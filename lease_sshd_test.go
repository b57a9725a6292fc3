package crabbox_test

// Integration tests of leases over a real OpenSSH sshd on loopback, logged
// in as a fresh non-root user, through the sshhost provider.

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

func hostFor(s *sshd.Server) sshhost.Host {
	return sshhost.Host{Addr: s.Addr, User: s.User, Signer: s.ClientKey.Signer, HostKey: s.HostKey}
}

func sshhostClient(t *testing.T, hosts []sshhost.Host, opts ...crabbox.Option) (*crabbox.Client, *sshhost.Driver) {
	t.Helper()
	drv, err := sshhost.New(hosts)
	require.NoError(t, err)
	opts = append([]crabbox.Option{
		crabbox.WithStateDir(t.TempDir()),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(50 * time.Millisecond)),
		crabbox.WithOperator("tester"),
	}, opts...)
	c, err := crabbox.New(drv, opts...)
	require.NoError(t, err)
	return c, drv
}

func liveLeases(t *testing.T, c *crabbox.Client) int {
	t.Helper()
	ls, err := c.Leases(context.Background())
	require.NoError(t, err)
	return len(ls)
}

func TestSSHDLeaseRunStreamsOutputAndExitCodes(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	c, _ := sshhostClient(t, []sshhost.Host{hostFor(srv)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := c.Warmup(ctx, crabbox.WithClass("small"))
	require.NoError(t, err)
	defer l.Release(context.Background())
	assert.Equal(t, crabbox.ImageBase, l.ImageSource)

	var both bytes.Buffer
	res, err := l.Run(ctx, "echo out; echo err >&2; whoami; exit 3", crabbox.WithStdout(&both), crabbox.WithStderr(&both))
	require.Error(t, err)
	assert.ErrorIs(t, err, crabbox.ErrCommandFailed)
	var re *crabbox.RunError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 3, re.Result.ExitCode)
	assert.Equal(t, 3, res.ExitCode)
	assert.Equal(t, "out\n"+srv.User+"\n", res.StdoutTail)
	assert.Equal(t, "err\n", res.StderrTail)
	assert.Contains(t, both.String(), "out\n")
	assert.Contains(t, both.String(), "err\n")

	// Strict mode makes a failing pipeline fail; plain sh does not.
	_, err = l.Run(ctx, "false | true; echo after")
	require.NoError(t, err)
	res, err = l.Run(ctx, "false | true; echo after", crabbox.Strict())
	require.ErrorIs(t, err, crabbox.ErrCommandFailed)
	assert.NotContains(t, res.StdoutTail, "after")

	// Tails are bounded.
	res, err = l.Run(ctx, "head -c 100000 /dev/zero | tr '\\0' x", crabbox.WithTailBytes(1000))
	require.NoError(t, err)
	assert.Len(t, res.StdoutTail, 1000)

	// Environment and quoting.
	res, err = l.Run(ctx, `printf '%s' "$GREETING"`, crabbox.WithEnv(map[string]string{"GREETING": "it's a 'quoted' $HOME"}))
	require.NoError(t, err)
	assert.Equal(t, "it's a 'quoted' $HOME", res.StdoutTail)
}

func TestSSHDSmokeBeyondMaxSessions(t *testing.T) {
	// Default OpenSSH MaxSessions 10: 25 concurrent checks share one
	// connection and must all pass by waiting for free session slots.
	srv := sshd.Start(t, sshd.Options{})
	c, _ := sshhostClient(t, []sshhost.Host{hostFor(srv)})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer l.Release(context.Background())
	// Each check waits at a gate until 10 checks have arrived, so the
	// smoke passes only if 10 run at the same time on the one connection;
	// the other 15 must wait for free session slots.
	gate := fmt.Sprintf("$HOME/gate-%d", time.Now().UnixNano())
	var checks []crabbox.SmokeCheck
	for i := 0; i < 25; i++ {
		cmd := fmt.Sprintf(`mkdir -p %[1]s && touch %[1]s/%[2]d
while [ "$(ls %[1]s | wc -l)" -lt 10 ]; do sleep 0.05; done
echo check-%[2]d`, gate, i)
		checks = append(checks, crabbox.CommandSucceeds(fmt.Sprintf("check %d", i), cmd,
			crabbox.OutputContains(fmt.Sprintf("check-%d", i))).WithTimeout(30*time.Second))
	}
	rep, err := crabbox.Smoke(ctx, l, checks)
	require.NoError(t, err)
	assert.True(t, rep.OK())
	assert.Equal(t, 25, rep.Passed)
}

func TestSSHDHostKeyMismatchRejected(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	other := sshd.MustKey(t)
	h := hostFor(srv)
	h.HostKey = other.PublicKey()
	c, _ := sshhostClient(t, []sshhost.Host{h})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	l, err := c.Warmup(ctx, crabbox.WithReadyTimeout(50*time.Second))
	require.Error(t, err)
	assert.Nil(t, l)
	assert.ErrorIs(t, err, crabbox.ErrHostKeyMismatch)
	var we *crabbox.WaitError
	require.ErrorAs(t, err, &we, "readiness gives up with a WaitError")
	assert.Equal(t, 1, we.Attempts, "a host key mismatch is never retried")
	assert.Less(t, time.Since(start), 40*time.Second, "a host key mismatch must not be retried until the timeout")
	assert.Equal(t, 0, liveLeases(t, c), "the failed lease must be released")
}

func TestSSHDBoxDiesMidCommand(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	c, _ := sshhostClient(t, []sshhost.Host{hostFor(srv)})
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer l.Release(context.Background())

	errc := make(chan error, 1)
	go func() {
		_, err := l.Run(ctx, "echo started; sleep 30")
		errc <- err
	}()
	time.Sleep(500 * time.Millisecond)
	srv.Stop()
	select {
	case err := <-errc:
		require.Error(t, err)
		assert.ErrorIs(t, err, crabbox.ErrConnectionLost)
		assert.NotErrorIs(t, err, context.DeadlineExceeded)
	case <-ctx.Done():
		t.Fatal("Run hung after the box died")
	}
}

func TestSSHDReadinessWaitsForLateSSHD(t *testing.T) {
	srv := sshd.New(t, sshd.Options{})
	var events []crabbox.Event
	var mu sync.Mutex
	c2, err := crabbox.New(mustDriver(t, hostFor(srv)), crabbox.WithStateDir(t.TempDir()),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(50*time.Millisecond)),
		crabbox.WithEvents(func(e crabbox.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }))
	require.NoError(t, err)
	go func() {
		time.Sleep(700 * time.Millisecond)
		if err := srv.Start(); err != nil {
			t.Errorf("late sshd: %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := c2.Warmup(ctx)
	require.NoError(t, err)
	defer l.Release(context.Background())
	res, err := l.Run(ctx, "echo up")
	require.NoError(t, err)
	assert.Equal(t, "up\n", res.StdoutTail)
	mu.Lock()
	defer mu.Unlock()
	waiting := 0
	for _, e := range events {
		if e.Kind == crabbox.EventLeaseWaiting {
			waiting++
		}
	}
	assert.Greater(t, waiting, 0, "readiness should have waited for sshd")
}

func mustDriver(t *testing.T, hosts ...sshhost.Host) *sshhost.Driver {
	d, err := sshhost.New(hosts)
	require.NoError(t, err)
	return d
}

func TestSSHDCancellation(t *testing.T) {
	t.Run("warmup cancelled while the box never answers releases the machine", func(t *testing.T) {
		srv := sshd.New(t, sshd.Options{}) // never started
		c, _ := sshhostClient(t, []sshhost.Host{hostFor(srv)})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(400*time.Millisecond, cancel)
		l, err := c.Warmup(ctx)
		require.Error(t, err)
		assert.Nil(t, l)
		assert.ErrorIs(t, err, context.Canceled)
		var we *crabbox.WaitError
		assert.ErrorAs(t, err, &we)
		assert.Equal(t, 0, liveLeases(t, c))
	})
	t.Run("keep on failure returns the lease with the error", func(t *testing.T) {
		srv := sshd.New(t, sshd.Options{})
		c, _ := sshhostClient(t, []sshhost.Host{hostFor(srv)})
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		l, err := c.Warmup(ctx, crabbox.WithKeepOnFailure())
		require.Error(t, err)
		require.NotNil(t, l)
		assert.Equal(t, 1, liveLeases(t, c))
		require.NoError(t, l.Release(context.Background()))
		require.NoError(t, l.Release(context.Background()), "release is idempotent")
		assert.Equal(t, 0, liveLeases(t, c))
	})
	t.Run("cancelled command returns promptly and the connection stays usable", func(t *testing.T) {
		srv := sshd.Start(t, sshd.Options{})
		c, _ := sshhostClient(t, []sshhost.Host{hostFor(srv)})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		l, err := c.Warmup(ctx)
		require.NoError(t, err)
		defer l.Release(context.Background())
		rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer rcancel()
		_, err = l.Run(rctx, "sleep 30")
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		res, err := l.Run(ctx, "echo again")
		require.NoError(t, err)
		assert.Equal(t, "again\n", res.StdoutTail)
	})
}

func TestSSHDReattachAndReap(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	drv := mustDriver(t, hostFor(srv))
	state := t.TempDir()
	c, err := crabbox.New(drv, crabbox.WithStateDir(state), crabbox.WithPollBackoff(crabbox.ConstantBackoff(50*time.Millisecond)))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := c.Warmup(ctx, crabbox.WithTTL(10*time.Minute), crabbox.WithIdleTimeout(5*time.Minute))
	require.NoError(t, err)
	defer l.Release(context.Background())

	// Another client (as another process would) finds it by id and slug.
	other, err := crabbox.New(drv, crabbox.WithStateDir(state))
	require.NoError(t, err)
	for _, ref := range []string{l.ID, l.Slug} {
		got, err := other.Lease(ctx, ref)
		require.NoError(t, err, ref)
		assert.Equal(t, l.ID, got.ID)
		assert.Equal(t, l.MachineID, got.MachineID)
		res, err := got.Run(ctx, "echo reattached")
		require.NoError(t, err)
		assert.Equal(t, "reattached\n", res.StdoutTail)
		got.Close()
	}
	_, err = other.Lease(ctx, "cbx_000000000000")
	assert.ErrorIs(t, err, crabbox.ErrNotFound)
	_, err = other.Lease(ctx, "not a lease")
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)

	// Touch moves the idle expiry; nothing is reaped before it.
	require.NoError(t, l.Touch(ctx))
	reaped, err := c.Reap(ctx)
	require.NoError(t, err)
	assert.Empty(t, reaped)

	// A client whose clock is past the expiry reaps it.
	future, err := crabbox.New(drv, crabbox.WithStateDir(state), crabbox.WithClock(func() time.Time { return time.Now().Add(time.Hour) }))
	require.NoError(t, err)
	reaped, err = future.Reap(ctx)
	require.NoError(t, err)
	require.Len(t, reaped, 1)
	assert.Equal(t, l.ID, reaped[0].ID)
	assert.Equal(t, 0, liveLeases(t, c))
	_, err = other.Lease(ctx, l.ID)
	assert.ErrorIs(t, err, crabbox.ErrNotFound, "a reaped lease is gone")
	// The released lease object itself refuses new commands.
	require.NoError(t, reaped[0].Release(ctx), "release is idempotent")
	_, err = reaped[0].Run(ctx, "true")
	assert.ErrorIs(t, err, crabbox.ErrNotFound)
}
