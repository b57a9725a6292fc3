package providertest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/providertest/refdriver"
)

// memDriver is the reference driver (refdriver) with switches that break
// one rule each, to prove the suite catches the breach; with no switch on it
// keeps the whole contract. It adds provider.AccessProvider, which the
// reference driver lacks, and records what the suite did.
type memDriver struct {
	*refdriver.Driver
	peer   *refdriver.Driver // the region CopyImage copies to
	breaks map[string]bool

	mu       sync.Mutex
	off      time.Duration                   // the clock offset PassGrace moves
	requests []provider.CreateMachineRequest // every CreateMachine request seen
	chans    map[string]bool                 // every channel set
	replaced map[string]map[string]string    // machine-labels-replace: labels as replaced
	kept     map[string]map[string]bool      // image-empty-label-kept: labels kept empty
	refs     map[string][]string             // usage-stale: every reference ever reported
	failed   map[string]bool                 // tokens whose create failed retryably
	lastAcc  *provider.Access

	signer ssh.Signer
	host   ssh.PublicKey

	// racyGate makes the "channel-racy" break deterministic: two racing
	// setters meet here after checking the version and before writing.
	racyGate chan struct{}
}

func newMemDriver(t testing.TB, breaks ...string) *memDriver {
	t.Helper()
	d := &memDriver{
		breaks:   map[string]bool{},
		chans:    map[string]bool{},
		replaced: map[string]map[string]string{},
		kept:     map[string]map[string]bool{},
		refs:     map[string][]string{},
		failed:   map[string]bool{},
		racyGate: make(chan struct{}),
	}
	for _, b := range breaks {
		d.breaks[b] = true
	}
	var err error
	d.peer, err = refdriver.New(refdriver.WithRegion("mem-2"))
	if err == nil {
		d.Driver, err = refdriver.New(refdriver.WithRegion("mem-1"), refdriver.WithClock(d.now),
			refdriver.WithRegionPeer("mem-2", d.peer))
	}
	var priv ed25519.PrivateKey
	if err == nil {
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err == nil {
		d.signer, err = ssh.NewSignerFromKey(priv)
	}
	if err != nil {
		t.Fatal(err)
	}
	d.host = d.signer.PublicKey()
	return d
}

func (d *memDriver) now() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return time.Now().Add(d.off)
}

func (d *memDriver) advance(by time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.off += by
}

// harnessFor returns the harness fields that let every subtest run.
func (d *memDriver) harnessFor(h Harness) Harness {
	h.CopyRegion, h.CopyRegionImages = "mem-2", d.peer
	h.Inject = func(call string, kind FaultKind) (func(), error) { return d.Driver.Inject(call, string(kind)) }
	h.Orphans = &OrphanHooks{
		Vanish: func(ctx context.Context, m *provider.Machine) error { return d.Vanish(m.ID) },
		Leftover: func(ctx context.Context, m *provider.Machine, token string) (bool, error) {
			return d.HasKey(token), nil
		},
		PassGrace: func() { d.advance(refdriver.DefaultOrphanGrace + time.Minute) },
	}
	return h
}

// counts returns what the driver still holds: machines, images (in both
// regions) and channels.
func (d *memDriver) counts() (machines, images, channels int) {
	ctx := context.Background()
	ms, _ := d.Driver.ListMachines(ctx, nil)
	ims, _ := d.Driver.ListImages(ctx, nil)
	pims, _ := d.peer.ListImages(ctx, nil)
	d.mu.Lock()
	names := slices.Collect(maps.Keys(d.chans))
	d.mu.Unlock()
	for _, ch := range names {
		if _, err := d.Driver.CurrentChannel(ctx, ch); err == nil {
			channels++
		}
	}
	return len(ms), len(ims) + len(pims), channels
}

