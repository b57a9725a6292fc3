package awsec2_test

import (
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider/providertest"
)

func TestConformance(t *testing.T) {
	e := newEnv(t)
	providertest.Run(t, providertest.Harness{
		Driver:       e.d,
		MachineType:  "t3.small",
		PollInterval: 10 * time.Millisecond,
		Timeout:      time.Minute,
	})
	e.expectClean()
}
