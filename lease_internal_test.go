package crabbox

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
)

// takenSlugs reports, besides the real machines, a live lease for every
// base slug there is, so any new lease's slug collides.
type takenSlugs struct{ *crabboxtest.Cloud }

func (d takenSlugs) ListMachines(ctx context.Context, labels map[string]string) ([]*provider.Machine, error) {
	ms, err := d.Cloud.ListMachines(ctx, labels)
	if err != nil || labels[LabelLease] != "" || labels[LabelSlug] != "" {
		return ms, err
	}
	for _, a := range slugAdjectives {
		for _, n := range slugCrustaceans {
			ms = append(ms, &provider.Machine{ID: "other-" + a + n, State: provider.MachineRunning,
				Labels: map[string]string{LabelManaged: "true", LabelSlug: a + "-" + n}})
		}
	}
	return ms, nil
}

func TestWarmupSlugUniqueAmongLiveLeases(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c, err := New(takenSlugs{cloud}, WithStateDir(t.TempDir()), WithPollBackoff(ConstantBackoff(10*time.Millisecond)))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer l.Release(context.Background())
	assert.Equal(t, LeaseSlug(l.ID)+"-2", l.Slug, "a slug taken by a live lease gets a suffix")
	got, err := c.Lease(ctx, l.Slug)
	require.NoError(t, err)
	assert.Equal(t, l.ID, got.ID)
}
