package crabbox_test

// Tests of cleanup at scale (issue 12): PlanCleanup's batched usage
// lookups (provider.BatchUsageFinder) keep every cleanup rule, and Apply's
// bounded concurrency keeps plan order and stops on cancellation.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
)

// batchCloud is the local cloud's batched usage with a hook before each
// batch, counting the batch and single lookups and the deletions in flight.
type batchCloud struct {
	crabboxtest.BatchUsage
	mu                    sync.Mutex
	batch                 func(ctx context.Context, ids []string) (map[string]provider.ImageUse, error)
	onDelete              func(id string)
	batches, singles      atomic.Int32
	inFlight, maxInFlight atomic.Int32
	deleteDelay           time.Duration
}

func (b *batchCloud) ImagesUsage(ctx context.Context, ids []string) (map[string]provider.ImageUse, error) {
	b.batches.Add(1)
	b.mu.Lock()
	f := b.batch
	b.mu.Unlock()
	if f != nil {
		return f(ctx, ids)
	}
	return b.BatchUsage.ImagesUsage(ctx, ids)
}

func (b *batchCloud) ImageUsage(ctx context.Context, id string) ([]string, error) {
	b.singles.Add(1)
	return b.BatchUsage.ImageUsage(ctx, id)
}

func (b *batchCloud) DeleteImage(ctx context.Context, id string) error {
	n := b.inFlight.Add(1)
	defer b.inFlight.Add(-1)
	for {
		m := b.maxInFlight.Load()
		if n <= m || b.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(b.deleteDelay)
	err := b.BatchUsage.DeleteImage(ctx, id)
	if b.onDelete != nil {
		b.onDelete(id)
	}
	return err
}

// scaleFixture is the race fixture's cloud with n stale candidates and a
// planner a week later on the batched driver.
func scaleFixture(t *testing.T, ctx context.Context, n int) (*raceFixture, *batchCloud, *crabbox.Client, []*crabbox.Image) {
	t.Helper()
	f := newRaceFixture(t, ctx)
	var imgs []*crabbox.Image
	for range n {
		imgs = append(imgs, f.image(t, ctx))
	}
	bc := &batchCloud{BatchUsage: crabboxtest.BatchUsage{Cloud: f.cloud}}
	planner := localClient(t, bc, crabbox.WithClock(func() time.Time { return time.Now().Add(7 * 24 * time.Hour) }))
	require.True(t, planner.Capabilities().BatchUsageFinder)
	return f, bc, planner, imgs
}

func byID(plan *crabbox.CleanupPlan) map[string]crabbox.CleanupItem {
	m := map[string]crabbox.CleanupItem{}
	for _, it := range plan.Items {
		m[it.Image.ID] = it
	}
	return m
}

// TestPlanCleanupBatchedUsage: one batch call answers for every owned
// image, no single lookups, and the plan equals the single-id planner's.
func TestPlanCleanupBatchedUsage(t *testing.T) {
	ctx := testCtx(t)
	f, bc, planner, imgs := scaleFixture(t, ctx, 3)
	l, err := f.c.Warmup(ctx, crabbox.WithImage(imgs[1].ID), crabbox.WithClass("small"))
	require.NoError(t, err)
	defer l.Release(context.Background())
	plan, err := planner.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	require.NoError(t, err)
	assert.EqualValues(t, 1, bc.batches.Load(), "batch calls")
	assert.EqualValues(t, 0, bc.singles.Load(), "single lookups")
	single, err := f.planner.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	require.NoError(t, err)
	got, want := byID(plan), byID(single)
	require.Len(t, got, len(want))
	for id, w := range want {
		assert.Equal(t, w.Action, got[id].Action, id)
		assert.Equal(t, w.Reason, got[id].Reason, id)
	}
	assert.Contains(t, got[imgs[1].ID].Reason, "in use by machine "+l.MachineID)
	assert.Equal(t, crabbox.ActionDelete, got[imgs[0].ID].Action)
}

// TestPlanCleanupBatchedUsageRules: an image deleted during the batch
// lookup is reported vanished; an image the batch leaves out, or whose
// entry is an error, is of unknown use (kept); a batch call that fails as a
// whole falls back to the per-image lookups.
func TestPlanCleanupBatchedUsageRules(t *testing.T) {
	ctx := testCtx(t)
	f, bc, planner, imgs := scaleFixture(t, ctx, 4)
	gone, omitted, broken, fine := imgs[0].ID, imgs[1].ID, imgs[2].ID, imgs[3].ID
	bc.batch = func(ctx context.Context, ids []string) (map[string]provider.ImageUse, error) {
		require.NoError(t, f.cloud.DeleteImage(ctx, gone))
		use, err := bc.BatchUsage.ImagesUsage(ctx, ids)
		delete(use, omitted)
		use[broken] = provider.ImageUse{Err: provider.Errorf(provider.ErrUnavailable, "backend hiccup")}
		return use, err
	}
	plan, err := planner.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	require.NoError(t, err)
	got := byID(plan)
	assert.Contains(t, got[gone].Reason, "vanished")
	assert.Equal(t, crabbox.ActionKeep, got[omitted].Action)
	assert.Contains(t, got[omitted].Reason, "use unknown")
	assert.Equal(t, crabbox.ActionKeep, got[broken].Action)
	assert.Contains(t, got[broken].Reason, "use unknown (")
	assert.Equal(t, crabbox.ActionDelete, got[fine].Action)
	assert.EqualValues(t, 0, bc.singles.Load())

	bc.batch = func(context.Context, []string) (map[string]provider.ImageUse, error) {
		return nil, errors.New("batch refused")
	}
	plan, err = planner.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	require.NoError(t, err)
	assert.Equal(t, crabbox.ActionDelete, byID(plan)[fine].Action, "the per-image lookups answer when the batch fails")
	assert.Positive(t, bc.singles.Load())
}

// TestApplyConcurrencyBoundedInPlanOrder: at most ApplyConcurrency
// deletions run at once, and the outcomes come in plan order.
func TestApplyConcurrencyBoundedInPlanOrder(t *testing.T) {
	ctx := testCtx(t)
	_, bc, planner, imgs := scaleFixture(t, ctx, 5)
	bc.deleteDelay = 20 * time.Millisecond
	plan, err := planner.PlanCleanup(ctx, crabbox.CleanupPolicy{ApplyConcurrency: 2})
	require.NoError(t, err)
	res, err := plan.Apply(ctx)
	require.NoError(t, err)
	assert.LessOrEqual(t, bc.maxInFlight.Load(), int32(2))
	var want []string
	for _, it := range plan.Items {
		if it.Action == crabbox.ActionDelete {
			want = append(want, it.Image.ID)
		}
	}
	assert.Len(t, want, len(imgs))
	var got []string
	for _, o := range res.Outcomes {
		got = append(got, o.ImageID)
	}
	assert.Equal(t, want, got)
	assert.Equal(t, want, res.Deleted)
}

// TestApplyStopsOnCancellation: once ctx is done, Apply starts no further
// deletion (serial Apply, ctx cancelled by the first deletion); the images
// not started are reported failed with the context's error and remain.
func TestApplyStopsOnCancellation(t *testing.T) {
	ctx := testCtx(t)
	f, bc, planner, imgs := scaleFixture(t, ctx, 3)
	plan, err := planner.PlanCleanup(ctx, crabbox.CleanupPolicy{ApplyConcurrency: 1})
	require.NoError(t, err)
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var deletes atomic.Int32
	bc.onDelete = func(string) { deletes.Add(1); cancel() }
	res, err := plan.Apply(actx)
	require.ErrorIs(t, err, context.Canceled)
	assert.EqualValues(t, 1, deletes.Load(), "deletions started")
	require.Len(t, res.Outcomes, len(imgs))
	assert.Equal(t, crabbox.ResultDeleted, res.Outcomes[0].Result)
	for _, o := range res.Outcomes[1:] {
		assert.Equal(t, crabbox.ResultFailed, o.Result)
		_, err := f.cloud.GetImage(ctx, o.ImageID)
		assert.NoError(t, err, "image %s not started must remain", o.ImageID)
	}
}
