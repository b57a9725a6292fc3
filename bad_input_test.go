// Tests of bad input to New (crabbox.go) and to the label options
// (lease_options.go WithLabels, image.go WithImageLabels): each is refused
// with ErrInvalidArgument before anything is created.

package crabbox_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

func TestNewRejectsTypedNilDriver(t *testing.T) {
	for name, drv := range map[string]provider.Driver{
		"*crabboxtest.Cloud": (*crabboxtest.Cloud)(nil),
		"*sshhost.Driver":    (*sshhost.Driver)(nil),
	} {
		var c *crabbox.Client
		var err error
		require.NotPanics(t, func() { c, err = crabbox.New(drv, crabbox.WithStateDir(t.TempDir())) }, name)
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, name)
		assert.Nil(t, c, name)
	}
}

var badLabelKeys = map[string]string{
	"empty":                  "",
	"blank":                  " ",
	"slash":                  "team/owner",
	"leading dash":           "-x",
	"too long":               "k123456789012345678901234567890123456789012345678901234567890123",
	"reserved":               "crabbox-x",
	"created-by":             crabbox.LabelCreatedBy,
	"reserved, upper case":   "CRABBOX-image-src",
	"created-by, mixed case": "Created-By",
	"unicode":                "tëam",
	"trailing dot":           "team.",
	"only specials":          "...",
}

func TestWithLabelsRejectsBadKeysAndCreatesNothing(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	for name, k := range badLabelKeys {
		l, err := c.Warmup(ctx, crabbox.WithLabels(map[string]string{k: "v"}))
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, name)
		if l != nil {
			_ = l.Release(context.Background())
		}
	}
	ms, err := cloud.ListMachines(ctx, nil)
	require.NoError(t, err)
	assert.Empty(t, ms, "a machine was created with a bad label key")
}

func TestWithImageLabelsRejectsBadKeysAndCreatesNothing(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	src, err := c.Warmup(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = src.Release(context.Background()) })
	for name, k := range badLabelKeys {
		img, err := c.CreateImage(ctx, src.ID, imageName(t, "badlabel"), crabbox.WithImageLabels(map[string]string{k: "v"}))
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, name)
		assert.Nil(t, img, name)
	}
	imgs, err := cloud.ListImages(ctx, map[string]string{crabbox.LabelManaged: "true"})
	require.NoError(t, err)
	assert.Empty(t, imgs, "an image was created with a bad label key")
}
