// Machines: provider.Machines on the backend's machines, with the per-machine
// key a cloud driver registers (AWS key pair, Hetzner SSH key).

package refdriver

import (
	"context"
	"maps"
	"slices"

	"github.com/crabbox/crabbox-go/provider"
)

func cloneMachine(m provider.Machine) *provider.Machine {
	m.Labels = maps.Clone(m.Labels)
	return &m
}

// CreateMachine implements provider.Machines. A request with the Token of a
// machine that still exists returns that machine instead of a second one.
// Like a cloud driver, it registers a key for the machine first (SweepOrphans
// deletes it if the machine never appears or vanishes unreleased).
func (d *Driver) CreateMachine(ctx context.Context, req provider.CreateMachineRequest) (*provider.Machine, error) {
	if req.Token == "" || req.Image == "" || req.Type == "" {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "refdriver: CreateMachine needs a token, an image and a type")
	}
	var out *provider.Machine
	err := d.be.callFault(ctx, "CreateMachine", func(s *state) error {
		if id, ok := s.byToken[req.Token]; ok {
			out = cloneMachine(s.machines[id].m)
			return nil
		}
		if !d.bootable(s, req.Image) {
			return notFound("image", req.Image)
		}
		if _, ok := s.keys[req.Token]; !ok {
			s.keys[req.Token] = d.o.now()
		}
		id := s.newID("m")
		m := &machine{token: req.Token, m: provider.Machine{
			ID:      id,
			Name:    sanitizeName(req.Name, id),
			Type:    req.Type,
			Image:   req.Image,
			State:   provider.MachinePending,
			Labels:  managedLabels(req.Labels),
			Created: d.o.now(),
		}}
		s.machines[id] = m
		s.byToken[req.Token] = id
		out = cloneMachine(m.m)
		return nil
	})
	return out, mapErr(err)
}

// bootable reports whether image is a base image or an available image of
// the backend.
func (d *Driver) bootable(s *state, image string) bool {
	if isBaseImage(image) {
		return true
	}
	im, ok := s.images[image]
	return ok && im.im.State == provider.ImageAvailable
}

// GetMachine implements provider.Machines. A machine is pending for the
// first WithBootPolls calls, then running with SSHAddr.
func (d *Driver) GetMachine(ctx context.Context, id string) (*provider.Machine, error) {
	var out *provider.Machine
	err := d.be.call(ctx, func(s *state) error {
		m, ok := s.machines[id]
		if !ok {
			return notFound("machine", id)
		}
		if m.m.State == provider.MachinePending {
			m.polls++
			if m.polls > d.o.bootPolls {
				m.m.State, m.m.SSHAddr = provider.MachineRunning, SSHAddr
			}
		}
		out = cloneMachine(m.m)
		return nil
	})
	return out, mapErr(err)
}

// ListMachines implements provider.Machines.
func (d *Driver) ListMachines(ctx context.Context, labels map[string]string) ([]*provider.Machine, error) {
	var out []*provider.Machine
	err := d.be.call(ctx, func(s *state) error {
		for _, m := range s.machines {
			if hasLabels(m.m.Labels, labels) {
				out = append(out, cloneMachine(m.m))
			}
		}
		return nil
	})
	return out, mapErr(err)
}

// DeleteMachine implements provider.Machines: the machine and its key go; a
// machine already gone is not an error.
func (d *Driver) DeleteMachine(ctx context.Context, id string) error {
	return mapErr(d.be.call(ctx, func(s *state) error {
		m, ok := s.machines[id]
		if !ok {
			return nil
		}
		delete(s.machines, id)
		delete(s.byToken, m.token)
		delete(s.keys, m.token)
		return nil
	}))
}

// UpdateMachineLabels implements provider.Machines.
func (d *Driver) UpdateMachineLabels(ctx context.Context, id string, labels map[string]string) error {
	return mapErr(d.be.call(ctx, func(s *state) error {
		m, ok := s.machines[id]
		if !ok {
			return notFound("machine", id)
		}
		m.m.Labels = mergeLabels(m.m.Labels, labels)
		return nil
	}))
}

// machineTypes are the fallback lists per class, the same for every
// architecture: a real driver has one table per architecture.
var machineTypes = map[string][]string{
	provider.ClassTiny:     {"ref-1c", "ref-2c"},
	provider.ClassSmall:    {"ref-2c", "ref-4c"},
	provider.ClassStandard: {"ref-4c", "ref-8c"},
	provider.ClassFast:     {"ref-8c", "ref-16c"},
	provider.ClassLarge:    {"ref-16c", "ref-32c"},
	provider.ClassBeast:    {"ref-32c", "ref-64c"},
}

// MachineTypes implements provider.Driver.
func (d *Driver) MachineTypes(class, arch string) ([]string, error) {
	if !provider.ValidClass(class) {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "refdriver: unknown class %q (known: %v)", class, provider.Classes())
	}
	if !provider.ValidArch(arch) {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "refdriver: unknown architecture %q (known: %v)", arch, provider.Arches())
	}
	types := slices.Clone(machineTypes[class])
	for i := range types {
		types[i] += "-" + arch
	}
	return types, nil
}
