// Tests of channel.go: promotion with proof, conflicts, rollback, known-good, channels.

package crabbox_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
)

func TestKnownGoodRetiresSupersededImages(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	_, err := c.Promote(ctx, a.ID, crabbox.WithProof(proveImage(t, ctx, c, a.ID)))
	require.NoError(t, err)
	_, err = c.Promote(ctx, b.ID, crabbox.WithProof(proveImage(t, ctx, c, b.ID)))
	require.NoError(t, err)
	old, err := c.GetImage(ctx, a.ID)
	require.NoError(t, err)
	assert.True(t, old.Protected, "the previous image stays protected until the new one is known-good")
	_, err = c.MarkKnownGood(ctx, b.ID, proveNormal(t, ctx, c, b.ID))
	require.NoError(t, err)
	old, err = c.GetImage(ctx, a.ID)
	require.NoError(t, err)
	assert.False(t, old.Protected, "superseded image keeps promotion's protection")
	assert.NotNil(t, old.Deprecated, "superseded image is not deprecated")
	cur, err := c.GetImage(ctx, b.ID)
	require.NoError(t, err)
	assert.True(t, cur.Protected)
	assert.Nil(t, cur.Deprecated)
}

// historyRacer promotes another image right after Rollback read the
// channel's history.
type historyRacer struct {
	*crabboxtest.Cloud
	once  sync.Once
	other string
}

func (r *historyRacer) ChannelHistory(ctx context.Context, ch string) ([]provider.ChannelEntry, error) {
	h, err := r.Cloud.ChannelHistory(ctx, ch)
	r.once.Do(func() {
		if _, serr := r.Cloud.SetChannel(ctx, provider.SetChannelRequest{Channel: ch, ImageID: r.other}); serr != nil {
			panic(serr)
		}
	})
	return h, err
}

// promoteKnownGoodThen promotes first with proof and marks it known-good,
// then promotes next with proof: a rollback of the channel targets first.
func promoteKnownGoodThen(t *testing.T, ctx context.Context, c *crabbox.Client, first, next string) {
	t.Helper()
	_, err := c.Promote(ctx, first, crabbox.WithProof(proveImage(t, ctx, c, first)))
	require.NoError(t, err)
	_, err = c.MarkKnownGood(ctx, first, proveNormal(t, ctx, c, first))
	require.NoError(t, err)
	_, err = c.Promote(ctx, next, crabbox.WithProof(proveImage(t, ctx, c, next)))
	require.NoError(t, err)
}

func TestRollbackRacingAPromotionIsAConflict(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	d := bake(t, ctx, c, "delta")
	promoteKnownGoodThen(t, ctx, c, a.ID, b.ID)

	rc := localClient(t, &historyRacer{Cloud: cloud, other: d.ID})
	pr, err := rc.Rollback(ctx, crabbox.DefaultChannel, "racing")
	require.ErrorIs(t, err, crabbox.ErrConflict)
	assert.Nil(t, pr)
	assert.Contains(t, err.Error(), d.ID, "the conflict names the image the channel now points at")
	cur, err := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	assert.Equal(t, d.ID, cur.ID, "the concurrent promotion stands")
	img, err := c.GetImage(ctx, b.ID)
	require.NoError(t, err)
	assert.NotEqual(t, crabbox.StatusFailed, img.Status, "nothing was marked failed by the lost rollback")
}

// halfSet moves the channel, then reports a transient failure of its
// follow-up work (as the Hetzner driver does when mirroring labels fails).
type halfSet struct {
	*crabboxtest.Cloud
	calls atomic.Int32
}

func (h *halfSet) SetChannel(ctx context.Context, req provider.SetChannelRequest) (*provider.ChannelEntry, error) {
	h.calls.Add(1)
	e, err := h.Cloud.SetChannel(ctx, req)
	if err != nil {
		return nil, err
	}
	return e, provider.Errorf(provider.ErrUnavailable, "mirroring labels failed")
}

func TestPromoteWhoseChannelMovedIsNotRetried(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	rep := proveImage(t, ctx, c, a.ID)
	h := &halfSet{Cloud: cloud}
	hc := localClient(t, h)
	pr, err := hc.Promote(ctx, a.ID, crabbox.WithProof(rep))
	require.Error(t, err)
	assert.ErrorIs(t, err, crabbox.ErrUnavailable)
	assert.NotErrorIs(t, err, crabbox.ErrConflict, "a retried conditional set would report a conflict")
	require.NotNil(t, pr, "the promotion happened and is returned with the error")
	assert.Equal(t, a.ID, pr.Image.ID)
	assert.EqualValues(t, 1, h.calls.Load())
	cur, err := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	assert.Equal(t, a.ID, cur.ID)
}

