// Tests of image.go: CreateImage, its failures and adoption, image filters, the Image record.

package crabbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

func TestCreateImageAgainAdoptsTheImage(t *testing.T) {
	cloud := crabboxtest.Start(t, crabboxtest.WithImagePendingPolls(1000000))
	c := localClient(t, cloud)
	ctx := testCtx(t)
	src, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer src.Release(context.Background())
	name := imageName(t, "again")
	first, err := c.CreateImage(ctx, src.ID, name, crabbox.WithWait(100*time.Millisecond))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	n := cloud.ImageCount()
	second, err := c.CreateImage(ctx, src.Slug, name)
	require.NoError(t, err)
	assert.Equal(t, first.ID, second.ID, "the same lease and name adopt the image")
	assert.Equal(t, n, cloud.ImageCount(), "no second image")
}

func TestImageCreationFailuresKeepTheImageID(t *testing.T) {
	t.Run("failed state names the reason", func(t *testing.T) {
		cloud := crabboxtest.Start(t)
		c := localClient(t, cloud)
		ctx := testCtx(t)
		src, err := c.Warmup(ctx)
		require.NoError(t, err)
		defer src.Release(context.Background())
		cloud.FailNextImage("disk snapshot error (test)")
		img, err := c.CreateImage(ctx, src.Slug, imageName(t, "broken"), crabbox.WithWait(time.Minute))
		require.Error(t, err)
		require.NotNil(t, img, "the image is returned with the error")
		assert.NotEmpty(t, img.ID)
		assert.ErrorIs(t, err, crabbox.ErrImageFailed)
		var we *crabbox.WaitError
		require.ErrorAs(t, err, &we)
		assert.Equal(t, "failed", we.LastState)
		assert.Contains(t, err.Error(), "disk snapshot error (test)")
		// Not promotable even with a forged passing report.
		_, err = c.Promote(ctx, img.ID, crabbox.WithProof(&crabbox.SmokeReport{ImageID: img.ID, Passed: 1,
			Results: []crabbox.CheckResult{{Title: "x", Passed: true}}}))
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	})
	t.Run("timeout returns the pending image", func(t *testing.T) {
		cloud := crabboxtest.Start(t, crabboxtest.WithImagePendingPolls(1000000))
		c := localClient(t, cloud)
		ctx := testCtx(t)
		src, err := c.Warmup(ctx)
		require.NoError(t, err)
		defer src.Release(context.Background())
		img, err := c.CreateImage(ctx, src.ID, imageName(t, "slow"), crabbox.WithWait(200*time.Millisecond))
		require.Error(t, err)
		require.NotNil(t, img)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		var we *crabbox.WaitError
		require.ErrorAs(t, err, &we)
		assert.Equal(t, "pending", we.LastState)
		got, err := c.GetImage(ctx, img.ID)
		require.NoError(t, err, "the image id from the failed wait finds the image")
		assert.Equal(t, img.Name, got.Name)
	})
	t.Run("bad names are rejected before anything is made", func(t *testing.T) {
		cloud := crabboxtest.Start(t)
		c := localClient(t, cloud)
		ctx := testCtx(t)
		before := cloud.ImageCount()
		for _, name := range []string{"", "my image", "crabbox-test-x-2026-01-01"} {
			_, err := c.CreateImage(ctx, "cbx_000000000000", name)
			assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, name)
		}
		_, err := c.CreateImage(ctx, "cbx_000000000000", imageName(t, "ok"))
		assert.ErrorIs(t, err, crabbox.ErrNotFound, "unknown lease")
		assert.Equal(t, before, cloud.ImageCount())
	})
}

func TestImageJSONRecord(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	img := bake(t, ctx, c, "record")
	b, err := json.Marshal(img)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{"id", "name", "provider", "region", "state", "source_lease", "created", "operator", "snapshots"} {
		assert.Contains(t, m, k)
	}
	assert.Equal(t, "tester", m["operator"])
	assert.Equal(t, "available", m["state"])
	assert.Len(t, m["snapshots"], 1)
}

func TestImagesUnsupportedOnExistingHosts(t *testing.T) {
	drv, err := sshhost.New([]sshhost.Host{{Addr: "127.0.0.1:1", User: "u", Signer: mustSigner(t), HostKey: mustSigner(t).PublicKey()}})
	require.NoError(t, err)
	c := localClient(t, drv)
	ctx := testCtx(t)
	_, err = c.Images(ctx)
	assert.ErrorIs(t, err, crabbox.ErrUnsupported)
	_, err = c.Promoted(ctx, "default")
	assert.ErrorIs(t, err, crabbox.ErrUnsupported)
	_, err = c.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	assert.ErrorIs(t, err, crabbox.ErrUnsupported)
	var oe *crabbox.OpError
	assert.True(t, errors.As(err, &oe))
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
	_, err = c.CreateImage(ctx, src.ID, imageName(t, "beta"), crabbox.WithImageLabels(map[string]string{"crabbox-status": "known-good"}), crabbox.WithReboot())
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, "reserved label keys are refused")

	_, err = c.CreateImage(ctx, src.ID, "scratch_image.v2")
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, "outside the naming convention")
	free, err := c.CreateImage(ctx, src.ID, "scratch_image.v2", crabbox.WithAnyName(), crabbox.WithWait(time.Minute),
		crabbox.WithNoReboot(false)) // the deprecated spelling of WithReboot
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
	assert.Equal(t, []string{free.ID}, ids(c.Images(ctx, crabbox.HasStatus(crabbox.StatusFailed))))
	assert.Equal(t, []string{a.ID}, ids(c.Images(ctx, crabbox.HasLabel("team", "qa-lane"))))
	// The deprecated spellings still work.
	assert.Equal(t, []string{free.ID}, ids(c.Images(ctx, crabbox.WithStatus(crabbox.StatusFailed))))
	assert.Equal(t, []string{a.ID}, ids(c.Images(ctx, crabbox.WithLabel("team", "qa-lane"))))
}
