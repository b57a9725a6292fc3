// The Channels and ChannelVersionMarker subtests: channel sets count
// versions, conditional sets conflict on a stale version and are atomic,
// and marking a version known-good does not move the channel.

package providertest

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/crabbox/crabbox-go/provider"
)

// ChannelDeleter is provider.ChannelDeleter, which the suite uses to remove
// the channels it set.
//
// Deprecated: use provider.ChannelDeleter.
type ChannelDeleter = provider.ChannelDeleter

// KnownGoodReader is an optional driver method the ChannelVersionMarker
// subtest uses to read back the version MarkKnownGood marked; without it
// the subtest checks only that marking succeeds and rejects what it must.
type KnownGoodReader interface {
	KnownGoodVersion(ctx context.Context, channel string) (*provider.ChannelEntry, error)
}

// deleteChannelsOnCleanup deletes the channels when t ends, where the driver
// is a ChannelDeleter.
func (s *suite) deleteChannelsOnCleanup(t *testing.T, channels ...string) {
	t.Cleanup(func() {
		del, ok := s.h.Driver.(provider.ChannelDeleter)
		if !ok {
			t.Logf("the driver is no provider.ChannelDeleter: channels %v are left behind", channels)
			return
		}
		ctx, cancel := s.cleanupCtx()
		defer cancel()
		for _, ch := range channels {
			if err := del.DeleteChannel(ctx, ch); err != nil && !errors.Is(err, provider.ErrNotFound) {
				t.Errorf("cleanup: DeleteChannel(%s): %v", ch, err)
			}
		}
	})
}

// testChannels checks a channel never set, unconditional and conditional
// sets, two concurrent conditional sets, and IfVersion -1 on a fresh channel.
func (s *suite) testChannels(t *testing.T) {
	chs, ok := s.h.Driver.(provider.Channels)
	if !ok {
		t.Skip("driver does not implement provider.Channels: the SDK reports channel calls as unsupported")
	}
	image := s.h.ChannelImage
	if image == "" {
		image = s.image(t)
	}
	c := &channelCheck{t: t, ctx: t.Context(), chs: chs, name: "conformance-" + s.runID, image: image}
	fresh := "conformance-" + s.runID + "-fresh"
	s.deleteChannelsOnCleanup(t, c.name, fresh)

	c.neverSet()
	c.unconditionalSets()
	c.conditionalSets()
	c.concurrentSets()
	c.setFresh(fresh)
}

// channelCheck is the state of one Channels subtest: the driver's channels,
// the channel the checks set and the image they point it at.
type channelCheck struct {
	t *testing.T
	// ctx is t.Context(), taken once: set runs off the test goroutine.
	ctx   context.Context
	chs   provider.Channels
	name  string
	image string
}

// neverSet checks a channel never set: no current entry, an empty history.
func (c *channelCheck) neverSet() {
	t, ctx, name := c.t, c.ctx, c.name
	if e, err := c.chs.CurrentChannel(ctx, name); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("CurrentChannel(%q) of a channel never set = %+v, %v: want ErrNotFound", name, e, err)
	}
	if hist, err := c.chs.ChannelHistory(ctx, name); err != nil && !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("ChannelHistory(%q) of a channel never set: %v: want an empty history or ErrNotFound", name, err)
	} else if err == nil && len(hist) != 0 {
		t.Errorf("ChannelHistory(%q) of a channel never set = %+v: want empty", name, hist)
	}
}

// unconditionalSets checks that unconditional sets count versions from 1.
func (c *channelCheck) unconditionalSets() {
	c.mustSet(0, 1)
	c.current(1, "after the first set")
	c.mustSet(0, 2)
	c.current(2, "after the second set")
	c.history(2, false)
}

// conditionalSets checks conditional sets: a stale version and "never set"
// both conflict and leave the channel alone; the current version wins.
func (c *channelCheck) conditionalSets() {
	t, name := c.t, c.name
	if e, err := c.set(1); !errors.Is(err, provider.ErrConflict) {
		t.Errorf("SetChannel(%q, IfVersion 1) with current version 2 = %+v, %v: want ErrConflict", name, e, err)
	}
	c.current(2, "after a stale conditional set")
	if e, err := c.set(-1); !errors.Is(err, provider.ErrConflict) {
		t.Errorf("SetChannel(%q, IfVersion -1) on a channel already set = %+v, %v: want ErrConflict", name, e, err)
	}
	c.current(2, "after a conditional set with IfVersion -1")
	c.history(2, false)
	c.mustSet(2, 3)
}