func TestPromoteRequiresProofOfThatImage(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	assert.Equal(t, crabbox.StatusCandidate, a.Status)
	assert.True(t, a.Owned)

	_, err := c.Promote(ctx, a.ID)
	assert.ErrorIs(t, err, crabbox.ErrNoProof)
	repB := proveImage(t, ctx, c, b.ID)
	_, err = c.Promote(ctx, a.ID, crabbox.WithProof(repB))
	assert.ErrorIs(t, err, crabbox.ErrNoProof, "proof of another image")

	// A failing report is no proof.
	l, err := c.Warmup(ctx, crabbox.WithImage(a.ID))
	require.NoError(t, err)
	bad, err := crabbox.Smoke(ctx, l, []crabbox.SmokeCheck{crabbox.CommandExists("definitely-not-installed-xyz")})
	require.ErrorIs(t, err, crabbox.ErrSmokeFailed)
	require.NoError(t, l.Release(ctx))
	_, err = c.Promote(ctx, a.ID, crabbox.WithProof(bad))
	assert.ErrorIs(t, err, crabbox.ErrNoProof)
	assert.ErrorIs(t, err, crabbox.ErrSmokeFailed)

	// Foreign images are refused even when forced.
	_, err = c.Promote(ctx, crabboxtest.BaseImageID, crabbox.Force("test"))
	assert.ErrorIs(t, err, crabbox.ErrNotOwned)
	_, err = c.Promoted(ctx, crabbox.DefaultChannel)
	assert.ErrorIs(t, err, crabbox.ErrNotFound, "nothing promoted yet")

	repA := proveImage(t, ctx, c, a.ID)
	pr, err := c.Promote(ctx, a.ID, crabbox.WithProof(repA))
	require.NoError(t, err)
	assert.Equal(t, "", pr.Previous)
	assert.True(t, pr.Image.Protected, "the promoted image is protected")
	got, err := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	assert.Equal(t, a.ID, got.ID)

	// A normal lease now boots the promoted image.
	n, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer n.Release(context.Background())
	assert.Equal(t, crabbox.ImagePromoted, n.ImageSource)
	assert.Equal(t, a.ID, n.ImageID)
	res, err := n.Run(ctx, `cat "${CRABBOX_FS_ROOT:-}/etc-marker"`)
	require.NoError(t, err)
	assert.Equal(t, "alpha\n", res.StdoutTail, "the lease runs the baked image's content")

	// Promoting again is idempotent.
	pr2, err := c.Promote(ctx, a.ID, crabbox.WithProof(repA))
	require.NoError(t, err)
	assert.Equal(t, pr.Version, pr2.Version)
}

// racingCloud promotes another image between Promote's read of the channel
// and its conditional write, as a concurrent operator would.
type racingCloud struct {
	*crabboxtest.Cloud
	once  sync.Once
	other string
}

func (r *racingCloud) CurrentChannel(ctx context.Context, ch string) (*provider.ChannelEntry, error) {
	e, err := r.Cloud.CurrentChannel(ctx, ch)
	r.once.Do(func() {
		_, serr := r.Cloud.SetChannel(ctx, provider.SetChannelRequest{Channel: ch, ImageID: r.other, Operator: "someone-else"})
		if serr != nil {
			panic(serr)
		}
	})
	return e, err
}

func TestConcurrentPromotionIsAConflict(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	repA := proveImage(t, ctx, c, a.ID)

	racer := &racingCloud{Cloud: cloud, other: b.ID}
	rc := localClient(t, racer)
	_, err := rc.Promote(ctx, a.ID, crabbox.WithProof(repA))
	require.Error(t, err)
	assert.ErrorIs(t, err, crabbox.ErrConflict)
	cur, err := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	assert.Equal(t, b.ID, cur.ID, "the concurrent promotion is not overwritten")
}

