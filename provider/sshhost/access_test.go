// Tests of access.go: MachineAccess.

package sshhost

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/crabbox/crabbox-go/provider"
)

func TestMachineAccess(t *testing.T) {
	for name, opts := range map[string][]Option{
		"memory": nil,
		"file":   {WithStateFile(filepath.Join(t.TempDir(), "s.json"))},
	} {
		t.Run(name, func(t *testing.T) { testMachineAccess(t, opts) })
	}
}

func testMachineAccess(t *testing.T, opts []Option) {
	ctx := t.Context()
	hosts := testHosts(t, 2)
	hosts[1].WorkRoot = "/srv/work"
	d := mustNew(t, hosts, opts...)
	m1, _ := d.CreateMachine(ctx, provider.CreateMachineRequest{})
	m2, _ := d.CreateMachine(ctx, provider.CreateMachineRequest{})
	for i, m := range []*provider.Machine{m1, m2} {
		acc, err := d.MachineAccess(ctx, m)
		if err != nil {
			t.Fatalf("MachineAccess(%s): %v", m.ID, err)
		}
		h := hosts[i]
		if acc.User != h.User || acc.Signer != h.Signer || string(acc.HostKey.Marshal()) != string(h.HostKey.Marshal()) || acc.WorkRoot != h.WorkRoot {
			t.Errorf("MachineAccess(%s) = %+v: want host %d's credentials %+v", m.ID, acc, i, h)
		}
	}
	if err := d.DeleteMachine(ctx, m1.ID); err != nil {
		t.Fatal(err)
	}
	if acc, err := d.MachineAccess(ctx, m1); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("MachineAccess of a freed machine = %+v, %v: want ErrNotFound", acc, err)
	}
	if acc, err := d.MachineAccess(ctx, nil); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("MachineAccess(nil) = %+v, %v: want ErrInvalidArgument", acc, err)
	}
}
