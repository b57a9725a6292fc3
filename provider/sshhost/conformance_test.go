package sshhost

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider/providertest"
)

var conformanceSkips = map[string]string{
	providertest.SubtestImages:   "sshhost leases existing hosts and has no images",
	providertest.SubtestChannels: "sshhost has no images, so no channels",
}

func TestConformance(t *testing.T) {
	for name, opts := range map[string][]Option{
		"memory": nil,
		"file":   {WithStateFile(filepath.Join(t.TempDir(), "pool.json"))},
	} {
		t.Run(name, func(t *testing.T) {
			d := mustNew(t, testHosts(t, 2), opts...)
			providertest.Run(t, providertest.Harness{
				Driver:       d,
				PollInterval: time.Millisecond,
				Skip:         conformanceSkips,
			})
			if list, err := d.ListMachines(t.Context(), nil); err != nil || len(list) != 0 {
				t.Errorf("after the suite the pool still has allocations %v, %v", list, err)
			}
		})
	}
}
