// Tests of the naming step of Warmup (lease.go): slugs stay unique among
// live leases when Warmups run concurrently.

package crabbox_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
)

// sameSlugCloud creates every machine with the same slug label, as when
// concurrent Warmups all listed the live leases before any created its
// machine and picked the same slug (2 in 20 blind picks do, with 960 base
// slugs, about one run in five).
type sameSlugCloud struct{ *crabboxtest.Cloud }

func (s sameSlugCloud) CreateMachine(ctx context.Context, req provider.CreateMachineRequest) (*provider.Machine, error) {
	labels := make(map[string]string, len(req.Labels))
	for k, v := range req.Labels {
		labels[k] = v
	}
	labels[crabbox.LabelSlug] = "amber-crab"
	req.Labels = labels
	return s.Cloud.CreateMachine(ctx, req)
}

// 20 concurrent Warmups (listing, picking and creating is not atomic, and
// there are only 960 base slugs) give 20 distinct slugs, each of which finds
// its own lease.
func TestConcurrentWarmupsGetDistinctSlugs(t *testing.T) {
	t.Run("local cloud", func(t *testing.T) { concurrentWarmupSlugs(t, crabboxtest.Start(t)) })
	t.Run("all picked the same slug", func(t *testing.T) { concurrentWarmupSlugs(t, sameSlugCloud{crabboxtest.Start(t)}) })
}

func concurrentWarmupSlugs(t *testing.T, drv provider.Driver) {
	c := localClient(t, drv)
	ctx := testCtx(t)
	const n = 20
	leases := make([]*crabbox.Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases[i], errs[i] = c.Warmup(ctx, crabbox.WithClass("small"))
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, l := range leases {
			if l != nil {
				_ = l.Release(context.Background())
			}
		}
	})
	for i := range n {
		require.NoError(t, errs[i], "warmup %d", i)
	}
	bySlug := map[string]string{}
	for _, l := range leases {
		if prev, dup := bySlug[l.Slug]; dup {
			t.Errorf("slug %s given to %s and %s", l.Slug, prev, l.ID)
		}
		bySlug[l.Slug] = l.ID
	}
	for slug, id := range bySlug {
		got, err := c.Lease(ctx, slug)
		if assert.NoError(t, err, slug) {
			assert.Equal(t, id, got.ID, slug)
			got.Close()
		}
	}
}
