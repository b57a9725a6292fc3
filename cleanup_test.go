// Tests of cleanup.go through a client: Apply on the local cloud.

package crabbox_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
)

func TestApplySkipsImagesPromotedSincePlanning(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	stale := bake(t, ctx, c, "stale")
	later := localClient(t, cloud, crabbox.WithClock(func() time.Time { return time.Now().Add(7 * 24 * time.Hour) }))
	plan, err := later.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	require.NoError(t, err)
	require.Equal(t, 1, plan.Deletes)
	// Between plan and apply, someone promotes it.
	_, err = c.Promote(ctx, stale.ID, crabbox.WithProof(proveImage(t, ctx, c, stale.ID)))
	require.NoError(t, err)
	res, err := plan.Apply(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{stale.ID}, res.Skipped)
	assert.Empty(t, res.Deleted)
	_, err = c.GetImage(ctx, stale.ID)
	assert.NoError(t, err)
}

func TestCleanupApplyKeepsPromotedAndDeletesStale(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	stale := bake(t, ctx, c, "stale")
	_, err := c.Promote(ctx, a.ID, crabbox.WithProof(proveImage(t, ctx, c, a.ID)))
	require.NoError(t, err)
	before := cloud.ImageCount()

	// Today nothing is old enough.
	plan, err := c.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	require.NoError(t, err)
	assert.Equal(t, 0, plan.Deletes)

	// A week later the never-promoted candidate is stale.
	later := localClient(t, cloud, crabbox.WithClock(func() time.Time { return time.Now().Add(7 * 24 * time.Hour) }))
	plan, err = later.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	require.NoError(t, err)
	byID := map[string]crabbox.CleanupItem{}
	for _, it := range plan.Items {
		byID[it.Image.ID] = it
	}
	assert.Equal(t, crabbox.ActionDelete, byID[stale.ID].Action)
	assert.Equal(t, crabbox.ActionKeep, byID[a.ID].Action)
	assert.Equal(t, crabbox.ActionKeep, byID[crabboxtest.BaseImageID].Action)
	assert.Equal(t, 1, plan.SnapshotsFreed)
	b, err := json.Marshal(plan)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"action":"delete"`)

	res, err := plan.Apply(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{stale.ID}, res.Deleted)
	assert.Equal(t, before-1, cloud.ImageCount())
	_, err = c.GetImage(ctx, stale.ID)
	assert.ErrorIs(t, err, crabbox.ErrNotFound)
	_, err = c.GetImage(ctx, a.ID)
	assert.NoError(t, err)

	var zero crabbox.CleanupPlan
	_, err = zero.Apply(ctx)
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
}

// noUsage is the local cloud without its provider.UsageFinder.
type noUsage struct {
	provider.Driver
	provider.Images
	provider.Channels
}

// TestCleanupKeepsImagesWhenUseIsUnknowable: a provider that cannot say
// what uses images gets every image cleanup would delete kept, with the
// reason, instead of deleted unchecked.
func TestCleanupKeepsImagesWhenUseIsUnknowable(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	stale := bake(t, ctx, c, "stale")
	later := localClient(t, noUsage{cloud, cloud, cloud}, crabbox.WithClock(func() time.Time { return time.Now().Add(7 * 24 * time.Hour) }))
	require.False(t, later.Capabilities().UsageFinder)
	plan, err := later.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	require.NoError(t, err)
	assert.Zero(t, plan.Deletes)
	found := false
	for _, it := range plan.Items {
		if it.Image.ID == stale.ID {
			found = true
			assert.Equal(t, crabbox.ActionKeep, it.Action)
			assert.Contains(t, it.Reason, "use unknown")
			assert.Contains(t, it.Reason, "UsageFinder")
		}
	}
	assert.True(t, found, "the stale candidate is in the plan: %+v", plan.Items)
}

// cooldownCloud is the local cloud refusing every deletion because the
// image's lifted protection is still in its cooldown (as AWS does for 24
// hours after protection enabled with cooldown is disabled).
type cooldownCloud struct {
	*crabboxtest.Cloud
	until time.Time
}

func (c cooldownCloud) DeleteImage(_ context.Context, id string) error {
	return &provider.CooldownError{ImageID: id, Until: c.until}
}

// TestCleanupKeepsImagesInProtectionCooldown: a deletion refused with a
// provider.CooldownError is reported kept with the cooldown's end, not
// failed, and the image stays.
func TestCleanupKeepsImagesInProtectionCooldown(t *testing.T) {
	for _, tc := range []struct {
		until time.Time
		want  string
	}{
		{time.Date(2026, 12, 3, 1, 42, 0, 0, time.UTC), "deregistration protection in cooldown until 2026-12-03T01:42:00Z"},
		{time.Time{}, "deregistration protection in cooldown (end unknown)"},
	} {
		cloud := crabboxtest.Start(t)
		c := localClient(t, cloud)
		ctx := testCtx(t)
		stale := bake(t, ctx, c, "stale")
		later := localClient(t, cooldownCloud{cloud, tc.until}, crabbox.WithClock(func() time.Time { return time.Now().Add(7 * 24 * time.Hour) }))
		plan, err := later.PlanCleanup(ctx, crabbox.CleanupPolicy{})
		require.NoError(t, err)
		require.Equal(t, 1, plan.Deletes)
		res, err := plan.Apply(ctx)
		require.NoError(t, err)
		assert.Empty(t, res.Failed)
		assert.Equal(t, []string{stale.ID}, res.Skipped)
		require.Len(t, res.Outcomes, 1)
		assert.Equal(t, crabbox.ResultKept, res.Outcomes[0].Result)
		assert.Equal(t, tc.want, res.Outcomes[0].Reason)
		_, err = c.GetImage(ctx, stale.ID)
		assert.NoError(t, err)
	}
}
