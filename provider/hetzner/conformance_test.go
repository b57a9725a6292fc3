package hetzner_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
	"github.com/crabbox/crabbox-go/provider/providertest"
)

// TestConformance runs the whole suite against the driver on the Hetzner
// fake, on a clock the OrphanSweeper subtest moves: its servers vanish
// through the raw API, leaving their SSH keys.
func TestConformance(t *testing.T) {
	var mu sync.Mutex
	var off time.Duration
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return time.Now().Add(off)
	}
	e := newEnv(t, hcloudfake.Options{}, 2, hetzner.WithClock(now))
	providertest.Run(t, providertest.Harness{
		Driver:       e.d,
		PollInterval: time.Millisecond,
		Timeout:      30 * time.Second,
		Orphans: &providertest.OrphanHooks{
			Vanish: func(ctx context.Context, m *provider.Machine) error {
				id, err := strconv.ParseInt(m.ID, 10, 64)
				if err != nil {
					return err
				}
				_, _, err = e.client.Server.DeleteWithResult(ctx, &hcloud.Server{ID: id})
				return err
			},
			Leftover: func(ctx context.Context, m *provider.Machine, token string) (bool, error) {
				for _, k := range e.fake.SSHKeys() {
					if k.Labels[hetzner.LabelToken] == hetzner.SanitizeLabelValue(token) {
						return true, nil
					}
				}
				return false, nil
			},
			PassGrace: func() {
				mu.Lock()
				defer mu.Unlock()
				off += time.Hour
			},
		},
	})
	// The suite cleans up after itself: the fake must be empty.
	if st := e.fake.State(); st.Servers != 0 || st.Images != 0 || st.SSHKeys != 0 {
		t.Fatalf("conformance run left resources behind: %+v (keys %+v)", st, e.fake.SSHKeys())
	}
}
