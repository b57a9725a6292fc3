// Tests of channel.go: promotion with proof, conflicts, rollback, known-good, channels.

package crabbox_test

import (
	"context"
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

func TestRollbackRacingAPromotionIsAConflict(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	d := bake(t, ctx, c, "delta")
	_, err := c.Promote(ctx, a.ID, crabbox.WithProof(proveImage(t, ctx, c, a.ID)))
	require.NoError(t, err)
	_, err = c.MarkKnownGood(ctx, a.ID, proveNormal(t, ctx, c, a.ID))
	require.NoError(t, err)
	_, err = c.Promote(ctx, b.ID, crabbox.WithProof(proveImage(t, ctx, c, b.ID)))
	require.NoError(t, err)

	rc := localClient(t, &historyRacer{Cloud: cloud, other: d.ID})
	_, err = rc.Rollback(ctx, crabbox.DefaultChannel, "racing")
	require.ErrorIs(t, err, crabbox.ErrConflict)
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
