package refdriver_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/providertest"
	"github.com/crabbox/crabbox-go/provider/providertest/refdriver"
)

// clock is real time plus an offset the test moves.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

func mustNew(t *testing.T, opts ...refdriver.Option) *refdriver.Driver {
	t.Helper()
	d, err := refdriver.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestConformance runs the whole suite, no subtest skipped.
func TestConformance(t *testing.T) {
	clk := &clock{}
	peer := mustNew(t, refdriver.WithRegion("ref-2"))
	d := mustNew(t, refdriver.WithClock(clk.now), refdriver.WithRegionPeer("ref-2", peer))
	providertest.Run(t, providertest.Harness{
		Driver:           d,
		PollInterval:     time.Millisecond,
		Timeout:          10 * time.Second,
		CopyRegion:       "ref-2",
		CopyRegionImages: peer,
		Inject: func(call string, kind providertest.FaultKind) (func(), error) {
			return d.Inject(call, string(kind))
		},
		Orphans: &providertest.OrphanHooks{
			Vanish: func(ctx context.Context, m *provider.Machine) error { return d.Vanish(m.ID) },
			Leftover: func(ctx context.Context, m *provider.Machine, token string) (bool, error) {
				return d.HasKey(token), nil
			},
			PassGrace: func() { clk.advance(refdriver.DefaultOrphanGrace + time.Minute) },
		},
	})
	for _, dr := range []*refdriver.Driver{d, peer} {
		if ms, err := dr.ListMachines(context.Background(), nil); err != nil || len(ms) != 0 {
			t.Errorf("the suite left machines %v (%v)", ms, err)
		}
		if ims, err := dr.ListImages(context.Background(), nil); err != nil || len(ims) != 0 {
			t.Errorf("the suite left images %v (%v)", ims, err)
		}
	}
}