func (d *memDriver) MachineTypes(class, arch string) ([]string, error) {
	if d.breaks["unknown-class-ok"] && !provider.ValidClass(class) {
		return []string{"m1"}, nil
	}
	if d.breaks["empty-types"] && class == provider.ClassBeast {
		return nil, nil
	}
	return d.Driver.MachineTypes(class, arch)
}

func (d *memDriver) CreateMachine(ctx context.Context, req provider.CreateMachineRequest) (*provider.Machine, error) {
	d.mu.Lock()
	d.requests = append(d.requests, req)
	d.mu.Unlock()
	if d.breaks["create-drops-labels"] {
		req.Labels = nil
	}
	if d.breaks["machine-token-ignored"] {
		req.Token = "cbx_" + randomHex(6)
	}
	d.mu.Lock()
	retried := d.failed[req.Token]
	d.mu.Unlock()
	if d.breaks["lost-reply-not-adopted"] && retried {
		// Takes the failed create for a failure: creates anew.
		req.Token += "-again"
	}
	m, err := d.Driver.CreateMachine(ctx, req)
	if err != nil && errors.Is(err, provider.ErrUnavailable) {
		d.mu.Lock()
		d.failed[req.Token] = true
		d.mu.Unlock()
	}
	if d.breaks["create-drops-labels"] && m != nil {
		m.Labels = nil
	}
	if d.breaks["name-unsanitized"] && m != nil {
		m.Name = req.Name
	}
	return m, d.remap(ctx, err)
}

// remap applies the error-mapping breaks.
func (d *memDriver) remap(ctx context.Context, err error) error {
	switch {
	case err == nil:
		return nil
	case d.breaks["ctx-unavailable-machines"] && ctx.Err() != nil:
		return provider.Wrap(provider.ErrUnavailable, err)
	case d.breaks["capacity-unmapped"] && errors.Is(err, provider.ErrCapacity),
		d.breaks["throttle-unmapped"] && errors.Is(err, provider.ErrThrottled):
		return provider.Wrap(provider.ErrUnavailable, errors.New(err.Error()))
	}
	return err
}

