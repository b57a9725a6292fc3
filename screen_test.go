// Tests of screen.go through a lease: Screenshot.

package crabbox_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
)

func TestScreenshotOfAnEmulatedBoxWithoutDisplay(t *testing.T) {
	// A local-cloud lease without a desktop must not capture the host's
	// :99 even when the host runs one.
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer l.Release(context.Background())
	_, err = l.Screenshot(ctx)
	assert.ErrorIs(t, err, crabbox.ErrNoDisplay)
}
