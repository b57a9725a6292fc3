package crabboxtest

import (
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider/providertest"
)

func TestConformance(t *testing.T) {
	c := Start(t)
	providertest.Run(t, providertest.Harness{Driver: c, PollInterval: 10 * time.Millisecond, Timeout: time.Minute})
	if n := c.MachineCount(); n != 0 {
		t.Errorf("the suite left %d machines", n)
	}
	if n := c.ImageCount(); n != 0 {
		t.Errorf("the suite left %d images", n)
	}
}

func TestConformanceBootDelay(t *testing.T) {
	c := Start(t, WithBootDelay(100*time.Millisecond), WithImagePendingPolls(3))
	providertest.Run(t, providertest.Harness{Driver: c, PollInterval: 10 * time.Millisecond, Timeout: time.Minute})
}
