// Tests of cleanup under concurrency on the local cloud: Promote racing
// Apply (forced interleavings and free-running rounds), a lease booted from
// an image after the plan, and images vanishing while a plan is made.

package crabbox_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
)

// hookedCloud is the local cloud with a hook run before (and after) chosen
// driver calls, to force an interleaving at that point.
type hookedCloud struct {
	*crabboxtest.Cloud
	mu   sync.Mutex
	hook map[string]func(id string) // by call: "get", "usage", "delete", "deleted"
}

func (h *hookedCloud) run(call, id string) {
	h.mu.Lock()
	f := h.hook[call]
	h.mu.Unlock()
	if f != nil {
		f(id)
	}
}

func (h *hookedCloud) set(call string, f func(id string)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hook == nil {
		h.hook = map[string]func(string){}
	}
	h.hook[call] = f
}

func (h *hookedCloud) GetImage(ctx context.Context, id string) (*provider.Image, error) {
	h.run("get", id)
	return h.Cloud.GetImage(ctx, id)
}

func (h *hookedCloud) ImageUsage(ctx context.Context, id string) ([]string, error) {
	h.run("usage", id)
	return h.Cloud.ImageUsage(ctx, id)
}

func (h *hookedCloud) DeleteImage(ctx context.Context, id string) error {
	h.run("delete", id)
	err := h.Cloud.DeleteImage(ctx, id)
	h.run("deleted", id)
	return err
}

// raceFixture is a cloud with a promoted image and a source lease to image
// from; planner plans a week later, through the hooked driver.
type raceFixture struct {
	cloud   *crabboxtest.Cloud
	hooked  *hookedCloud
	c       *crabbox.Client // operator promoting, on the plain cloud
	planner *crabbox.Client // cleanup, a week later, on the hooked cloud
	src     *crabbox.Lease
	n       int
}

func newRaceFixture(t *testing.T, ctx context.Context) *raceFixture {
	f := &raceFixture{cloud: crabboxtest.Start(t)}
	f.hooked = &hookedCloud{Cloud: f.cloud}
	f.c = localClient(t, f.cloud)
	f.planner = localClient(t, f.hooked, crabbox.WithClock(func() time.Time { return time.Now().Add(7 * 24 * time.Hour) }))
	src, err := f.c.Warmup(ctx, crabbox.WithClass("small"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = src.Release(context.Background()) })
	f.src = src
	first := f.image(t, ctx)
	_, err = f.c.Promote(ctx, first.ID, crabbox.Force("race fixture"))
	require.NoError(t, err)
	return f
}

// image makes a new candidate image from the source lease.
func (f *raceFixture) image(t *testing.T, ctx context.Context) *crabbox.Image {
	t.Helper()
	f.n++
	img, err := f.c.CreateImage(ctx, f.src.ID, imageName(t, fmt.Sprintf("race%d", f.n)), crabbox.WithWait(time.Minute))
	require.NoError(t, err)
	return img
}

// planFor plans a week later and requires img to be marked for deletion.
func (f *raceFixture) planFor(t *testing.T, ctx context.Context, img *crabbox.Image) *crabbox.CleanupPlan {
	t.Helper()
	plan, err := f.planner.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	require.NoError(t, err)
	for _, it := range plan.Items {
		if it.Image.ID == img.ID {
			require.Equal(t, crabbox.ActionDelete, it.Action, it.Reason)
			return plan
		}
	}
	t.Fatalf("plan has no item for %s", img.ID)
	return nil
}