func TestRollbackAndKnownGood(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")

	_, err := c.Promote(ctx, a.ID, crabbox.WithProof(proveImage(t, ctx, c, a.ID)))
	require.NoError(t, err)
	_, err = c.Rollback(ctx, crabbox.DefaultChannel, "nothing earlier")
	assert.ErrorIs(t, err, crabbox.ErrNotFound)

	// Known-good needs a passing report of that image.
	_, err = c.MarkKnownGood(ctx, a.ID, nil)
	assert.ErrorIs(t, err, crabbox.ErrNoProof)
	_, err = c.MarkKnownGood(ctx, a.ID, proveImage(t, ctx, c, a.ID))
	assert.ErrorIs(t, err, crabbox.ErrNoProof, "an explicit boot of the candidate is no known-good proof")
	kg, err := c.MarkKnownGood(ctx, a.ID, proveNormal(t, ctx, c, a.ID))
	require.NoError(t, err)
	assert.Equal(t, crabbox.StatusKnownGood, kg.Status)

	pr, err := c.Promote(ctx, b.ID, crabbox.WithProof(proveImage(t, ctx, c, b.ID)))
	require.NoError(t, err)
	assert.Equal(t, a.ID, pr.Previous)

	rb, err := c.Rollback(ctx, crabbox.DefaultChannel, "qa lane failed")
	require.NoError(t, err)
	assert.Equal(t, a.ID, rb.Image.ID)
	assert.Greater(t, rb.Version, pr.Version)
	cur, err := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	assert.Equal(t, a.ID, cur.ID)
	failed, err := c.GetImage(ctx, b.ID)
	require.NoError(t, err, "the image rolled back from is kept")
	assert.Equal(t, crabbox.StatusFailed, failed.Status)
	assert.False(t, failed.Protected, "a failed image loses promotion protection so cleanup can remove it later")
	hist, err := c.ChannelHistory(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	require.Len(t, hist, 3)
	assert.Equal(t, []string{a.ID, b.ID, a.ID}, []string{hist[0].ImageID, hist[1].ImageID, hist[2].ImageID})
	_, err = c.Promote(ctx, b.ID, crabbox.WithProof(proveImage(t, ctx, c, b.ID)))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, "a failed image is not promoted again without force")
}

func TestChannelsAreIndependent(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	_, err := c.Promote(ctx, a.ID, crabbox.WithProof(proveImage(t, ctx, c, a.ID)), crabbox.WithPromoteChannel("beta"))
	require.NoError(t, err)
	got, err := c.Promoted(ctx, "beta")
	require.NoError(t, err)
	assert.Equal(t, a.ID, got.ID)
	_, err = c.Promoted(ctx, crabbox.DefaultChannel)
	assert.ErrorIs(t, err, crabbox.ErrNotFound, "promoting to beta leaves default alone")

	beta, err := c.Warmup(ctx, crabbox.WithChannel("beta"))
	require.NoError(t, err)
	defer beta.Release(context.Background())
	assert.Equal(t, a.ID, beta.ImageID)
	assert.Equal(t, crabbox.ImagePromoted, beta.ImageSource)
	assert.Equal(t, "beta", beta.Channel)
	def, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer def.Release(context.Background())
	assert.Equal(t, crabbox.ImageBase, def.ImageSource, "the default channel was never set")

	// Known-good on beta needs the beta lease's report and names the channel.
	rep := smokeOK(t, ctx, beta)
	kg, err := c.MarkKnownGood(ctx, a.ID, rep, crabbox.ToChannel("beta")) // the deprecated spelling
	require.NoError(t, err)
	assert.Equal(t, crabbox.StatusKnownGood, kg.Status)

	for _, bad := range []string{"", "Beta_1", "a.b", "x y"} {
		_, err := c.Warmup(ctx, crabbox.WithChannel(bad))
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, bad)
		_, err = c.Promote(ctx, a.ID, crabbox.WithPromoteChannel(bad))
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, bad)
	}
}

// readBarrier holds every CurrentChannel until n of them have read the
// channel, so that n concurrent Promotes all read the same version before
// any of them writes.
type readBarrier struct {
	*crabboxtest.Cloud
	n       int
	mu      sync.Mutex
	arrived int
	all     chan struct{}
}

func newReadBarrier(cloud *crabboxtest.Cloud, n int) *readBarrier {
	return &readBarrier{Cloud: cloud, n: n, all: make(chan struct{})}
}

func (b *readBarrier) CurrentChannel(ctx context.Context, ch string) (*provider.ChannelEntry, error) {
	e, err := b.Cloud.CurrentChannel(ctx, ch)
	b.mu.Lock()
	b.arrived++
	if b.arrived == b.n {
		close(b.all)
	}
	b.mu.Unlock()
	select {
	case <-b.all:
	case <-ctx.Done():
	}
	return e, err
}

// eventLog collects a client's events.
type eventLog struct {
	mu  sync.Mutex
	evs []crabbox.Event
}

func (l *eventLog) add(e crabbox.Event) { l.mu.Lock(); l.evs = append(l.evs, e); l.mu.Unlock() }

// about returns the channel events (promoted, rolled back) naming image id.
func (l *eventLog) about(id string) []crabbox.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []crabbox.Event
	for _, e := range l.evs {
		if (e.Kind == crabbox.EventPromoted || e.Kind == crabbox.EventRolledBack) && e.State == id {
			out = append(out, e)
		}
	}
	return out
}

