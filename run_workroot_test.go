// Tests of run.go with an existing host whose work root is set
// (sshhost.Host.WorkRoot): commands run in it.

package crabbox_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

func TestSSHHostWorkRootIsWhereCommandsRun(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	work := filepath.Join(srv.Dir, "work root") // a space: quoted
	require.NoError(t, os.Mkdir(work, 0o777))
	require.NoError(t, os.Chmod(work, 0o777))
	h := hostFor(srv)
	h.WorkRoot = work
	c, drv := sshhostClient(t, []sshhost.Host{h})
	ctx := testCtx(t)
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	for _, opts := range [][]crabbox.RunOption{nil, {crabbox.Strict()}, {crabbox.WithEnv(map[string]string{"X": "1"})}} {
		res, err := l.Run(ctx, "pwd", opts...)
		require.NoError(t, err)
		assert.Equal(t, work+"\n", res.StdoutTail)
	}

	// Re-attached from another client, the lease still runs there.
	other, err := crabbox.New(drv, crabbox.WithStateDir(t.TempDir()))
	require.NoError(t, err)
	again, err := other.Lease(ctx, l.ID)
	require.NoError(t, err)
	defer again.Close()
	res, err := again.Run(ctx, "pwd")
	require.NoError(t, err)
	assert.Equal(t, work+"\n", res.StdoutTail)
}
