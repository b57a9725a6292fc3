package hetzner_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake/sshbox"
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
	boxes := sshbox.New(t)
	e := newEnv(t, boxes.Options(hcloudfake.Options{}), 2, hetzner.WithClock(now), hetzner.WithAdoptWait(2*time.Second))
	providertest.Run(t, providertest.Harness{
		Driver:       e.d,
		PollInterval: time.Millisecond,
		Timeout:      30 * time.Second,
		Inject:       e.inject,
		Dial:         e.fake.Dial,
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

// hetznerFaults are the Hetzner API errors for the suite's fault kinds.
var hetznerFaults = map[providertest.FaultKind]hcloudfake.Fault{
	providertest.FaultCapacity:   {Code: "resource_unavailable"},
	providertest.FaultQuota:      {Code: "resource_limit_exceeded"},
	providertest.FaultThrottled:  {Code: "rate_limit_exceeded"},
	providertest.FaultPermission: {Code: "forbidden"},
	providertest.FaultLostReply:  {Code: "server_error", After: true},
}

// inject is the suite's fault hook on the fake: the create request of call
// (POST /servers, POST /servers/{id}/actions/create_image) fails.
func (e *env) inject(call string, kind providertest.FaultKind) (func(), error) {
	f, ok := hetznerFaults[kind]
	if !ok {
		return nil, provider.Errorf(provider.ErrUnsupported, "no Hetzner fault for %s", kind)
	}
	f.Method = "POST"
	switch call {
	case providertest.CallCreateMachine:
		f.Path = "/servers"
	case providertest.CallCreateImage:
		f.Path = "/servers/*/actions/create_image"
	default:
		return nil, provider.Errorf(provider.ErrUnsupported, "no Hetzner fault for %s", call)
	}
	if !f.After {
		f.Times = 1000
	}
	e.fake.InjectFault(f)
	return e.fake.ClearFaults, nil
}