// requireLostRace checks that a Promote or Rollback that lost the channel
// to winner has no side effects: ErrConflict naming the winner, a nil
// Promotion, the losing image protected (the protection its call turned on
// before writing stays: lifting it would race cleanup) and its labels as before,
// no channel event for it, and the channel at the winner.
func requireLostRace(t *testing.T, ctx context.Context, c *crabbox.Client, pr *crabbox.Promotion, err error, before *crabbox.Image, winner string, log *eventLog) {
	t.Helper()
	require.ErrorIs(t, err, crabbox.ErrConflict)
	assert.Contains(t, err.Error(), winner, "the conflict names the winning image")
	assert.NotContains(t, err.Error(), "now points at "+before.ID, "the channel does not point at the loser")
	assert.Nil(t, pr, "the losing call returns no promotion")
	after, gerr := c.GetImage(ctx, before.ID)
	require.NoError(t, gerr)
	assert.True(t, after.Protected, "the losing image keeps the protection its call turned on")
	assert.Equal(t, before.Labels, after.Labels, "the losing image's labels are unchanged")
	assert.Empty(t, log.about(before.ID), "no channel event for the losing image")
	cur, gerr := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, gerr)
	assert.Equal(t, winner, cur.ID, "the winner's promotion stands")
}

// Two Promotes read the same channel version before either writes: the
// loser gets ErrConflict naming the winner and leaves no label, event or
// promotion behind.
func TestLosingConcurrentPromotionHasNoSideEffects(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	seed := bake(t, ctx, c, "seed")
	_, err := c.Promote(ctx, seed.ID, crabbox.Force("seed the channel"))
	require.NoError(t, err)
	ids := []string{bake(t, ctx, c, "alpha").ID, bake(t, ctx, c, "beta").ID}
	before := make([]*crabbox.Image, 2)
	for i, id := range ids {
		before[i], err = c.GetImage(ctx, id)
		require.NoError(t, err)
	}

	log := &eventLog{}
	rc := localClient(t, newReadBarrier(cloud, 2), crabbox.WithEvents(log.add))
	prs := make([]*crabbox.Promotion, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() { prs[i], errs[i] = rc.Promote(ctx, ids[i], crabbox.Force("race")) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			require.Equal(t, -1, winner, "both promotions won")
			winner = i
		}
	}
	require.NotEqual(t, -1, winner, "no promotion won: %v", errs)
	loser := 1 - winner
	require.NotNil(t, prs[winner])
	assert.True(t, prs[winner].Image.Protected)
	assert.Len(t, log.about(ids[winner]), 1, "one promoted event, for the winner")
	requireLostRace(t, ctx, c, prs[loser], errs[loser], before[loser], ids[winner], log)
}

// A promotion that loses the channel at its conditional write never lifts
// protection the image already had (here: the channel's previous image,
// protected by its own promotion).
func TestLosingPromotionKeepsProtectionItDidNotGive(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	d := bake(t, ctx, c, "delta")
	_, err := c.Promote(ctx, a.ID, crabbox.Force("first"))
	require.NoError(t, err)
	_, err = c.Promote(ctx, b.ID, crabbox.Force("second"))
	require.NoError(t, err)
	before, err := c.GetImage(ctx, a.ID)
	require.NoError(t, err)
	require.True(t, before.Protected, "the previous image keeps its protection")

	log := &eventLog{}
	rc := localClient(t, &racingCloud{Cloud: cloud, other: d.ID}, crabbox.WithEvents(log.add))
	pr, err := rc.Promote(ctx, a.ID, crabbox.Force("back to alpha"))
	requireLostRace(t, ctx, c, pr, err, before, d.ID, log)
}

// protectCheck records every channel write made while the image it points
// the channel at is not protected: a cleanup running at that moment could
// delete the image the channel is about to serve.
type protectCheck struct {
	*crabboxtest.Cloud
	mu          sync.Mutex
	unprotected []string
}

func (p *protectCheck) SetChannel(ctx context.Context, req provider.SetChannelRequest) (*provider.ChannelEntry, error) {
	img, err := p.Cloud.GetImage(ctx, req.ImageID)
	if err == nil && !img.Protected {
		p.mu.Lock()
		p.unprotected = append(p.unprotected, req.ImageID)
		p.mu.Unlock()
	}
	return p.Cloud.SetChannel(ctx, req)
}

// Promote and Rollback protect the image before the channel points at it.
func TestChannelPointsOnlyAtProtectedImages(t *testing.T) {
	cloud := crabboxtest.Start(t)
	pc := &protectCheck{Cloud: cloud}
	c := localClient(t, pc)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	promoteKnownGoodThen(t, ctx, c, a.ID, b.ID)
	// The rollback target lost its protection meanwhile (as MarkKnownGood
	// of a newer image does to superseded ones).
	require.NoError(t, cloud.ProtectImage(ctx, a.ID, false))
	rb, err := c.Rollback(ctx, crabbox.DefaultChannel, "qa failed")
	require.NoError(t, err)
	assert.True(t, rb.Image.Protected)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	assert.Empty(t, pc.unprotected, "the channel was pointed at images that were not yet protected")
}

