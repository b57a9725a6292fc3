// Leases as host allocations: MachineTypes, CreateMachine, GetMachine, ListMachines, DeleteMachine.

package sshhost

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"maps"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

// MachineType is the only machine type: a whole host.
const MachineType = "host"

// idPrefix starts every machine (allocation) id.
const idPrefix = "sshhost-"

// MachineTypes returns ["host"] for every class and for amd64 and arm64; the
// pool decides what a host is. An unknown class or architecture wraps
// provider.ErrInvalidArgument.
func (d *Driver) MachineTypes(class, arch string) ([]string, error) {
	if !provider.ValidClass(class) {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: unknown class %q", class)
	}
	if !provider.ValidArch(arch) {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: unknown architecture %q", arch)
	}
	return []string{MachineType}, nil
}

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return idPrefix + hex.EncodeToString(b)
}

func (d *Driver) machine(a *allocation) *provider.Machine {
	return &provider.Machine{
		ID:      a.ID,
		Name:    a.Name,
		Type:    MachineType,
		Image:   BaseImageID,
		State:   provider.MachineRunning,
		Labels:  maps.Clone(a.Labels),
		Created: a.Created,
		SSHAddr: a.Host,
	}
}

// CreateMachine allocates the first free host of the pool to the request.
// The request's type must be "" or "host" and its image "" or "existing";
// user-data and the authorized key are ignored (see MachineAccess). A retry
// with the same Token returns the host allocated the first time. When every
// host is allocated it returns an error wrapping provider.ErrCapacity.
func (d *Driver) CreateMachine(ctx context.Context, req provider.CreateMachineRequest) (*provider.Machine, error) {
	if req.Type != "" && req.Type != MachineType {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: machine type %q: the only type is %q", req.Type, MachineType)
	}
	if req.Image != "" && req.Image != BaseImageID {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: image %q: existing hosts cannot boot images", req.Image)
	}
	var out *provider.Machine
	err := d.store.update(ctx, func(st *state) error {
		if req.Token != "" {
			for i := range st.Allocations {
				if a := &st.Allocations[i]; a.Token == req.Token {
					out = d.machine(a)
					return errNoChange
				}
			}
		}
		used := map[string]bool{}
		for _, a := range st.Allocations {
			used[a.Host] = true
		}
		for _, h := range d.hosts {
			if used[h.Addr] {
				continue
			}
			a := allocation{
				ID:      newID(),
				Host:    h.Addr,
				Token:   req.Token,
				Name:    provider.SanitizeLabelValue(req.Name),
				Labels:  maps.Clone(req.Labels),
				Created: time.Now().UTC().Truncate(time.Second),
			}
			st.Allocations = append(st.Allocations, a)
			out = d.machine(&a)
			return nil
		}
		return provider.Errorf(provider.ErrCapacity, "sshhost: all %d hosts are leased", len(d.hosts))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetMachine returns the allocation id; an unknown or freed id wraps
// provider.ErrNotFound.
func (d *Driver) GetMachine(ctx context.Context, id string) (*provider.Machine, error) {
	var out *provider.Machine
	err := d.store.view(ctx, func(st *state) error {
		a := st.find(id)
		if a == nil {
			return provider.Errorf(provider.ErrNotFound, "sshhost: machine %q", id)
		}
		out = d.machine(a)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListMachines returns the allocated hosts having all the given labels.
func (d *Driver) ListMachines(ctx context.Context, labels map[string]string) ([]*provider.Machine, error) {
	var out []*provider.Machine
	err := d.store.view(ctx, func(st *state) error {
		for i := range st.Allocations {
			a := &st.Allocations[i]
			if hasLabels(a.Labels, labels) {
				out = append(out, d.machine(a))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if g, ok := have[k]; !ok || g != v {
			return false
		}
	}
	return true
}

// DeleteMachine frees the host allocated as id. Freeing an unknown or
// already freed id returns nil. Nothing on the host is touched.
func (d *Driver) DeleteMachine(ctx context.Context, id string) error {
	return d.store.update(ctx, func(st *state) error {
		for i, a := range st.Allocations {
			if a.ID == id {
				st.Allocations = append(st.Allocations[:i], st.Allocations[i+1:]...)
				return nil
			}
		}
		return errNoChange
	})
}

// UpdateMachineLabels merges labels into the allocation's labels; an empty
// value removes the label. An unknown id wraps provider.ErrNotFound.
func (d *Driver) UpdateMachineLabels(ctx context.Context, id string, labels map[string]string) error {
	return d.store.update(ctx, func(st *state) error {
		a := st.find(id)
		if a == nil {
			return provider.Errorf(provider.ErrNotFound, "sshhost: machine %q", id)
		}
		if a.Labels == nil {
			a.Labels = map[string]string{}
		}
		for k, v := range labels {
			if v == "" {
				delete(a.Labels, k)
				continue
			}
			a.Labels[k] = v
		}
		return nil
	})
}