// concurrentSets checks two concurrent conditional sets on the same
// version: exactly one wins, and the loser returns no entry.
func (c *channelCheck) concurrentSets() {
	t, name, image := c.t, c.name, c.image
	entries, errs := c.raceSets(3)
	wins, conflicts := 0, 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
			if entries[i] == nil || entries[i].Version != 4 {
				t.Errorf("winning concurrent SetChannel(%q, IfVersion 3) = %+v: want version 4", name, entries[i])
			}
		case errors.Is(err, provider.ErrConflict):
			conflicts++
			if entries[i] != nil {
				t.Errorf("losing concurrent SetChannel(%q, IfVersion 3) = %+v, %v: a lost set returns no entry (an entry with an error says the channel moved)",
					name, *entries[i], err)
			}
		default:
			t.Errorf("concurrent SetChannel(%q, IfVersion 3): %v: want nil or ErrConflict", name, err)
		}
	}
	if wins != 1 || conflicts != 1 {
		t.Fatalf("two concurrent SetChannel(%q, IfVersion 3): %d won, %d conflicted (errors %v): want exactly one of each", name, wins, conflicts, errs)
	}
	// The winner's value is current. The loser's attempt may have left
	// compensating versions behind, but never another value.
	e, err := c.chs.CurrentChannel(c.ctx, name)
	switch {
	case err != nil:
		t.Fatalf("CurrentChannel(%q) after the concurrent sets: %v", name, err)
	case e == nil:
		t.Fatalf("CurrentChannel(%q) after the concurrent sets = nil, nil", name)
	case e.Version < 4 || e.ImageID != image:
		t.Errorf("CurrentChannel(%q) after the concurrent sets = %+v: want image %q at version 4 or later", name, *e, image)
	}
	c.history(4, true)
}

// raceSets makes two conditional sets on ifVersion at once and returns
// what each returned.
func (c *channelCheck) raceSets(ifVersion int64) ([]*provider.ChannelEntry, []error) {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	entries := make([]*provider.ChannelEntry, 2)
	start := make(chan struct{})
	for i := range errs {
		wg.Go(func() {
			<-start
			entries[i], errs[i] = c.set(ifVersion)
		})
	}
	close(start)
	wg.Wait()
	return entries, errs
}

// setFresh checks that IfVersion -1 on a channel never set succeeds with
// version 1.
func (c *channelCheck) setFresh(fresh string) {
	t, ctx, image := c.t, c.ctx, c.image
	e, err := c.chs.SetChannel(ctx, provider.SetChannelRequest{Channel: fresh, ImageID: image, IfVersion: -1})
	switch {
	case err != nil:
		t.Errorf("SetChannel(%q, IfVersion -1) of a channel never set: %v", fresh, err)
	case e == nil:
		t.Errorf("SetChannel(%q, IfVersion -1) = nil, nil", fresh)
	case e.Version != 1:
		t.Errorf("SetChannel(%q, IfVersion -1) = %+v: want version 1", fresh, *e)
	}
	if err == nil {
		if e, err := c.chs.CurrentChannel(ctx, fresh); err != nil || e == nil || e.Version != 1 || e.ImageID != image {
			t.Errorf("CurrentChannel(%q) = %+v, %v: want image %q version 1", fresh, e, err, image)
		}
	}
}

// set points the channel at the image, conditional on ifVersion. It does
// not use t, so it may run off the test goroutine.
func (c *channelCheck) set(ifVersion int64) (*provider.ChannelEntry, error) {
	return c.chs.SetChannel(c.ctx, provider.SetChannelRequest{
		Channel: c.name, ImageID: c.image, Operator: "crabbox-conformance", IfVersion: ifVersion, Proof: conformanceProof,
	})
}

// conformanceProof is the SetChannelRequest.Proof of every set of the
// channel check: each entry must return it (ChannelEntry.Proof).
const conformanceProof = "proof-0123456789abcdef0123"

// mustSet sets the channel, conditional on ifVersion, and checks that the
// set made version wantVersion.
func (c *channelCheck) mustSet(ifVersion, wantVersion int64) {
	t, name, image := c.t, c.name, c.image
	t.Helper()
	e, err := c.set(ifVersion)
	if err != nil {
		t.Fatalf("SetChannel(%q, IfVersion %d): %v", name, ifVersion, err)
	}
	if e == nil {
		t.Fatalf("SetChannel(%q, IfVersion %d) = nil, nil", name, ifVersion)
	}
	if e.Version != wantVersion || e.ImageID != image || e.Channel != name {
		t.Errorf("SetChannel(%q, IfVersion %d) = %+v: want channel %q, image %q, version %d", name, ifVersion, *e, name, image, wantVersion)
	}
}

// current checks that the channel is at wantVersion, pointing at the image.
func (c *channelCheck) current(wantVersion int64, after string) {
	t, name, image := c.t, c.name, c.image
	t.Helper()
	e, err := c.chs.CurrentChannel(c.ctx, name)
	switch {
	case err != nil:
		t.Fatalf("CurrentChannel(%q) %s: %v", name, after, err)
	case e == nil:
		t.Fatalf("CurrentChannel(%q) %s = nil, nil", name, after)
	case e.Version != wantVersion || e.ImageID != image || e.Channel != name:
		t.Errorf("CurrentChannel(%q) %s = %+v: want image %q version %d", name, after, *e, image, wantVersion)
	case e.Proof != conformanceProof:
		t.Errorf("CurrentChannel(%q) %s has Proof %q: want %q, what SetChannel was given", name, after, e.Proof, conformanceProof)
	}
}

