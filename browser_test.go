// Tests of browser.go on a real desktop test host: OpenURL with a fresh
// profile, Browser.Close leaving nothing, a cancelled OpenURL.

package crabbox_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
)

func TestDesktopBrowserWindowPassesAndLeavesNoProfile(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{})
	h.mustBootstrap(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pageURL := h.writePage(t, "Crabbox QA page")

	b, err := h.l.OpenURL(ctx, pageURL)
	require.NoError(t, err)
	defer b.Close(context.Background())
	assert.Equal(t, "/usr/bin/chromium", b.Path)
	assert.True(t, strings.HasPrefix(b.Dir, "/tmp/crabbox-browser."), b.Dir)
	hostDir := filepath.Join(h.root, b.Dir)
	assert.DirExists(t, filepath.Join(hostDir, "profile"))

	// The browser runs with the flags and the fresh profile, with the
	// sandbox (not root).
	// Debian's /usr/bin/chromium is a script that execs the browser: while
	// the exec runs, the process's cmdline reads empty (a loaded machine
	// makes that window wide enough to hit), so read until it is not.
	var cmdline []byte
	for i := 0; ; i++ {
		cmdline, err = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", b.PID))
		require.NoError(t, err, "browser process %d", b.PID)
		if len(cmdline) > 0 || i == 100 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	for _, want := range append(crabbox.BrowserArgs(), "--user-data-dir="+hostDir+"/profile", pageURL) {
		assert.Contains(t, args, want)
	}
	assert.NotContains(t, args, "--no-sandbox", "--no-sandbox only as root")

	w, err := h.l.WaitWindow(ctx, "chromium|chrome")
	require.NoError(t, err)
	assert.Greater(t, w.Width, 400)
	w2, err := h.l.WaitWindow(ctx, "Crabbox QA page")
	require.NoError(t, err, "the window title shows the page title")
	assert.Contains(t, w2.Name, "Crabbox QA page")

	// Drive it: type into the focused input.
	_, err = h.l.Run(ctx, `DISPLAY="$CRABBOX_DISPLAY" xdotool type --delay 20 'hello crabbox'`)
	require.NoError(t, err)

	var st crabbox.ScreenStats
	for i := 0; ; i++ {
		data, err := h.l.Screenshot(ctx)
		require.NoError(t, err)
		st, err = crabbox.JudgeScreenshot(data)
		require.NoError(t, err)
		if !st.Blank() && st.Colors > 100 {
			break
		}
		require.Less(t, i, 60, "screen with the page stays blank: %s", st)
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("browser screen: %s", st)

	// The profile is really used (fresh: it is below the new directory).
	entries, err := os.ReadDir(filepath.Join(hostDir, "profile"))
	require.NoError(t, err)
	assert.NotEmpty(t, entries, "chromium writes its profile into the fresh directory")

	require.NoError(t, b.Close(ctx))
	require.NoError(t, b.Close(ctx), "Close is idempotent")
	assert.NoDirExists(t, hostDir, "the profile directory is removed on Close")
	_, err = os.Stat(fmt.Sprintf("/proc/%d", b.PID))
	assert.True(t, os.IsNotExist(err), "the browser process is gone")
	pg, err := h.l.Run(ctx, fmt.Sprintf("pgrep -s %d || true", b.PID))
	require.NoError(t, err)
	assert.Empty(t, pg.StdoutTail, "no process of the browser's session survives Close")

	// Nothing landed in the image-relevant paths (do-not-bake rule).
	for _, p := range []string{".config/chromium", ".config/google-chrome", ".pki", ".cache/chromium"} {
		assert.NoFileExists(t, filepath.Join(h.home, p))
		assert.NoDirExists(t, filepath.Join(h.home, p))
	}
	work, err := os.ReadDir(filepath.Join(h.root, "work", "crabbox"))
	require.NoError(t, err)
	assert.Empty(t, work, "nothing appears in the work root")
	left, err := filepath.Glob(filepath.Join(h.root, "tmp", "crabbox-browser.*"))
	require.NoError(t, err)
	assert.Empty(t, left)

	// A second browser gets another fresh profile.
	b2, err := h.l.OpenURL(ctx, pageURL, crabbox.WithWindowSize(800, 600))
	require.NoError(t, err)
	assert.NotEqual(t, b.Dir, b2.Dir)
	require.NoError(t, b2.Close(ctx))

	// The smoke checks: the browser check passes with a kept screenshot,
	// and the hygiene check finds no browser profile afterwards.
	dir := t.TempDir()
	rep, err := crabbox.Smoke(ctx, h.l, []crabbox.SmokeCheck{crabbox.BrowserWindowVisible(pageURL)}, crabbox.WithEvidenceDir(dir))
	require.NoError(t, err, "%+v", rep)
	r := rep.Results[0]
	assert.True(t, r.Passed, r.Error)
	assert.Equal(t, crabbox.KindBrowserWindow, r.Kind)
	require.Len(t, r.Evidence, 1)
	ev, err := os.ReadFile(r.Evidence[0])
	require.NoError(t, err)
	est, err := crabbox.JudgeScreenshot(ev)
	require.NoError(t, err)
	assert.False(t, est.Blank(), "%s", est)
	assert.GreaterOrEqual(t, est.Colors, crabbox.MinBrowserColors, "the kept screenshot shows a drawn browser: %s", est)
	assert.Contains(t, r.Output, "Crabbox QA page", "the window shows the page's title once it settled")
	left, _ = filepath.Glob(filepath.Join(h.root, "tmp", "crabbox-browser.*"))
	assert.Empty(t, left, "the check closes its browser")

	rep, err = crabbox.Smoke(ctx, h.l, []crabbox.SmokeCheck{crabbox.NoBrowserProfiles()})
	require.NoError(t, err, "%+v", rep)

	// The ready-made desktop proof (a data: page, a recording) passes and
	// keeps a screenshot of the drawn page and the video.
	dir = t.TempDir()
	rep, err = crabbox.Smoke(ctx, h.l, crabbox.DesktopProof(), crabbox.WithEvidenceDir(dir))
	require.NoError(t, err, "%+v", rep)
	require.Len(t, rep.Results, 2)
	assert.Contains(t, rep.Results[0].Output, "Crabbox desktop proof")
	require.Len(t, rep.Results[0].Evidence, 1)
	require.Len(t, rep.Results[1].Evidence, 1)
	ev, err = os.ReadFile(rep.Results[0].Evidence[0])
	require.NoError(t, err)
	est, err = crabbox.JudgeScreenshot(ev)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, est.Colors, crabbox.MinBrowserColors, "%s", est)
}

// TestDesktopOpenURLCancelledLeavesNothing cancels OpenURL's context after
// the browser was launched on the box (its process seen here) but before
// OpenURL returned: the error is the cancellation, and no browser process
// or profile directory is left behind.
func TestDesktopOpenURLCancelledLeavesNothing(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{})
	h.mustBootstrap(t)
	marker := filepath.Join(h.root, "tmp", "crabbox-browser.")
	pageURL := h.writePage(t, "Cancelled page")
	for attempt := 1; ; attempt++ {
		require.LessOrEqual(t, attempt, 5, "OpenURL returned before the browser process was seen every time")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		// Cancelled once the browser runs in its own session (setsid).
		fired := cancelWhenRunning(ctx, cancel, marker, true)
		b, err := h.l.OpenURL(ctx, pageURL)
		cancel()
		if !<-fired {
			// The launch finished before the watcher saw the browser.
			require.NoError(t, err)
			require.NoError(t, b.Close(context.Background()))
			continue
		}
		require.Error(t, err, "OpenURL succeeded although its context was cancelled")
		if b != nil {
			t.Fatalf("OpenURL returned a browser and %v", err)
		}
		assert.ErrorIs(t, err, context.Canceled)
		break
	}
	assert.Empty(t, procsWith(marker), "a browser launched by the cancelled OpenURL still runs")
	left, err := filepath.Glob(filepath.Join(h.root, "tmp", "crabbox-browser.*"))
	require.NoError(t, err)
	assert.Empty(t, left, "the cancelled OpenURL left its profile directory")

	// The lease still works.
	b, err := h.l.OpenURL(context.Background(), pageURL)
	require.NoError(t, err)
	require.NoError(t, b.Close(context.Background()))
}
