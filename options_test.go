package crabbox_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
)

func TestNewRejectsBadOptions(t *testing.T) {
	cloud := crabboxtest.Start(t)
	_, err := crabbox.New(nil)
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	for name, opt := range map[string]crabbox.Option{
		"nil logger":      crabbox.WithLogger(nil),
		"empty operator":  crabbox.WithOperator("@@@"),
		"nil dialer":      crabbox.WithDialer(nil),
		"nil backoff":     crabbox.WithPollBackoff(nil),
		"nil img backoff": crabbox.WithImagePollBackoff(nil),
		"zero retries":    crabbox.WithRetryAttempts(0),
		"empty state dir": crabbox.WithStateDir(""),
		"nil clock":       crabbox.WithClock(nil),
	} {
		_, err := crabbox.New(cloud, opt)
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, name)
	}
	c, err := crabbox.New(cloud, nil) // nil options are ignored
	require.NoError(t, err)
	assert.NotEmpty(t, c.Operator(), "operator defaults to the OS user")
	assert.Equal(t, "local", c.Provider().Name)
}

func TestBackoffs(t *testing.T) {
	b := crabbox.ExponentialBackoff(time.Second, 10*time.Second)
	assert.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second},
		[]time.Duration{b(1), b(2), b(3), b(4), b(5), b(60)})
	assert.Equal(t, 3*time.Millisecond, crabbox.ConstantBackoff(3*time.Millisecond)(7))
}

func TestSilentByDefaultAndLoggerOptIn(t *testing.T) {
	cloud := crabboxtest.Start(t)
	var buf bytes.Buffer
	c := localClient(t, cloud, crabbox.WithLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	ctx := testCtx(t)
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))
	assert.Contains(t, buf.String(), "lease.ready", "the logger given receives progress")
}

func TestStateDirKeysArePrivateAndRemovedOnRelease(t *testing.T) {
	cloud := crabboxtest.Start(t)
	state := t.TempDir()
	c, err := crabbox.New(cloud, append(fast(), crabbox.WithStateDir(state))...)
	require.NoError(t, err)
	ctx := testCtx(t)
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	dir := filepath.Join(state, "leases", l.ID)
	st, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	for _, f := range []string{"id_ed25519", "host_key.pub"} {
		st, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err, f)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
	}
	require.NoError(t, l.Release(context.Background()))
	_, err = os.Stat(dir)
	assert.True(t, os.IsNotExist(err), "release removes the lease's keys")
}

func TestTouchAndExtend(t *testing.T) {
	cloud := crabboxtest.Start(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	c := localClient(t, cloud, crabbox.WithClock(clock))
	ctx := testCtx(t)
	l, err := c.Warmup(ctx, crabbox.WithTTL(time.Hour), crabbox.WithIdleTimeout(10*time.Minute))
	require.NoError(t, err)
	defer l.Release(context.Background())
	first := l.Expires

	now.Add(int64(5 * time.Minute))
	require.NoError(t, l.Touch(ctx))
	assert.Equal(t, first.Add(5*time.Minute), l.Expires, "touch moves the idle expiry")

	// Near the TTL the idle expiry is capped by it; Extend lifts the cap.
	now.Add(int64(54 * time.Minute))
	require.NoError(t, l.Touch(ctx))
	assert.Equal(t, l.Created.Add(time.Hour), l.Expires)
	require.NoError(t, l.Extend(ctx, time.Hour))
	assert.Equal(t, 2*time.Hour, l.TTL)
	assert.Equal(t, clock().UTC().Truncate(time.Second).Add(10*time.Minute), l.Expires)
	m, err := cloud.GetMachine(ctx, l.MachineID)
	require.NoError(t, err)
	assert.Equal(t, "7200", m.Labels[crabbox.LabelTTL])

	assert.ErrorIs(t, l.Extend(ctx, 0), crabbox.ErrInvalidArgument)
	now.Add(int64(3 * time.Hour))
	assert.ErrorIs(t, l.Touch(ctx), crabbox.ErrExpired)
}
