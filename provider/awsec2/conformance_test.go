package awsec2_test

import (
	"context"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
	"github.com/crabbox/crabbox-go/provider/providertest"
)

// copyRegion is the region the RegionCopier subtest copies to.
const copyRegion = "eu-west-1"

func TestConformance(t *testing.T) {
	e, clk := sweepEnv(t)
	eu, err := newRecordedDriver(e.cfg, awsec2.WithEndpoint(motoSrv.Endpoint), awsec2.WithRegion(copyRegion),
		awsec2.WithCleanupBackoff(time.Millisecond, 5*time.Millisecond, 6))
	if err != nil {
		t.Fatal(err)
	}
	providertest.Run(t, providertest.Harness{
		Driver:           e.d,
		MachineType:      "t3.small",
		PollInterval:     10 * time.Millisecond,
		Timeout:          time.Minute,
		CopyRegion:       copyRegion,
		CopyRegionImages: eu,
		Orphans: &providertest.OrphanHooks{
			Vanish: func(ctx context.Context, m *provider.Machine) error {
				e.terminateBehindBack(m.ID, true)
				return nil
			},
			Leftover: func(ctx context.Context, m *provider.Machine, token string) (bool, error) {
				return e.hasKey("crabbox-" + token), nil
			},
			PassGrace: func() { clk.advance(time.Hour) },
		},
	})
	e.expectClean("us-east-1", copyRegion)
}