// A Rollback that loses the channel at its conditional write leaves the
// rollback target as it was and marks nothing failed.
func TestLosingRollbackHasNoSideEffects(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	d := bake(t, ctx, c, "delta")
	promoteKnownGoodThen(t, ctx, c, a.ID, b.ID)
	require.NoError(t, cloud.ProtectImage(ctx, a.ID, false))
	before, err := c.GetImage(ctx, a.ID)
	require.NoError(t, err)

	log := &eventLog{}
	rc := localClient(t, &racingCloud{Cloud: cloud, other: d.ID}, crabbox.WithEvents(log.add))
	pr, err := rc.Rollback(ctx, crabbox.DefaultChannel, "racing")
	requireLostRace(t, ctx, c, pr, err, before, d.ID, log)
	img, err := c.GetImage(ctx, b.ID)
	require.NoError(t, err)
	assert.NotEqual(t, crabbox.StatusFailed, img.Status, "nothing was marked failed by the lost rollback")
}

// promoteBeforeHistory promotes another image (protecting it first, as
// Promote does) right before the channel's history is read, as a
// concurrent operator would.
type promoteBeforeHistory struct {
	*crabboxtest.Cloud
	once  sync.Once
	other string
	err   error
}

func (r *promoteBeforeHistory) ChannelHistory(ctx context.Context, ch string) ([]provider.ChannelEntry, error) {
	r.once.Do(func() {
		if r.err = r.Cloud.ProtectImage(ctx, r.other, true); r.err == nil {
			_, r.err = r.Cloud.SetChannel(ctx, provider.SetChannelRequest{Channel: ch, ImageID: r.other})
		}
	})
	return r.Cloud.ChannelHistory(ctx, ch)
}

// MarkKnownGood retires only images the known-good one superseded, never
// one a concurrent promotion made current after it.
func TestKnownGoodDoesNotRetireALaterPromotion(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	d := bake(t, ctx, c, "delta")
	_, err := c.Promote(ctx, a.ID, crabbox.Force("first"))
	require.NoError(t, err)
	_, err = c.Promote(ctx, b.ID, crabbox.Force("second"))
	require.NoError(t, err)
	rep := proveNormal(t, ctx, c, b.ID)

	racer := &promoteBeforeHistory{Cloud: cloud, other: d.ID}
	_, err = localClient(t, racer).MarkKnownGood(ctx, b.ID, rep)
	require.NoError(t, err)
	require.NoError(t, racer.err)
	old, err := c.GetImage(ctx, a.ID)
	require.NoError(t, err)
	assert.False(t, old.Protected, "the superseded image is retired")
	cur, err := c.GetImage(ctx, d.ID)
	require.NoError(t, err)
	assert.True(t, cur.Protected, "the concurrently promoted image lost its protection")
	assert.Nil(t, cur.Deprecated, "the concurrently promoted image was deprecated")
}

// While Promote(X -> "two") is between its protect and its write, another
// operator promotes X to "one" (sees X protected, gives nothing) and
// someone sets "two" to Z. The loser must not lift X's protection: channel
// "one" serves X.
type twoChannels struct {
	*crabboxtest.Cloud
	once   sync.Once
	before func()
}

func (r *twoChannels) SetChannel(ctx context.Context, req provider.SetChannelRequest) (*provider.ChannelEntry, error) {
	if req.Channel == "two" {
		r.once.Do(r.before)
	}
	return r.Cloud.SetChannel(ctx, req)
}

func TestLosingPromotionNeverUnprotectsAnImageAnotherChannelServes(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	x := bake(t, ctx, c, "xray")
	z := bake(t, ctx, c, "zulu")
	r := &twoChannels{Cloud: cloud}
	r.before = func() {
		_, err := c.Promote(ctx, x.ID, crabbox.Force("one"), crabbox.WithPromoteChannel("one"))
		require.NoError(t, err)
		require.NoError(t, cloud.ProtectImage(ctx, z.ID, true))
		_, err = cloud.SetChannel(ctx, provider.SetChannelRequest{Channel: "two", ImageID: z.ID})
		require.NoError(t, err)
	}
	rc := localClient(t, r)
	_, err := rc.Promote(ctx, x.ID, crabbox.Force("two"), crabbox.WithPromoteChannel("two"))
	require.ErrorIs(t, err, crabbox.ErrConflict)
	cur, err := c.Promoted(ctx, "one")
	require.NoError(t, err)
	require.Equal(t, x.ID, cur.ID)
	require.True(t, cur.Protected, "channel one serves %s but the losing promotion to two lifted its protection", x.ID)
}

