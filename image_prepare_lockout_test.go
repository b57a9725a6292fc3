// Tests of WithPrepare (image.go) on the local cloud: the prepared source
// box no longer lets the lease's key in.

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

func TestPrepareLocksTheSourceLeaseKeyOut(t *testing.T) {
	cloud := crabboxtest.Start(t)
	state := t.TempDir()
	c, err := crabbox.New(cloud, append(fast(), crabbox.WithStateDir(state), crabbox.WithOperator("tester"))...)
	require.NoError(t, err)
	ctx := testCtx(t)
	src, err := c.Warmup(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = src.Release(context.Background()) })
	_, err = c.CreateImage(ctx, src.ID, imageName(t, "lockout"), crabbox.WithPrepare(), crabbox.WithWait(time.Minute))
	require.NoError(t, err)

	// A new connection with the source lease's key (as another process
	// re-attaching would open) is refused.
	other, err := crabbox.New(cloud, append(fast(), crabbox.WithStateDir(state))...)
	require.NoError(t, err)
	again, err := other.Lease(ctx, src.ID)
	require.NoError(t, err)
	defer again.Close()
	short, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = again.Run(short, "true")
	require.Error(t, err, "the source lease's key still logs in after WithPrepare")
	assert.Contains(t, err.Error(), "authenticat")
}
