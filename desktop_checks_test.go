// Tests of desktop_checks.go on a desktop lease of the embedded local cloud:
// the DesktopProof set.

package crabbox_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
)

// TestDesktopOnLocalCloud runs the desktop methods and the desktop proof on
// a desktop lease of the embedded local cloud (its machine has its own
// Xvfb and runs commands as this process's user).
func TestDesktopOnLocalCloud(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	cloud := crabboxtest.Start(t)
	c, err := crabbox.New(cloud, crabbox.WithStateDir(t.TempDir()),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(20*time.Millisecond)))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := c.Warmup(ctx, crabbox.WithDesktop(), crabbox.WithBrowser())
	require.NoError(t, err)
	defer l.Release(context.Background())

	summary, err := l.PrepareDesktop(ctx)
	require.NoError(t, err)
	assert.Contains(t, summary, "1280 800")

	dir := t.TempDir()
	rep, err := crabbox.Smoke(ctx, l, append(crabbox.DesktopProof(), crabbox.NoBrowserProfiles()), crabbox.WithEvidenceDir(dir))
	require.NoError(t, err, "%+v", rep)
	assert.Len(t, rep.Results[0].Evidence, 1)
	assert.Len(t, rep.Results[1].Evidence, 1)
	// Browser directories live below the machine's file system and are gone.
	left, err := filepath.Glob(filepath.Join(boxRoot(t, l), "tmp", "crabbox-*"))
	require.NoError(t, err)
	assert.Empty(t, left)
}
