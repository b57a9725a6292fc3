// Tests of leases.go: re-attach, Reap, orphan sweeps.

package crabbox_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

type sweepingCloud struct {
	*crabboxtest.Cloud
	sweeps atomic.Int32
}

func (s *sweepingCloud) SweepOrphans(ctx context.Context) (int, error) {
	s.sweeps.Add(1)
	return 2, nil
}

func TestReapSweepsOrphans(t *testing.T) {
	cloud := crabboxtest.Start(t)
	sc := &sweepingCloud{Cloud: cloud}
	var swept atomic.Bool
	c := localClient(t, sc, crabbox.WithEvents(func(e crabbox.Event) {
		if e.Kind == crabbox.EventOrphansSwept {
			swept.Store(true)
		}
	}))
	_, err := c.Reap(testCtx(t))
	require.NoError(t, err)
	assert.EqualValues(t, 1, sc.sweeps.Load())
	assert.True(t, swept.Load())
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