// channelServes requires the default channel to point at an image that
// exists, and returns it.
func (f *raceFixture) channelServes(t *testing.T, ctx context.Context) string {
	t.Helper()
	cur, err := f.cloud.CurrentChannel(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	_, err = f.cloud.GetImage(ctx, cur.ImageID)
	require.NoError(t, err, "channel %s points at deleted image %s", crabbox.DefaultChannel, cur.ImageID)
	return cur.ImageID
}

// TestPromoteRacingApplyForced promotes the image Apply is about to delete
// at each point of Apply's re-check, and right after the deletion: the
// channel never points at a deleted image, and an image promoted before the
// deletion landed is reported kept, not failed.
func TestPromoteRacingApplyForced(t *testing.T) {
	ctx := testCtx(t)
	f := newRaceFixture(t, ctx)
	points := []string{"get", "usage", "delete", "deleted"}
	for round := 0; round < 52; round++ {
		point := points[round%len(points)]
		img := f.image(t, ctx)
		plan := f.planFor(t, ctx, img)
		var promoteErr error
		var once sync.Once
		f.hooked.set(point, func(id string) {
			if id != img.ID {
				return
			}
			once.Do(func() { _, promoteErr = f.c.Promote(ctx, img.ID, crabbox.Force("race")) })
		})
		res, err := plan.Apply(ctx)
		f.hooked.set(point, nil)
		require.NoError(t, err, "round %d (%s)", round, point)
		assert.Empty(t, res.Failed, "round %d (%s): %+v", round, point, res)
		serving := f.channelServes(t, ctx)
		if point == "deleted" {
			require.Error(t, promoteErr, "round %d: promoting a deleted image", round)
			assert.Equal(t, []string{img.ID}, res.Deleted, "round %d", round)
			assert.NotEqual(t, img.ID, serving)
			continue
		}
		require.NoError(t, promoteErr, "round %d (%s)", round, point)
		assert.Equal(t, img.ID, serving, "round %d (%s)", round, point)
		assert.Equal(t, []string{img.ID}, res.Skipped, "round %d (%s): want kept: %+v", round, point, res)
		for _, o := range res.Outcomes {
			assert.Equal(t, crabbox.ResultKept, o.Result, "round %d (%s)", round, point)
			assert.NotEmpty(t, o.Reason)
		}
	}
}

// TestPromoteRacingApplyFree runs Promote and Apply of the same image at the
// same time, unforced: whichever wins, the channel points at an image that
// exists, nothing is reported failed, and a promoted image survives.
func TestPromoteRacingApplyFree(t *testing.T) {
	ctx := testCtx(t)
	f := newRaceFixture(t, ctx)
	for round := 0; round < 50; round++ {
		img := f.image(t, ctx)
		plan := f.planFor(t, ctx, img)
		start := make(chan struct{})
		var wg sync.WaitGroup
		var res *crabbox.CleanupResult
		var applyErr, promoteErr error
		wg.Add(2)
		go func() { defer wg.Done(); <-start; res, applyErr = plan.Apply(ctx) }()
		go func() { defer wg.Done(); <-start; _, promoteErr = f.c.Promote(ctx, img.ID, crabbox.Force("race")) }()
		close(start)
		wg.Wait()
		require.NoError(t, applyErr, "round %d", round)
		assert.Empty(t, res.Failed, "round %d: %+v", round, res)
		serving := f.channelServes(t, ctx)
		if promoteErr == nil {
			assert.Equal(t, img.ID, serving, "round %d", round)
			assert.Equal(t, []string{img.ID}, res.Skipped, "round %d", round)
		} else {
			assert.Equal(t, []string{img.ID}, res.Deleted, "round %d: promote failed (%v) but the image was not deleted", round, promoteErr)
		}
	}
}

// TestApplyKeepsImageUsedAfterPlan boots a lease from an image after the
// plan marked it for deletion: Apply keeps it.
func TestApplyKeepsImageUsedAfterPlan(t *testing.T) {
	ctx := testCtx(t)
	f := newRaceFixture(t, ctx)
	img := f.image(t, ctx)
	plan := f.planFor(t, ctx, img)
	l, err := f.c.Warmup(ctx, crabbox.WithImage(img.ID), crabbox.WithClass("small"))
	require.NoError(t, err)
	defer l.Release(context.Background())
	res, err := plan.Apply(ctx)
	require.NoError(t, err)
	assert.Empty(t, res.Deleted)
	assert.Equal(t, []string{img.ID}, res.Skipped)
	_, err = f.c.GetImage(ctx, img.ID)
	require.NoError(t, err)
	require.Len(t, res.Outcomes, 1)
	assert.Contains(t, res.Outcomes[0].Reason, "in use by machine "+l.MachineID)
}

// TestPlanCleanupToleratesVanishingImages deletes an image between the
// listing and its usage lookup (another cleanup ran): the plan is made and
// reports it, and applying the plan changes nothing for it.
func TestPlanCleanupToleratesVanishingImages(t *testing.T) {
	ctx := testCtx(t)
	f := newRaceFixture(t, ctx)
	gone := f.image(t, ctx)
	stays := f.image(t, ctx)
	f.hooked.set("usage", func(id string) {
		if id == gone.ID {
			require.NoError(t, f.cloud.DeleteImage(ctx, id))
		}
	})
	plan, err := f.planner.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	f.hooked.set("usage", nil)
	require.NoError(t, err)
	byID := map[string]crabbox.CleanupItem{}
	for _, it := range plan.Items {
		byID[it.Image.ID] = it
	}
	assert.Equal(t, crabbox.ActionKeep, byID[gone.ID].Action)
	assert.Contains(t, byID[gone.ID].Reason, "vanished")
	assert.Equal(t, crabbox.ActionDelete, byID[stays.ID].Action)
	res, err := plan.Apply(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{stays.ID}, res.Deleted)
}
