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

// A machine whose lease-id label climbs out of the state dir is not
// re-attached, even when key files wait at the path it names, and is not
// listed as a lease.
func TestLeaseIDFromLabelValidatedBeforeAnyPath(t *testing.T) {
	cloud := crabboxtest.Start(t)
	base := t.TempDir()
	state := filepath.Join(base, "state")
	c, err := crabbox.New(cloud, append(fast(), crabbox.WithStateDir(state))...)
	require.NoError(t, err)
	ctx := testCtx(t)
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	// Working keys where "../../outside" leads from <state>/leases.
	outside := filepath.Join(base, "outside")
	require.NoError(t, os.MkdirAll(outside, 0o700))
	for _, f := range []string{"id_ed25519", "host_key.pub"} {
		b, err := os.ReadFile(filepath.Join(state, "leases", l.ID, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(outside, f), b, 0o600))
	}
	require.NoError(t, cloud.UpdateMachineLabels(ctx, l.MachineID, map[string]string{crabbox.LabelLease: "../../outside"}))

	got, err := c.Lease(ctx, l.Slug)
	if err == nil {
		_, rerr := got.Run(ctx, "true")
		t.Fatalf("re-attached a machine labelled with lease ../../outside (run: %v)", rerr)
	}
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	ls, err := c.Leases(ctx)
	require.NoError(t, err)
	for _, x := range ls {
		assert.NotEqual(t, l.MachineID, x.MachineID, "a machine with an invalid lease id is listed as a lease")
	}
	require.NoError(t, cloud.UpdateMachineLabels(ctx, l.MachineID, map[string]string{crabbox.LabelLease: l.ID}))
}

// Failures of the state dir match ErrStateDir: one that cannot be created
// (Warmup then creates nothing), a lease whose keys are missing or corrupt.
func TestStateDirFailuresMatchErrStateDir(t *testing.T) {
	cloud := crabboxtest.Start(t)
	ctx := testCtx(t)
	notDir := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(notDir, []byte("x"), 0o600))
	c, err := crabbox.New(cloud, append(fast(), crabbox.WithStateDir(notDir))...)
	require.NoError(t, err)
	l, err := c.Warmup(ctx)
	assert.Nil(t, l)
	assert.ErrorIs(t, err, crabbox.ErrStateDir)
	ms, err := cloud.ListMachines(ctx, nil)
	require.NoError(t, err)
	assert.Empty(t, ms, "a machine was created without its keys saved")

	state := t.TempDir()
	c, err = crabbox.New(cloud, append(fast(), crabbox.WithStateDir(state))...)
	require.NoError(t, err)
	l, err = c.Warmup(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	key := filepath.Join(state, "leases", l.ID, "id_ed25519")
	other, err := crabbox.New(cloud, append(fast(), crabbox.WithStateDir(state))...)
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(key, []byte("not a key"), 0o600))
	again, err := other.Lease(ctx, l.ID)
	require.NoError(t, err)
	_, err = again.Run(ctx, "true")
	assert.ErrorIs(t, err, crabbox.ErrStateDir, "corrupt key")
	again.Close()

	require.NoError(t, os.Remove(key))
	again, err = other.Lease(ctx, l.ID)
	require.NoError(t, err)
	_, err = again.Run(ctx, "true")
	assert.ErrorIs(t, err, crabbox.ErrStateDir, "missing key")
	assert.ErrorIs(t, err, crabbox.ErrNotFound, "missing key")
	again.Close()
}
