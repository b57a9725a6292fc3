package awsec2_test

import (
	"context"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/internal/testenv/awsbox"
	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
	"github.com/crabbox/crabbox-go/provider/providertest"
)

// copyRegion is the region the RegionCopier subtest copies to.
const copyRegion = "eu-west-1"

func TestConformance(t *testing.T) {
	e, clk := sweepEnv(t, awsec2.WithAdoptWait(2*time.Second))
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
		Dial:             awsbox.New(t, e.ec2).Dial,
		Inject:           e.inject,
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

// awsFaults are the EC2 errors for the suite's fault kinds.
var awsFaults = map[providertest.FaultKind]moto.Fault{
	providertest.FaultCapacity:   {Code: "InsufficientInstanceCapacity", Status: 500},
	providertest.FaultQuota:      {Code: "InstanceLimitExceeded", Status: 400},
	providertest.FaultThrottled:  {Code: "RequestLimitExceeded", Status: 503},
	providertest.FaultPermission: {Code: "UnauthorizedOperation", Status: 403},
	providertest.FaultLostReply:  {Code: "InternalError", Status: 500, After: true, Times: 1},
}

// inject is the suite's fault hook on moto: the call's create request
// (RunInstances, CreateImage) fails.
func (e *env) inject(call string, kind providertest.FaultKind) (func(), error) {
	f, ok := awsFaults[kind]
	if !ok {
		return nil, provider.Errorf(provider.ErrUnsupported, "no EC2 fault for %s", kind)
	}
	switch call {
	case providertest.CallCreateMachine:
		f.Action = "RunInstances"
	case providertest.CallCreateImage:
		f.Action = "CreateImage"
	default:
		return nil, provider.Errorf(provider.ErrUnsupported, "no EC2 fault for %s", call)
	}
	if f.Times == 0 {
		f.Times = 1000
	}
	e.faults.Add(f)
	return e.faults.Clear, nil
}
