// Tests of machines.go: allocating and freeing hosts.

package sshhost

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crabbox/crabbox-go/provider"
)

// drivers returns an in-memory driver and a state-file driver over the same
// hosts, to run a test against both stores.
func forEachStore(t *testing.T, n int, f func(t *testing.T, hosts []Host, d *Driver)) {
	t.Run("memory", func(t *testing.T) {
		hosts := testHosts(t, n)
		f(t, hosts, mustNew(t, hosts))
	})
	t.Run("file", func(t *testing.T) {
		hosts := testHosts(t, n)
		f(t, hosts, mustNew(t, hosts, WithStateFile(filepath.Join(t.TempDir(), "state", "pool.json"))))
	})
}

func TestAllocation(t *testing.T) {
	forEachStore(t, 2, func(t *testing.T, hosts []Host, d *Driver) {
		ctx := t.Context()
		m1, err := d.CreateMachine(ctx, provider.CreateMachineRequest{Name: "one", Labels: map[string]string{"k": "1"}, UserData: []byte("ignored")})
		if err != nil {
			t.Fatal(err)
		}
		m2, err := d.CreateMachine(ctx, provider.CreateMachineRequest{Name: "two", Type: MachineType, Image: BaseImageID, Labels: map[string]string{"k": "2"}})
		if err != nil {
			t.Fatal(err)
		}
		if m1.SSHAddr != hosts[0].Addr || m2.SSHAddr != hosts[1].Addr {
			t.Errorf("allocated %s and %s, want %s and %s in pool order", m1.SSHAddr, m2.SSHAddr, hosts[0].Addr, hosts[1].Addr)
		}
		if m1.ID == m2.ID || !strings.HasPrefix(m1.ID, idPrefix) {
			t.Errorf("ids %q and %q: want distinct ids with prefix %q", m1.ID, m2.ID, idPrefix)
		}
		if m1.State != provider.MachineRunning || m1.Type != MachineType || m1.Image != BaseImageID || m1.Name != "one" || m1.Labels["k"] != "1" {
			t.Errorf("machine = %+v", m1)
		}
		_, err = d.CreateMachine(ctx, provider.CreateMachineRequest{Name: "three"})
		if !errors.Is(err, provider.ErrCapacity) {
			t.Fatalf("third CreateMachine on a pool of 2: %v, want ErrCapacity", err)
		}
		if err := d.DeleteMachine(ctx, m1.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := d.GetMachine(ctx, m1.ID); !errors.Is(err, provider.ErrNotFound) {
			t.Errorf("GetMachine of a freed host: %v, want ErrNotFound", err)
		}
		m3, err := d.CreateMachine(ctx, provider.CreateMachineRequest{Name: "three"})
		if err != nil {
			t.Fatalf("CreateMachine after freeing a host: %v", err)
		}
		if m3.SSHAddr != hosts[0].Addr || m3.ID == m1.ID {
			t.Errorf("re-allocated %s as %s: want host %s under a new id", m3.SSHAddr, m3.ID, hosts[0].Addr)
		}
		list, err := d.ListMachines(ctx, map[string]string{"k": "2"})
		if err != nil || len(list) != 1 || list[0].ID != m2.ID {
			t.Errorf("ListMachines(k=2) = %v, %v: want only %s", list, err, m2.ID)
		}
		all, err := d.ListMachines(ctx, nil)
		if err != nil || len(all) != 2 {
			t.Errorf("ListMachines(nil) = %d machines, %v: want 2", len(all), err)
		}
		if err := d.UpdateMachineLabels(ctx, m2.ID, map[string]string{"k": "", "x": "y"}); err != nil {
			t.Fatal(err)
		}
		got, err := d.GetMachine(ctx, m2.ID)
		if err != nil || len(got.Labels) != 1 || got.Labels["x"] != "y" {
			t.Errorf("labels after update = %v, %v: want only x=y", got.Labels, err)
		}
	})
}

func TestCreateValidatesRequest(t *testing.T) {
	d := mustNew(t, testHosts(t, 1))
	for _, req := range []provider.CreateMachineRequest{
		{Type: "cx22"},
		{Image: "ami-0123456789abcdef0"},
	} {
		if m, err := d.CreateMachine(t.Context(), req); !errors.Is(err, provider.ErrInvalidArgument) || m != nil {
			t.Errorf("CreateMachine(%+v) = %v, %v: want ErrInvalidArgument", req, m, err)
		}
	}
	if list, _ := d.ListMachines(t.Context(), nil); len(list) != 0 {
		t.Errorf("a refused create allocated %v", list)
	}
}

func TestCreateIdempotentToken(t *testing.T) {
	forEachStore(t, 2, func(t *testing.T, hosts []Host, d *Driver) {
		req := provider.CreateMachineRequest{Token: "cbx_0123456789ab", Name: "n"}
		a, err := d.CreateMachine(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := d.CreateMachine(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if a.ID != b.ID || a.SSHAddr != b.SSHAddr {
			t.Errorf("retried create with the same token gave %s on %s, first was %s on %s", b.ID, b.SSHAddr, a.ID, a.SSHAddr)
		}
		if list, _ := d.ListMachines(t.Context(), nil); len(list) != 1 {
			t.Errorf("%d allocations after a retried create: want 1", len(list))
		}
	})
}
