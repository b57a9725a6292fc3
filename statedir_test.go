// Tests of statedir.go: the lease keys in the state dir.

package crabbox_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
)

func TestStateDirKeysArePrivateAndRemovedOnRelease(t *testing.T) {
	cloud := crabboxtest.Start(t)
	state := t.TempDir()
	c, err := crabbox.New(cloud, append(fast(), crabbox.WithStateDir(state))...)
	require.NoError(t, err)
	ctx := testCtx(t)
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	dir := filepath.Join(state, "leases", l.ID)
	st, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	for _, f := range []string{"id_ed25519", "host_key.pub"} {
		st, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err, f)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
	}
	require.NoError(t, l.Release(context.Background()))
	_, err = os.Stat(dir)
	assert.True(t, os.IsNotExist(err), "release removes the lease's keys")
}