// MarkKnownGood(B) retires A; just before the lift lands, an operator
// re-promotes A (Force). A ends current, unprotected, deprecated.
type repromoteBeforeRetire struct {
	*crabboxtest.Cloud
	once   sync.Once
	target string
	before func()
}

func (r *repromoteBeforeRetire) ProtectImage(ctx context.Context, id string, on bool) error {
	if id == r.target && !on {
		r.once.Do(r.before)
	}
	return r.Cloud.ProtectImage(ctx, id, on)
}

func TestKnownGoodRacingARepromotionKeepsItProtected(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	_, err := c.Promote(ctx, a.ID, crabbox.Force("first"))
	require.NoError(t, err)
	_, err = c.Promote(ctx, b.ID, crabbox.Force("second"))
	require.NoError(t, err)
	rep := proveNormal(t, ctx, c, b.ID)
	r := &repromoteBeforeRetire{Cloud: cloud, target: a.ID}
	r.before = func() {
		_, err := c.Promote(ctx, a.ID, crabbox.Force("back to alpha"))
		require.NoError(t, err)
	}
	_, err = localClient(t, r).MarkKnownGood(ctx, b.ID, rep)
	require.NoError(t, err)
	cur, err := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	require.Equal(t, a.ID, cur.ID)
	require.True(t, cur.Protected, "the channel serves %s, which MarkKnownGood just unprotected", a.ID)
}

// MarkKnownGood(B) has read the channel and its history when an operator
// rolls back to A. MarkKnownGood then retires A, which the channel serves.
type rollbackAfterHistory struct {
	*crabboxtest.Cloud
	once sync.Once
	do   func()
}

func (r *rollbackAfterHistory) ChannelHistory(ctx context.Context, ch string) ([]provider.ChannelEntry, error) {
	h, err := r.Cloud.ChannelHistory(ctx, ch)
	r.once.Do(r.do)
	return h, err
}

func TestKnownGoodRacingARollbackKeepsTheTargetProtected(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	promoteKnownGoodThen(t, ctx, c, a.ID, b.ID)
	rep := proveNormal(t, ctx, c, b.ID)
	r := &rollbackAfterHistory{Cloud: cloud}
	r.do = func() {
		_, err := c.Rollback(ctx, crabbox.DefaultChannel, "qa failed")
		require.NoError(t, err)
	}
	_, err := localClient(t, r).MarkKnownGood(ctx, b.ID, rep)
	t.Logf("MarkKnownGood: %v", err)
	cur, err := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	require.Equal(t, a.ID, cur.ID)
	bi, _ := c.GetImage(ctx, b.ID)
	t.Logf("rolled-back image status %s", bi.Status)
	require.True(t, cur.Protected, "channel serves rollback target %s, unprotected by a concurrent MarkKnownGood", a.ID)
}

// Promoting the image a channel already serves protects it again: a way to
// repair an image that something else unprotected.
func TestRepromotingTheCurrentImageProtectsIt(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	x := bake(t, ctx, c, "xray")
	_, err := c.Promote(ctx, x.ID, crabbox.Force("first"))
	require.NoError(t, err)
	require.NoError(t, cloud.ProtectImage(ctx, x.ID, false))
	pr, err := c.Promote(ctx, x.ID, crabbox.Force("again"))
	require.NoError(t, err)
	assert.True(t, pr.Image.Protected)
	cur, err := c.GetImage(ctx, x.ID)
	require.NoError(t, err)
	assert.True(t, cur.Protected, "the served image is protected again")
}

// A re-promotion of A has protected A and is about to write the channel
// when MarkKnownGood(B) lifts A's protection and reads the channel (still
// at B, so the retire sees nothing to undo). The promotion must re-check
// protection after its write and turn it back on.
type retireRacer struct {
	*crabboxtest.Cloud
	target string
	lifted atomic.Bool
	once   sync.Once
	read   chan struct{} // closed once the retire has read the channel
}

func (r *retireRacer) CurrentChannel(ctx context.Context, ch string) (*provider.ChannelEntry, error) {
	e, err := r.Cloud.CurrentChannel(ctx, ch)
	if r.lifted.Load() {
		r.once.Do(func() { close(r.read) })
	}
	return e, err
}

func (r *retireRacer) ProtectImage(ctx context.Context, id string, on bool) error {
	err := r.Cloud.ProtectImage(ctx, id, on)
	if id == r.target && !on {
		r.lifted.Store(true)
	}
	return err
}