// history checks the channel's history: entries oldest first with
// versions 1, 2, ..., exactly wantLen of them, or at least wantLen when
// atLeast (backends without compare-and-set, such as SSM, undo a lost
// race with a compensating write, which adds versions).
func (c *channelCheck) history(wantLen int, atLeast bool) {
	t, name, image := c.t, c.name, c.image
	t.Helper()
	hist, err := c.chs.ChannelHistory(c.ctx, name)
	if err != nil {
		t.Fatalf("ChannelHistory(%q): %v", name, err)
	}
	if len(hist) < wantLen || (!atLeast && len(hist) != wantLen) {
		t.Fatalf("ChannelHistory(%q) has %d entries %+v: want %d", name, len(hist), hist, wantLen)
	}
	for i, e := range hist {
		if e.Version != int64(i+1) || e.ImageID != image || (e.Channel != "" && e.Channel != name) {
			t.Errorf("ChannelHistory(%q)[%d] = %+v: want version %d image %q (oldest first)", name, i, e, i+1, image)
		}
		if e.Proof != conformanceProof {
			t.Errorf("ChannelHistory(%q)[%d] has Proof %q: want %q, what SetChannel was given", name, i, e.Proof, conformanceProof)
		}
	}
}

// testChannelVersionMarker marks versions of a channel set in the test and
// checks that unknown channels and versions are refused with a typed error
// and that marking does not move the channel.
func (s *suite) testChannelVersionMarker(t *testing.T) {
	chs, ok := s.h.Driver.(provider.Channels)
	if !ok {
		t.Skip("driver does not implement provider.Channels")
	}
	mk, ok := s.h.Driver.(provider.ChannelVersionMarker)
	if !ok {
		t.Skip("driver does not implement provider.ChannelVersionMarker")
	}
	ctx := t.Context()
	image := s.h.ChannelImage
	if image == "" {
		image = s.image(t)
	}
	name := "conformance-" + s.runID + "-marked"
	s.deleteChannelsOnCleanup(t, name)
	refused := func(err error) bool {
		return errors.Is(err, provider.ErrNotFound) || errors.Is(err, provider.ErrInvalidArgument)
	}

	if err := mk.MarkKnownGood(ctx, name, 1); !refused(err) {
		t.Errorf("MarkKnownGood(%q, 1) of a channel never set: %v: want ErrNotFound or ErrInvalidArgument", name, err)
	}
	for v := int64(1); v <= 2; v++ {
		if _, err := chs.SetChannel(ctx, provider.SetChannelRequest{Channel: name, ImageID: image, Operator: "crabbox-conformance"}); err != nil {
			t.Fatalf("SetChannel(%q) #%d: %v", name, v, err)
		}
	}
	reader, canRead := s.h.Driver.(KnownGoodReader)
	mark := func(version int64) {
		t.Helper()
		if err := mk.MarkKnownGood(ctx, name, version); err != nil {
			t.Fatalf("MarkKnownGood(%q, %d): %v", name, version, err)
		}
		if canRead {
			e, err := reader.KnownGoodVersion(ctx, name)
			switch {
			case err != nil:
				t.Errorf("KnownGoodVersion(%q) after MarkKnownGood(%d): %v", name, version, err)
			case e == nil:
				t.Errorf("KnownGoodVersion(%q) = nil, nil", name)
			case e.Version != version || e.ImageID != image:
				t.Errorf("KnownGoodVersion(%q) after MarkKnownGood(%d) = %+v: want version %d image %q", name, version, *e, version, image)
			}
		}
		e, err := chs.CurrentChannel(ctx, name)
		switch {
		case err != nil:
			t.Fatalf("CurrentChannel(%q) after MarkKnownGood(%d): %v", name, version, err)
		case e == nil || e.Version != 2:
			t.Errorf("CurrentChannel(%q) after MarkKnownGood(%d) = %+v: want version 2 (marking does not move the channel)", name, version, e)
		}
	}
	mark(1)
	mark(2)
	mark(1) // the mark moves back

	for _, v := range []int64{3, 99, 0} {
		if err := mk.MarkKnownGood(ctx, name, v); !refused(err) {
			t.Errorf("MarkKnownGood(%q, %d) of a version the channel never had: %v: want ErrNotFound or ErrInvalidArgument", name, v, err)
		}
	}
	checkCancelled(t, "MarkKnownGood", mk.MarkKnownGood(cancelledCtx(), name, 2))
}
