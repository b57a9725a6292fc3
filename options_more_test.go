package crabbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
)

func TestChannelsAreIndependent(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	_, err := c.Promote(ctx, a.ID, crabbox.WithProof(proveImage(t, ctx, c, a.ID)), crabbox.ToChannel("beta"))
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
	kg, err := c.MarkKnownGood(ctx, a.ID, rep, crabbox.ToChannel("beta"))
	require.NoError(t, err)
	assert.Equal(t, crabbox.StatusKnownGood, kg.Status)

	for _, bad := range []string{"", "Beta_1", "a.b", "x y"} {
		_, err := c.Warmup(ctx, crabbox.WithChannel(bad))
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, bad)
		_, err = c.Promote(ctx, a.ID, crabbox.ToChannel(bad))
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, bad)
	}
}

func TestImageFiltersLabelsAndNames(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	src, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer src.Release(context.Background())

	a, err := c.CreateImage(ctx, src.ID, imageName(t, "alpha"), crabbox.WithWait(time.Minute),
		crabbox.WithImageLabels(map[string]string{"team": "qa lane"}))
	require.NoError(t, err)
	assert.Equal(t, "qa-lane", a.Labels["team"])
	_, err = c.CreateImage(ctx, src.ID, imageName(t, "beta"), crabbox.WithImageLabels(map[string]string{"crabbox-status": "known-good"}))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, "reserved label keys are refused")

	_, err = c.CreateImage(ctx, src.ID, "scratch_image.v2")
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, "outside the naming convention")
	free, err := c.CreateImage(ctx, src.ID, "scratch_image.v2", crabbox.WithAnyName(), crabbox.WithWait(time.Minute))
	require.NoError(t, err)
	assert.Equal(t, "scratch_image.v2", free.Name)
	_, err = c.CreateImage(ctx, src.ID, "bad name!", crabbox.WithAnyName())
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	require.NoError(t, c.MarkFailed(ctx, free.ID))

	ids := func(imgs []*crabbox.Image, err error) []string {
		require.NoError(t, err)
		var out []string
		for _, img := range imgs {
			out = append(out, img.ID)
		}
		return out
	}
	owned := ids(c.Images(ctx))
	assert.ElementsMatch(t, []string{a.ID, free.ID}, owned, "by default only crabbox's images")
	assert.ElementsMatch(t, owned, ids(c.Images(ctx, crabbox.OwnedImages())))
	assert.Contains(t, ids(c.Images(ctx, crabbox.AllImages())), crabboxtest.BaseImageID)
	assert.Equal(t, []string{free.ID}, ids(c.Images(ctx, crabbox.WithStatus(crabbox.StatusFailed))))
	assert.Equal(t, []string{a.ID}, ids(c.Images(ctx, crabbox.WithLabel("team", "qa-lane"))))
}

func TestArchAndClasses(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	l, err := c.Warmup(ctx, crabbox.WithArch("arm64"), crabbox.WithClass(crabbox.ClassTiny))
	require.NoError(t, err)
	defer l.Release(context.Background())
	types, err := cloud.MachineTypes(crabbox.ClassTiny, "arm64")
	require.NoError(t, err)
	assert.Equal(t, types[0], l.MachineType, "arm64 picks the class's arm64 types")
	_, err = c.Warmup(ctx, crabbox.WithArch("x86"))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)

	cl := crabbox.Classes()
	require.Equal(t, []string{"tiny", "small", "standard", "fast", "large", "beast"}, cl)
	cl[0] = "changed"
	assert.Equal(t, "tiny", crabbox.Classes()[0], "Classes returns a copy")
}
