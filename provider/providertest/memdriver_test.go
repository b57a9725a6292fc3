package providertest

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

// memDriver is a small in-memory driver that keeps the whole contract, used
// to prove the suite passes a correct driver. Each entry in breaks switches
// one rule off, to prove the suite catches the breach.
type memDriver struct {
	breaks map[string]bool

	mu       sync.Mutex
	next     int
	machines map[string]*memMachine
	images   map[string]*provider.Image
	polls    map[string]int // GetImage calls per image, for the pending phase
	channels map[string][]provider.ChannelEntry
	requests []provider.CreateMachineRequest // every CreateMachine request seen

	// racyGate makes the "channel-racy" break deterministic: two racing
	// setters meet here after checking the version and before writing.
	racyGate chan struct{}
}

type memMachine struct {
	m     provider.Machine
	polls int
}

func newMemDriver(breaks ...string) *memDriver {
	d := &memDriver{
		breaks:   map[string]bool{},
		machines: map[string]*memMachine{},
		images:   map[string]*provider.Image{},
		polls:    map[string]int{},
		channels: map[string][]provider.ChannelEntry{},
	}
	for _, b := range breaks {
		d.breaks[b] = true
	}
	d.racyGate = make(chan struct{})
	return d
}

func (d *memDriver) counts() (machines, images int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.machines), len(d.images)
}

func (d *memDriver) id(prefix string) string {
	d.next++
	return fmt.Sprintf("%s-%08x", prefix, d.next)
}

func (d *memDriver) Info() provider.Info { return provider.Info{Name: "mem"} }

func (d *memDriver) MachineTypes(class, arch string) ([]string, error) {
	switch class {
	case "tiny", "small", "standard", "fast", "large", "beast":
	default:
		if d.breaks["unknown-class-ok"] {
			return []string{"m1"}, nil
		}
		return nil, provider.Errorf(provider.ErrInvalidArgument, "unknown class %q", class)
	}
	if arch != "amd64" {
		return nil, provider.Errorf(provider.ErrUnsupported, "no %s machines", arch)
	}
	if d.breaks["empty-types"] && class == "beast" {
		return nil, nil
	}
	return []string{"m1", "m2"}, nil
}

func (d *memDriver) BaseImage(ctx context.Context, arch string) (string, error) {
	return "base-1", nil
}

func cloneMachine(m provider.Machine) *provider.Machine {
	m.Labels = maps.Clone(m.Labels)
	return &m
}

func (d *memDriver) CreateMachine(ctx context.Context, req provider.CreateMachineRequest) (*provider.Machine, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.requests = append(d.requests, req)
	id := d.id("m")
	labels := maps.Clone(req.Labels)
	if d.breaks["create-drops-labels"] {
		labels = nil
	}
	mm := &memMachine{m: provider.Machine{
		ID: id, Name: req.Name, Type: req.Type, Image: req.Image, State: provider.MachinePending,
		Labels: labels, Created: time.Now(),
	}}
	d.machines[id] = mm
	return cloneMachine(mm.m), nil
}

func (d *memDriver) GetMachine(ctx context.Context, id string) (*provider.Machine, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	mm, ok := d.machines[id]
	if !ok {
		if d.breaks["get-machine-nil-nil"] {
			return nil, nil
		}
		return nil, provider.Errorf(provider.ErrNotFound, "machine %q", id)
	}
	mm.polls++
	if mm.polls > 1 && !d.breaks["never-running"] {
		mm.m.State = provider.MachineRunning
		mm.m.SSHAddr = "127.0.0.1:22"
	}
	return cloneMachine(mm.m), nil
}

func hasAll(have, want map[string]string) bool {
	for k, v := range want {
		if g, ok := have[k]; !ok || g != v {
			return false
		}
	}
	return true
}

func (d *memDriver) ListMachines(ctx context.Context, labels map[string]string) ([]*provider.Machine, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*provider.Machine
	for _, mm := range d.machines {
		if d.breaks["list-ignores-labels"] || hasAll(mm.m.Labels, labels) {
			out = append(out, cloneMachine(mm.m))
		}
	}
	return out, nil
}

func (d *memDriver) DeleteMachine(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.machines[id]; !ok {
		if d.breaks["delete-machine-not-idempotent"] {
			return provider.Errorf(provider.ErrNotFound, "machine %q", id)
		}
		return nil
	}
	if d.breaks["delete-machine-noop"] {
		return nil
	}
	delete(d.machines, id)
	return nil
}

func (d *memDriver) UpdateMachineLabels(ctx context.Context, id string, labels map[string]string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	mm, ok := d.machines[id]
	if !ok {
		return provider.Errorf(provider.ErrNotFound, "machine %q", id)
	}
	if d.breaks["machine-labels-replace"] {
		mm.m.Labels = maps.Clone(labels)
		return nil
	}
	if mm.m.Labels == nil {
		mm.m.Labels = map[string]string{}
	}
	maps.Copy(mm.m.Labels, labels)
	return nil
}

func cloneImage(im *provider.Image) *provider.Image {
	c := *im
	c.Labels = maps.Clone(im.Labels)
	c.Snapshots = append([]provider.Snapshot(nil), im.Snapshots...)
	return &c
}

func (d *memDriver) CreateImage(ctx context.Context, req provider.CreateImageRequest) (*provider.Image, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.machines[req.MachineID]; !ok {
		return nil, provider.Errorf(provider.ErrNotFound, "machine %q", req.MachineID)
	}
	id := d.id("img")
	im := &provider.Image{
		ID: id, Name: req.Name, Description: req.Description, State: provider.ImagePending,
		Arch: "amd64", Labels: maps.Clone(req.Labels), Created: time.Now(),
		Snapshots: []provider.Snapshot{{ID: "snap-" + id, SizeGiB: 1}}, SizeGiB: 1,
	}
	if d.breaks["image-no-snapshots"] {
		im.Snapshots = nil
	}
	d.images[id] = im
	return cloneImage(im), nil
}