// view applies the label and state breaks to what the suite sees.
func (d *memDriver) view(m *provider.Machine) *provider.Machine {
	if m == nil {
		return nil
	}
	if d.breaks["never-running"] {
		m.State, m.SSHAddr = provider.MachinePending, ""
	}
	if d.breaks["create-drops-labels"] {
		m.Labels = nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if r, ok := d.replaced[m.ID]; ok {
		m.Labels = maps.Clone(r)
	}
	return m
}

func (d *memDriver) GetMachine(ctx context.Context, id string) (*provider.Machine, error) {
	m, err := d.Driver.GetMachine(ctx, id)
	err = d.remap(ctx, err)
	if d.breaks["get-machine-nil-nil"] && errors.Is(err, provider.ErrNotFound) {
		return nil, nil
	}
	return d.view(m), err
}

func (d *memDriver) ListMachines(ctx context.Context, labels map[string]string) ([]*provider.Machine, error) {
	if d.breaks["list-ignores-labels"] {
		labels = nil
	}
	ms, err := d.Driver.ListMachines(ctx, labels)
	for i := range ms {
		ms[i] = d.view(ms[i])
	}
	return ms, err
}

func (d *memDriver) DeleteMachine(ctx context.Context, id string) error {
	if d.breaks["delete-machine-noop"] {
		return nil
	}
	if d.breaks["delete-machine-not-idempotent"] {
		if _, err := d.Driver.GetMachine(ctx, id); err != nil {
			return err
		}
	}
	return d.Driver.DeleteMachine(ctx, id)
}

func (d *memDriver) UpdateMachineLabels(ctx context.Context, id string, labels map[string]string) error {
	if d.breaks["machine-empty-label-kept"] {
		labels = maps.Clone(labels)
		for k, v := range labels {
			if v == "" {
				delete(labels, k) // the driver skips empty values instead of removing the label
			}
		}
	}
	if err := d.Driver.UpdateMachineLabels(ctx, id, labels); err != nil || !d.breaks["machine-labels-replace"] {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.replaced[id] = maps.Clone(labels)
	return nil
}

// viewImage applies the image breaks to what the suite sees.
func (d *memDriver) viewImage(im *provider.Image) *provider.Image {
	if im == nil {
		return nil
	}
	if d.breaks["image-no-snapshots"] {
		im.Snapshots = nil
	}
	if d.breaks["image-fails"] && im.State == provider.ImageAvailable {
		im.State, im.StateReason = provider.ImageFailed, "disk exploded"
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range d.kept[im.ID] {
		if _, ok := im.Labels[k]; !ok {
			im.Labels[k] = ""
		}
	}
	return im
}

func (d *memDriver) CreateImage(ctx context.Context, req provider.CreateImageRequest) (*provider.Image, error) {
	if d.breaks["image-token-ignored"] {
		req.Token = "img-" + randomHex(6)
	}
	d.mu.Lock()
	retried := d.failed[req.Token]
	d.mu.Unlock()
	if d.breaks["image-lost-reply-not-adopted"] && retried {
		req.Token += "-again"
	}
	im, err := d.Driver.CreateImage(ctx, req)
	if err != nil && errors.Is(err, provider.ErrUnavailable) {
		d.mu.Lock()
		d.failed[req.Token] = true
		d.mu.Unlock()
	}
	return d.viewImage(im), err
}

func (d *memDriver) GetImage(ctx context.Context, id string) (*provider.Image, error) {
	im, err := d.Driver.GetImage(ctx, id)
	if d.breaks["get-image-nil-nil"] && errors.Is(err, provider.ErrNotFound) {
		return nil, nil
	}
	return d.viewImage(im), err
}

func (d *memDriver) ListImages(ctx context.Context, labels map[string]string) ([]*provider.Image, error) {
	list, err := d.Driver.ListImages(ctx, labels)
	for i := range list {
		list[i] = d.viewImage(list[i])
	}
	return list, err
}

func (d *memDriver) DeleteImage(ctx context.Context, id string) error {
	if d.breaks["protect-ignored"] {
		_ = d.Driver.ProtectImage(ctx, id, false)
	}
	err := d.Driver.DeleteImage(ctx, id)
	if d.breaks["protected-delete-unavailable"] && errors.Is(err, provider.ErrConflict) {
		return provider.Wrap(provider.ErrUnavailable, errors.New(err.Error()))
	}
	return err
}

func (d *memDriver) UpdateImageLabels(ctx context.Context, id string, labels map[string]string) error {
	if err := d.Driver.UpdateImageLabels(ctx, id, labels); err != nil || !d.breaks["image-empty-label-kept"] {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, v := range labels {
		if v == "" {
			if d.kept[id] == nil {
				d.kept[id] = map[string]bool{}
			}
			d.kept[id][k] = true
		}
	}
	return nil
}

func (d *memDriver) DeprecateImage(ctx context.Context, id string, at time.Time) error {
	if d.breaks["deprecate-ignored"] {
		return nil
	}
	return d.Driver.DeprecateImage(ctx, id, at)
}

func (d *memDriver) CopyImage(ctx context.Context, id, region, name string) (*provider.Image, error) {
	if d.breaks["copy-ignores-name"] {
		name = ""
	}
	cp, err := d.Driver.CopyImage(ctx, id, region, name)
	if d.breaks["copy-drops-labels"] && cp != nil {
		cp.Labels = nil
		_ = d.peer.UpdateImageLabels(ctx, cp.ID, map[string]string{LabelRun: "", LabelRole: ""})
	}
	return cp, err
}

func (d *memDriver) ImageUsage(ctx context.Context, id string) ([]string, error) {
	if d.breaks["usage-never"] {
		return nil, nil
	}
	refs, err := d.Driver.ImageUsage(ctx, id)
	switch {
	case d.breaks["usage-unknown-unavailable"] && errors.Is(err, provider.ErrNotFound):
		return nil, provider.Errorf(provider.ErrUnavailable, "usage of %s: backend hiccup", id)
	case d.breaks["ctx-unavailable"] && errors.Is(err, context.Canceled):
		return nil, provider.Wrap(provider.ErrUnavailable, err)
	case d.breaks["usage-stale"] && err == nil:
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, r := range refs {
			if !slices.Contains(d.refs[id], r) {
				d.refs[id] = append(d.refs[id], r)
			}
		}
		return slices.Clone(d.refs[id]), nil
	}
	return refs, err
}

func (d *memDriver) SetChannel(ctx context.Context, req provider.SetChannelRequest) (*provider.ChannelEntry, error) {
	d.mu.Lock()
	d.chans[req.Channel] = true
	d.mu.Unlock()
	if d.breaks["channel-ignores-ifversion"] {
		req.IfVersion = 0
	}
	if d.breaks["channel-racy"] && req.IfVersion > 0 {
		// Check, then write, in two backend calls.
		cur, err := d.Driver.CurrentChannel(ctx, req.Channel)
		if err != nil {
			return nil, err
		}
		if cur.Version != req.IfVersion {
			return nil, provider.Errorf(provider.ErrConflict, "channel %q is at version %d, not %d", req.Channel, cur.Version, req.IfVersion)
		}
		select {
		case d.racyGate <- struct{}{}:
		case <-d.racyGate:
		case <-time.After(time.Second): // nobody to race with
		}
		req.IfVersion = 0
	}
	return d.Driver.SetChannel(ctx, req)
}

func (d *memDriver) ChannelHistory(ctx context.Context, channel string) ([]provider.ChannelEntry, error) {
	h, err := d.Driver.ChannelHistory(ctx, channel)
	if d.breaks["history-newest-first"] {
		slices.Reverse(h)
	}
	return h, err
}

func (d *memDriver) MarkKnownGood(ctx context.Context, channel string, version int64) error {
	switch {
	case d.breaks["mark-ignored"]:
		return nil
	case d.breaks["mark-moves-channel"]:
		if cur, err := d.Driver.CurrentChannel(ctx, channel); err == nil {
			_, _ = d.Driver.SetChannel(ctx, provider.SetChannelRequest{Channel: channel, ImageID: cur.ImageID})
		}
	}
	err := d.Driver.MarkKnownGood(ctx, channel, version)
	if d.breaks["mark-unknown-ok"] && errors.Is(err, provider.ErrNotFound) {
		return nil
	}
	return err
}

func (d *memDriver) SweepOrphans(ctx context.Context) (int, error) {
	switch {
	case d.breaks["sweep-noop"]:
		return 0, ctx.Err()
	case d.breaks["sweep-ignores-grace"]:
		d.advance(24 * time.Hour)
	case d.breaks["sweep-deletes-live"]:
		ms, _ := d.Driver.ListMachines(ctx, nil)
		for _, m := range ms {
			_ = d.Driver.DeleteMachine(ctx, m.ID)
		}
	}
	return d.Driver.SweepOrphans(ctx)
}

// MachineAccess implements provider.AccessProvider, which the reference
// driver does not: one fixed user, key and host key for every machine.
func (d *memDriver) MachineAccess(ctx context.Context, m *provider.Machine) (*provider.Access, error) {
	if m == nil {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "nil machine")
	}
	_, err := d.Driver.GetMachine(ctx, m.ID)
	if err != nil {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.breaks["access-unknown-ok"] && d.lastAcc != nil && errors.Is(err, provider.ErrNotFound) {
			return d.lastAcc, nil
		}
		return nil, err
	}
	acc := &provider.Access{User: "crab", Signer: d.signer, HostKey: d.host}
	if d.breaks["access-no-signer"] {
		acc.Signer = nil
	}
	d.mu.Lock()
	d.lastAcc = acc
	d.mu.Unlock()
	return acc, nil
}

// machinesOnly hides every capability but provider.Driver.
type machinesOnly struct{ provider.Driver }
