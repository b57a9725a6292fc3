package crabbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
)

// lostCopy copies an image, then loses the reply: the driver found the copy
// by its token and hands it back with the error, as awsec2 does.
type lostCopy struct {
	*crabboxtest.Cloud
}

func (l lostCopy) CopyImage(ctx context.Context, id, region, name string) (*provider.Image, error) {
	return &provider.Image{ID: "copy-of-" + id, Name: name, State: provider.ImagePending},
		provider.Errorf(provider.ErrUnavailable, "the copy's reply was lost")
}

// A copy made by a call that then failed comes back with the error, so the
// caller can keep or delete it: it is never lost.
func TestCopyImageHandsBackTheCopyOfAFailedCall(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c, err := crabbox.New(lostCopy{cloud}, crabbox.WithStateDir(t.TempDir()), crabbox.WithRetryAttempts(1))
	require.NoError(t, err)
	ctx := testCtx(t)
	src, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer src.Release(context.Background())
	name, err := crabbox.NewImageName("acme", "crabbox", "copy", time.Now())
	require.NoError(t, err)
	img, err := c.CreateImage(ctx, src.ID, name.String(), crabbox.WithWait(0))
	require.NoError(t, err)

	cp, err := c.CopyImage(ctx, img.ID, "eu-west-1")
	require.Error(t, err)
	assert.ErrorIs(t, err, crabbox.ErrUnavailable)
	require.NotNil(t, cp, "the copy the failed call made must come back with the error")
	assert.Equal(t, "copy-of-"+img.ID, cp.ID)
	assert.Equal(t, "eu-west-1", cp.Region)
}
