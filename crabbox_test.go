// Tests of crabbox.go: New and the client options, backoffs, logging.

package crabbox_test

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
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

func TestSilentByDefault(t *testing.T) {
	cloud := crabboxtest.Start(t)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	saved := os.Stderr
	os.Stderr = w
	var out strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _, _ = io.Copy(&out, r) }()
	func() {
		defer func() { os.Stderr = saved }()
		c, err := crabbox.New(cloud, append(fast(), crabbox.WithStateDir(t.TempDir()))...)
		require.NoError(t, err)
		ctx := testCtx(t)
		l, err := c.Warmup(ctx)
		require.NoError(t, err)
		_, _ = l.Run(ctx, "exit 3")
		require.NoError(t, l.Release(ctx))
	}()
	w.Close()
	wg.Wait()
	assert.Empty(t, out.String(), "the SDK wrote to stderr without a logger")
}
