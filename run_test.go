// Tests of run.go against a real sshd: Run, streaming, exit codes, a dying box, cancellation.

package crabbox_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

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
