// Tests of smoke_checks.go through a lease on a real desktop test host: the
// screenshot check on a blank display.

package crabbox_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
)

func TestDesktopBlankDisplayFailsScreenshotCheck(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{})
	h.mustBootstrap(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	rep, err := crabbox.Smoke(ctx, h.l, []crabbox.SmokeCheck{crabbox.ScreenshotNotBlank().WithRetry(0, 0)},
		crabbox.WithEvidenceDir(dir))
	require.ErrorIs(t, err, crabbox.ErrSmokeFailed)
	require.Len(t, rep.Results, 1)
	r := rep.Results[0]
	assert.False(t, r.Passed)
	assert.Contains(t, r.Error, "blank")
	require.Len(t, r.Evidence, 1, "the blank screenshot is kept as evidence")
	data, err := os.ReadFile(r.Evidence[0])
	require.NoError(t, err)
	st, err := crabbox.JudgeScreenshot(data)
	require.NoError(t, err)
	assert.True(t, st.Blank(), "%s", st)
}
