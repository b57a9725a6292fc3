// Tests of Reap's bound on leases stuck in creating, and of the readiness
// deadline Warmup records for it.

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
	"github.com/crabbox/crabbox-go/provider"
)

const labelTime = "20060102T150405Z"

// A lease still labelled creating 35 minutes after its creation, whose
// readiness deadline (20 minutes) plus the creating grace (10 minutes) has
// passed, is reaped; one whose Warmup may still wait for it (a 45-minute
// desktop readiness) is not, and neither is one without a recorded
// deadline (left for an hour, as before).
func TestReapReleasesLeaseStuckCreating(t *testing.T) {
	cloud := crabboxtest.Start(t)
	ctx := testCtx(t)
	c := localClient(t, cloud)
	created := time.Now().UTC().Add(-35 * time.Minute).Truncate(time.Second)
	// mk leases a machine and labels it as a Warmup that never finished
	// would have left it.
	mk := func(readyIn time.Duration) string {
		l, err := c.Warmup(ctx)
		require.NoError(t, err)
		labels := map[string]string{crabbox.LabelState: "creating", crabbox.LabelCreated: created.Format(labelTime),
			crabbox.LabelExpires: created.Add(2 * time.Hour).Format(labelTime), "crabbox-ready-by": ""}
		if readyIn > 0 {
			labels["crabbox-ready-by"] = created.Add(readyIn).Format(labelTime)
		}
		require.NoError(t, cloud.UpdateMachineLabels(ctx, l.MachineID, labels))
		l.Close()
		return l.ID
	}
	stuck := mk(20 * time.Minute)
	mk(45 * time.Minute)
	mk(0)
	reaped, err := c.Reap(ctx)
	require.NoError(t, err)
	var ids []string
	for _, l := range reaped {
		ids = append(ids, l.ID)
	}
	assert.Equal(t, []string{stuck}, ids)

	// A shorter grace does not reap the lease still within its readiness.
	short := localClient(t, cloud, crabbox.WithCreatingGrace(time.Minute))
	reaped, err = short.Reap(ctx)
	require.NoError(t, err)
	assert.Empty(t, reaped)
}

// Warmup records the lease's readiness deadline on its machine: its
// creation plus the ready timeout.
func TestWarmupRecordsReadinessDeadline(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	l, err := c.Warmup(ctx, crabbox.WithReadyTimeout(7*time.Minute))
	require.NoError(t, err)
	defer l.Release(ctx)
	m, err := cloud.GetMachine(ctx, l.MachineID)
	require.NoError(t, err)
	assert.Equal(t, l.Created.Add(7*time.Minute).UTC().Format(labelTime), m.Labels["crabbox-ready-by"])
}

func TestCleanupOptionsRejectNonPositive(t *testing.T) {
	for _, o := range []crabbox.Option{crabbox.WithCleanupTimeout(0), crabbox.WithCreatingGrace(-time.Second)} {
		_, err := crabbox.New(crabboxtest.Start(t), o)
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	}
}

// hangingCloud is a local cloud whose machines never become ready and whose
// DeleteMachine hangs until its context ends (a cloud API that stopped
// answering).
type hangingCloud struct {
	*crabboxtest.Cloud
	deletes atomic.Int32
}

func (h *hangingCloud) GetMachine(ctx context.Context, id string) (*provider.Machine, error) {
	m, err := h.Cloud.GetMachine(ctx, id)
	if err == nil {
		m.State = provider.MachinePending
	}
	return m, err
}

func (h *hangingCloud) DeleteMachine(ctx context.Context, id string) error {
	h.deletes.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

// When the caller's deadline lands in the readiness wait and the cloud API
// then hangs, Warmup returns within the cleanup timeout the caller set, with
// the lease (its machine may still run) and the deadline's error.
func TestWarmupCleanupBoundedWhenAPIHangs(t *testing.T) {
	cloud := &hangingCloud{Cloud: crabboxtest.Start(t)}
	c := localClient(t, cloud, crabbox.WithCleanupTimeout(300*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	l, err := c.Warmup(ctx)
	took := time.Since(start)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotNil(t, l, "the release did not finish: the lease must come back")
	assert.EqualValues(t, 1, cloud.deletes.Load())
	assert.Less(t, took, 500*time.Millisecond+300*time.Millisecond+time.Second, "Warmup took %v", took)
	require.NoError(t, cloud.Cloud.DeleteMachine(context.Background(), l.MachineID))
}