// promoterHeld protects through the cloud, reports that, and holds its
// channel write until the retire has read the channel.
type promoterHeld struct {
	*crabboxtest.Cloud
	target    string
	protected chan struct{}
	once      sync.Once
	read      chan struct{}
}

func (p *promoterHeld) ProtectImage(ctx context.Context, id string, on bool) error {
	err := p.Cloud.ProtectImage(ctx, id, on)
	if id == p.target && on {
		p.once.Do(func() { close(p.protected) })
	}
	return err
}

func (p *promoterHeld) SetChannel(ctx context.Context, req provider.SetChannelRequest) (*provider.ChannelEntry, error) {
	select {
	case <-p.read:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return p.Cloud.SetChannel(ctx, req)
}

func TestPromotionAfterARetireReadProtectsAgain(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	_, err := c.Promote(ctx, a.ID, crabbox.Force("first"))
	require.NoError(t, err)
	_, err = c.Promote(ctx, b.ID, crabbox.Force("second"))
	require.NoError(t, err)
	rep := proveNormal(t, ctx, c, b.ID)
	read := make(chan struct{})
	p := &promoterHeld{Cloud: cloud, target: a.ID, protected: make(chan struct{}), read: read}
	r := &retireRacer{Cloud: cloud, target: a.ID, read: read}
	done := make(chan error, 1)
	go func() {
		_, err := localClient(t, p).Promote(ctx, a.ID, crabbox.Force("back to alpha"))
		done <- err
	}()
	select { // the promotion protected A and waits to write
	case <-p.protected:
	case err := <-done:
		t.Fatalf("the promotion ended before protecting: %v", err)
	}
	_, err = localClient(t, r).MarkKnownGood(ctx, b.ID, rep)
	require.NoError(t, err)
	require.NoError(t, <-done)
	require.True(t, r.lifted.Load(), "the retire lifted A's protection")
	cur, err := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	require.Equal(t, a.ID, cur.ID)
	require.True(t, cur.Protected, "the channel serves %s, unprotected by a retire the promotion did not see", a.ID)
}

// TestPromotedEmptyMeansDefault: Promoted("") reads the default channel.
func TestPromotedEmptyMeansDefault(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	img := bake(t, ctx, c, "default")
	_, err := c.Promote(ctx, img.ID, crabbox.WithProof(proveImage(t, ctx, c, img.ID)))
	require.NoError(t, err)
	got, err := c.Promoted(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, img.ID, got.ID)
}

// sameImageElsewhere promotes the image of a Promote to channel "beta" (a
// second operator) and moves "default" to another image, both between the
// Promote's read of "default" and its write, so the Promote loses while
// beta serves its image.
type sameImageElsewhere struct {
	*crabboxtest.Cloud
	once   sync.Once
	beta   func()
	winner string
}

func (s *sameImageElsewhere) SetChannel(ctx context.Context, req provider.SetChannelRequest) (*provider.ChannelEntry, error) {
	if req.Channel == crabbox.DefaultChannel {
		s.once.Do(func() {
			s.beta()
			if _, err := s.Cloud.SetChannel(ctx, provider.SetChannelRequest{Channel: req.Channel, ImageID: s.winner}); err != nil {
				panic(err)
			}
		})
	}
	return s.Cloud.SetChannel(ctx, req)
}

// TestLostPromotionKeepsProtectionOfAServedImage: a concurrent promotion
// made the loser's image beta's: it stays protected.
func TestLostPromotionKeepsProtectionOfAServedImage(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	repA := proveImage(t, ctx, c, a.ID)
	other := localClient(t, cloud)
	racer := &sameImageElsewhere{Cloud: cloud, winner: b.ID, beta: func() {
		_, err := other.Promote(ctx, a.ID, crabbox.WithProof(repA), crabbox.WithPromoteChannel("beta"))
		require.NoError(t, err)
	}}
	rc := localClient(t, racer)
	pr, err := rc.Promote(ctx, a.ID, crabbox.WithProof(repA))
	require.ErrorIs(t, err, crabbox.ErrConflict)
	assert.Nil(t, pr)
	got, err := c.GetImage(ctx, a.ID)
	require.NoError(t, err)
	assert.True(t, got.Protected, "beta serves the image: it must stay protected")
	beta, err := c.Promoted(ctx, "beta")
	require.NoError(t, err)
	assert.Equal(t, a.ID, beta.ID)
}

// TestMarkKnownGoodNeedsTheServedImage: a rolled-back (failed) image, or
// one the channel no longer serves, cannot be marked known-good with a
// report from when it was served (an independent review revived a
// rolled-back image this way and promoted it again).
func TestMarkKnownGoodNeedsTheServedImage(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	x := bake(t, ctx, c, "x")
	y := bake(t, ctx, c, "y")
	_, err := c.Promote(ctx, x.ID, crabbox.WithProof(proveImage(t, ctx, c, x.ID)))
	require.NoError(t, err)
	_, err = c.MarkKnownGood(ctx, x.ID, proveNormal(t, ctx, c, x.ID))
	require.NoError(t, err)
	_, err = c.Promote(ctx, y.ID, crabbox.WithProof(proveImage(t, ctx, c, y.ID)))
	require.NoError(t, err)
	ry := proveNormal(t, ctx, c, y.ID)
	_, err = c.Rollback(ctx, crabbox.DefaultChannel, "QA failed")
	require.NoError(t, err)
	_, err = c.MarkKnownGood(ctx, y.ID, ry)
	require.ErrorIs(t, err, crabbox.ErrInvalidArgument, "a failed image")
	got, err := c.GetImage(ctx, y.ID)
	require.NoError(t, err)
	assert.Equal(t, crabbox.StatusFailed, got.Status)

	// Superseded, not failed: still refused, the channel serves another.
	z := bake(t, ctx, c, "z")
	_, err = c.Promote(ctx, z.ID, crabbox.WithProof(proveImage(t, ctx, c, z.ID)))
	require.NoError(t, err)
	rz := proveNormal(t, ctx, c, z.ID)
	_, err = c.Promote(ctx, x.ID, crabbox.Force("back to x"))
	require.NoError(t, err)
	_, err = c.MarkKnownGood(ctx, z.ID, rz)
	require.ErrorIs(t, err, crabbox.ErrConflict)
	assert.Contains(t, err.Error(), x.ID)
}

// TestRetireKeepsImagesAnotherChannelServes: MarkKnownGood and Rollback in
// one channel do not unprotect or deprecate an image another channel
// still serves.
func TestRetireKeepsImagesAnotherChannelServes(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	x := bake(t, ctx, c, "x")
	y := bake(t, ctx, c, "y")
	rx := proveImage(t, ctx, c, x.ID)
	_, err := c.Promote(ctx, x.ID, crabbox.WithProof(rx))
	require.NoError(t, err)
	_, err = c.MarkKnownGood(ctx, x.ID, proveNormal(t, ctx, c, x.ID))
	require.NoError(t, err)
	_, err = c.Promote(ctx, x.ID, crabbox.WithProof(rx), crabbox.WithPromoteChannel("beta"))
	require.NoError(t, err)
	_, err = c.Promote(ctx, y.ID, crabbox.WithProof(proveImage(t, ctx, c, y.ID)))
	require.NoError(t, err)
	_, err = c.MarkKnownGood(ctx, y.ID, proveNormal(t, ctx, c, y.ID))
	require.NoError(t, err)
	got, err := c.GetImage(ctx, x.ID)
	require.NoError(t, err)
	assert.True(t, got.Protected, "beta serves x: MarkKnownGood in default must not retire it")
	assert.Nil(t, got.Deprecated)

	// The other way round: y served by beta too, default rolls back from
	// y to x.
	_, err = c.Promote(ctx, y.ID, crabbox.Force("y to beta"), crabbox.WithPromoteChannel("beta"))
	require.NoError(t, err)
	_, err = c.Rollback(ctx, crabbox.DefaultChannel, "QA failed")
	require.NoError(t, err)
	got, err = c.GetImage(ctx, y.ID)
	require.NoError(t, err)
	assert.True(t, got.Protected, "beta serves y: the rollback of default must not unprotect it")
}

// A promotion whose channel write landed without its bookkeeping (the call
// gave up before a slow provider applied the write): promoting the image
// again finds the channel already pointing at it and writes the missing
// promoted label.
func TestPromoteAgainLabelsAnAlreadyCurrentImage(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	rep := proveImage(t, ctx, c, a.ID)
	pr, err := c.Promote(ctx, a.ID, crabbox.WithProof(rep))
	require.NoError(t, err)
	key := "crabbox-promoted-" + crabbox.DefaultChannel
	require.NoError(t, cloud.UpdateImageLabels(ctx, a.ID, map[string]string{key: ""}))
	img, err := c.GetImage(ctx, a.ID)
	require.NoError(t, err)
	require.Empty(t, img.Labels[key])

	again, err := c.Promote(ctx, a.ID, crabbox.WithProof(rep))
	require.NoError(t, err)
	assert.Equal(t, pr.Version, again.Version, "no second channel write")
	img, err = c.GetImage(ctx, a.ID)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(img.Labels[key], fmt.Sprintf("%d.", pr.Version)), "promoted label %q", img.Labels[key])
}