func (d *memDriver) GetImage(ctx context.Context, id string) (*provider.Image, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	im, ok := d.images[id]
	if !ok {
		if d.breaks["get-image-nil-nil"] {
			return nil, nil
		}
		return nil, provider.Errorf(provider.ErrNotFound, "image %q", id)
	}
	d.polls[id]++
	if d.polls[id] > 1 && im.State == provider.ImagePending {
		im.State = provider.ImageAvailable
		if d.breaks["image-fails"] {
			im.State, im.StateReason = provider.ImageFailed, "disk exploded"
		}
	}
	return cloneImage(im), nil
}

func (d *memDriver) ListImages(ctx context.Context, labels map[string]string) ([]*provider.Image, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*provider.Image
	for _, im := range d.images {
		if hasAll(im.Labels, labels) {
			out = append(out, cloneImage(im))
		}
	}
	return out, nil
}

func (d *memDriver) DeleteImage(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	im, ok := d.images[id]
	if !ok {
		return nil
	}
	if im.Protected && !d.breaks["protect-ignored"] {
		return provider.Errorf(provider.ErrConflict, "image %q is protected", id)
	}
	delete(d.images, id)
	return nil
}

func (d *memDriver) UpdateImageLabels(ctx context.Context, id string, labels map[string]string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	im, ok := d.images[id]
	if !ok {
		return provider.Errorf(provider.ErrNotFound, "image %q", id)
	}
	if im.Labels == nil {
		im.Labels = map[string]string{}
	}
	for k, v := range labels {
		if v == "" && !d.breaks["image-empty-label-kept"] {
			delete(im.Labels, k)
			continue
		}
		im.Labels[k] = v
	}
	return nil
}

func (d *memDriver) ProtectImage(ctx context.Context, id string, protect bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	im, ok := d.images[id]
	if !ok {
		return provider.Errorf(provider.ErrNotFound, "image %q", id)
	}
	im.Protected = protect
	return nil
}

func (d *memDriver) DeprecateImage(ctx context.Context, id string, at time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	im, ok := d.images[id]
	if !ok {
		return provider.Errorf(provider.ErrNotFound, "image %q", id)
	}
	if !d.breaks["deprecate-ignored"] {
		im.Deprecated = at
	}
	return nil
}

func (d *memDriver) CurrentChannel(ctx context.Context, channel string) (*provider.ChannelEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.channels[channel]
	if len(h) == 0 {
		return nil, provider.Errorf(provider.ErrNotFound, "channel %q", channel)
	}
	e := h[len(h)-1]
	return &e, nil
}

func (d *memDriver) SetChannel(ctx context.Context, req provider.SetChannelRequest) (*provider.ChannelEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.channels[req.Channel]
	cur := int64(len(h))
	if req.IfVersion != 0 && !d.breaks["channel-ignores-ifversion"] {
		want := req.IfVersion
		if want == -1 {
			want = 0
		}
		if cur != want {
			return nil, provider.Errorf(provider.ErrConflict, "channel %q is at version %d, not %d", req.Channel, cur, want)
		}
		if d.breaks["channel-racy"] && req.IfVersion > 0 {
			// Check, then write without holding the lock in between.
			d.mu.Unlock()
			select {
			case d.racyGate <- struct{}{}:
			case <-d.racyGate:
			case <-time.After(time.Second): // nobody to race with
			}
			d.mu.Lock()
			h = d.channels[req.Channel]
		}
	}
	e := provider.ChannelEntry{
		Channel: req.Channel, ImageID: req.ImageID, Version: int64(len(h)) + 1, At: time.Now(), Operator: req.Operator,
	}
	d.channels[req.Channel] = append(h, e)
	return &e, nil
}

func (d *memDriver) ChannelHistory(ctx context.Context, channel string) ([]provider.ChannelEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := append([]provider.ChannelEntry(nil), d.channels[channel]...)
	if d.breaks["history-newest-first"] {
		for i, j := 0, len(h)-1; i < j; i, j = i+1, j-1 {
			h[i], h[j] = h[j], h[i]
		}
	}
	return h, nil
}

func (d *memDriver) DeleteChannel(ctx context.Context, channel string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.channels, channel)
	return nil
}

// machinesOnly hides every capability but provider.Driver.
type machinesOnly struct{ d *memDriver }

func (m machinesOnly) Info() provider.Info { return m.d.Info() }
func (m machinesOnly) MachineTypes(class, arch string) ([]string, error) {
	return m.d.MachineTypes(class, arch)
}
func (m machinesOnly) BaseImage(ctx context.Context, arch string) (string, error) {
	return m.d.BaseImage(ctx, arch)
}
func (m machinesOnly) CreateMachine(ctx context.Context, req provider.CreateMachineRequest) (*provider.Machine, error) {
	return m.d.CreateMachine(ctx, req)
}
func (m machinesOnly) GetMachine(ctx context.Context, id string) (*provider.Machine, error) {
	return m.d.GetMachine(ctx, id)
}
func (m machinesOnly) ListMachines(ctx context.Context, labels map[string]string) ([]*provider.Machine, error) {
	return m.d.ListMachines(ctx, labels)
}
func (m machinesOnly) DeleteMachine(ctx context.Context, id string) error {
	return m.d.DeleteMachine(ctx, id)
}
func (m machinesOnly) UpdateMachineLabels(ctx context.Context, id string, labels map[string]string) error {
	return m.d.UpdateMachineLabels(ctx, id, labels)
}
