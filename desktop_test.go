// Tests of desktop.go on a real desktop test host: PrepareDesktop and the
// desktop bootstrap it runs, and what the desktop operations do on a host
// without a display, without a browser or capture tools, or given invalid
// arguments; the desktop values that need no host.

package crabbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

// bootstrap runs the SDK's desktop bootstrap on the host for real.
func (h *desktopHost) bootstrap(t *testing.T, desktop, browser bool) (*crabbox.RunResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	script := cloudinit.DesktopBootstrapScript(cloudinit.Config{Desktop: desktop, Browser: browser})
	return h.l.Run(ctx, script)
}

// listening reports the local addresses (hex, as in /proc/net/tcp) that
// listen on port.
func listening(t *testing.T, port int) []string {
	t.Helper()
	var addrs []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 4 || fs[3] != "0A" {
				continue
			}
			addr, p, ok := strings.Cut(fs[1], ":")
			if !ok {
				continue
			}
			if n, err := strconv.ParseInt(p, 16, 32); err == nil && int(n) == port {
				addrs = append(addrs, addr)
			}
		}
	}
	return addrs
}

func TestDesktopBootstrapOnRealHost(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{})
	res, err := h.bootstrap(t, true, true)
	require.NoError(t, err, "bootstrap: %+v", res)
	assert.Contains(t, res.StdoutTail, fmt.Sprintf("ready: display :%d 1280 800;", h.display))
	assert.Contains(t, res.StdoutTail, "browser /usr/bin/chromium (Chromium ")
	assert.Contains(t, res.StderrTail, "skipping package installs", "every tool is installed: the bootstrap must not touch packages")

	// The browser's path is recorded where the SDK and readiness look.
	env, err := os.ReadFile(filepath.Join(h.root, cloudinit.BrowserEnvFile))
	require.NoError(t, err)
	assert.Equal(t, "BROWSER=/usr/bin/chromium\n", string(env))

	// Xvfb runs as the user on the display with the crabbox geometry, not
	// listening on TCP; x11vnc is bound to 127.0.0.1 only.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ps, err := h.l.Run(ctx, "ps -u \"$(id -u)\" -o args=")
	require.NoError(t, err)
	assert.Contains(t, ps.StdoutTail, fmt.Sprintf("Xvfb :%d -screen 0 1280x800x24 -nolisten tcp", h.display))
	var addrs []string
	for i := 0; i < 100; i++ {
		if addrs = listening(t, h.vncPort); len(addrs) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.NotEmpty(t, addrs, "x11vnc does not listen on %d", h.vncPort)
	for _, a := range addrs {
		assert.Contains(t, []string{"0100007F", "00000000000000000000000001000000"}, a, "x11vnc must listen on loopback only")
	}

	// The display answers: a real screenshot of the whole screen.
	data, err := h.l.Screenshot(ctx)
	require.NoError(t, err)
	st, err := crabbox.JudgeScreenshot(data)
	require.NoError(t, err)
	assert.Equal(t, 1280, st.Width)
	assert.Equal(t, 800, st.Height)

	// The readiness script the user-data installs passes on this host once
	// bootstrap is done (marker and work root exist).
	key := sshd.MustKey(t)
	files, err := cloudinit.BootFiles(cloudinit.Config{LeaseID: "cbx_desktop00000", Desktop: true, Browser: true,
		AuthorizedKeys: []string{string(key.AuthorizedKey())}, HostKeyPEM: key.PEM})
	require.NoError(t, err)
	var ready string
	for _, f := range files {
		if f.Path == cloudinit.ReadyCommand {
			ready = string(f.Content)
		}
	}
	require.NotEmpty(t, ready)
	_, err = h.l.Run(ctx, ready)
	require.Error(t, err, "readiness must fail before the bootstrap marker exists")
	_, err = h.l.Run(ctx, `mkdir -p "$CRABBOX_FS_ROOT/var/lib/crabbox" && echo cbx_desktop00000 >"$CRABBOX_FS_ROOT`+cloudinit.BootstrapMarker+`"`)
	require.NoError(t, err)
	out, err := h.l.Run(ctx, ready)
	require.NoError(t, err, "readiness: %+v", out)
	assert.Contains(t, out.StdoutTail, "ready")

	// Running the bootstrap again is harmless and still ready.
	res, err = h.bootstrap(t, true, true)
	require.NoError(t, err, "second bootstrap: %+v", res)
	ps2, err := h.l.Run(ctx, "pgrep -c -u \"$(id -u)\" -x Xvfb")
	require.NoError(t, err)
	assert.Equal(t, "1\n", ps2.StdoutTail, "a second bootstrap must not start a second Xvfb")

	// Once the display is gone, readiness fails.
	_, err = h.l.Run(ctx, "pkill -u \"$(id -u)\" -x Xvfb; sleep 0.5")
	require.NoError(t, err)
	_, err = h.l.Run(ctx, ready)
	require.Error(t, err, "readiness must fail when the display does not answer")
}

func TestDesktopNoDisplay(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{}) // no bootstrap: no display
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := h.l.Screenshot(ctx)
	assert.ErrorIs(t, err, crabbox.ErrNoDisplay)
	_, err = h.l.OpenURL(ctx, "about:blank")
	assert.ErrorIs(t, err, crabbox.ErrNoDisplay)
	_, err = h.l.WaitWindow(ctx, "chromium")
	assert.ErrorIs(t, err, crabbox.ErrNoDisplay)
	_, err = h.l.Record(ctx, time.Second)
	assert.ErrorIs(t, err, crabbox.ErrNoDisplay)
	var oe *crabbox.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "record", oe.Op)

	rep, err := crabbox.Smoke(ctx, h.l, []crabbox.SmokeCheck{
		crabbox.BrowserWindowVisible("about:blank").WithRetry(0, 0), crabbox.RecordingNotEmpty(time.Second),
	})
	require.ErrorIs(t, err, crabbox.ErrSmokeFailed)
	for _, r := range rep.Results {
		assert.False(t, r.Passed)
		assert.Contains(t, r.Error, "no display")
	}
}

// pathWithout makes a directory of links to every program on this
// machine's PATH except the named ones, for a host that lacks them.
func pathWithout(t *testing.T, drop ...string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cbx-path-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	skip := map[string]bool{}
	for _, d := range drop {
		skip[d] = true
	}
	for _, p := range filepath.SplitList("/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin") {
		ents, err := os.ReadDir(p)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if skip[e.Name()] {
				continue
			}
			_ = os.Symlink(filepath.Join(p, e.Name()), filepath.Join(dir, e.Name()))
		}
	}
	return dir
}

func TestDesktopNoBrowser(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	path := pathWithout(t, crabbox.BrowserCommands()...)
	h := startDesktopHost(t, hostOptions{path: path})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := h.l.Run(ctx, `command -v chromium || echo none`)
	require.NoError(t, err)
	require.Equal(t, "none\n", res.StdoutTail, "the host must not find a browser")

	// The bootstrap cannot install one without root: it fails naming the
	// browsers; a desktop-only bootstrap works.
	res, err = h.bootstrap(t, true, true)
	require.ErrorIs(t, err, crabbox.ErrCommandFailed)
	assert.Contains(t, res.StderrTail, "google-chrome|chromium|chromium-browser")
	_, err = h.l.PrepareDesktop(ctx)
	var me *crabbox.MissingToolError
	require.ErrorAs(t, err, &me)
	assert.Equal(t, crabbox.BrowserCommands(), me.Tools)
	res, err = h.bootstrap(t, true, false)
	require.NoError(t, err, "%+v", res)

	_, err = h.l.OpenURL(ctx, "about:blank")
	require.ErrorIs(t, err, crabbox.ErrMissingTool)
	me = nil
	require.ErrorAs(t, err, &me)
	assert.Equal(t, crabbox.BrowserCommands(), me.Tools)
	assert.Contains(t, err.Error(), "google-chrome")

	rep, err := crabbox.Smoke(ctx, h.l, []crabbox.SmokeCheck{crabbox.BrowserWindowVisible("about:blank").WithRetry(0, 0)})
	require.ErrorIs(t, err, crabbox.ErrSmokeFailed)
	assert.Contains(t, rep.Results[0].Error, "missing tool")
}

func TestDesktopNoCaptureTools(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	path := pathWithout(t, "ffmpeg", "xdotool", "scrot", "import")
	h := startDesktopHost(t, hostOptions{path: path})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Bring up a display by hand (the bootstrap would refuse).
	_, err := h.l.Run(ctx, `setsid nohup Xvfb "$CRABBOX_DISPLAY" -nolisten tcp >/dev/null 2>&1 </dev/null &
n="${CRABBOX_DISPLAY#:}"; i=0; until [ -S "/tmp/.X11-unix/X$n" ] || [ $i -gt 100 ]; do sleep 0.1; i=$((i+1)); done`)
	require.NoError(t, err)
	res, err := h.bootstrap(t, true, false)
	require.ErrorIs(t, err, crabbox.ErrCommandFailed)
	assert.Contains(t, res.StderrTail, "missing: xdotool scrot ffmpeg")
	_, err = h.l.PrepareDesktop(ctx)
	var me *crabbox.MissingToolError
	require.ErrorAs(t, err, &me)
	assert.Equal(t, []string{"xdotool", "scrot", "ffmpeg"}, me.Tools)

	_, err = h.l.Record(ctx, time.Second)
	require.ErrorAs(t, err, &me)
	assert.Equal(t, []string{"ffmpeg"}, me.Tools)
	_, err = h.l.WaitWindow(ctx, "x")
	require.ErrorAs(t, err, &me)
	assert.Equal(t, []string{"xdotool"}, me.Tools)
	_, err = h.l.Screenshot(ctx)
	assert.ErrorIs(t, err, crabbox.ErrMissingTool)
}

func TestDesktopInvalidArguments(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, u := range []string{"", "no-scheme", "http://x/\nrm -rf /"} {
		_, err := h.l.OpenURL(ctx, u)
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, u)
	}
	_, err := h.l.OpenURL(ctx, "about:blank", crabbox.WithBrowserArgs("--user-data-dir=/root/x"))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	_, err = h.l.OpenURL(ctx, "about:blank", crabbox.WithBrowserArgs("not-a-switch"))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	_, err = h.l.OpenURL(ctx, "about:blank", crabbox.WithWindowSize(1, 1))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	_, err = h.l.Record(ctx, 0)
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	_, err = h.l.Record(ctx, time.Second, crabbox.WithRecordFormat("gif"))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	_, err = h.l.WaitWindow(ctx, "")
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	rep, err := crabbox.Smoke(ctx, h.l, []crabbox.SmokeCheck{crabbox.BrowserWindowVisible(""), crabbox.RecordingNotEmpty(0)})
	require.ErrorIs(t, err, crabbox.ErrSmokeFailed)
	for _, r := range rep.Results {
		assert.Contains(t, r.Error, "invalid argument")
	}
}

func TestDesktopValuesWithoutAHost(t *testing.T) {
	// Recordings marshal durations as float seconds.
	b, err := json.Marshal(&crabbox.Recording{Format: crabbox.FormatMP4, Requested: 2 * time.Second,
		Video: crabbox.VideoInfo{Duration: 1500 * time.Millisecond, Frames: 15, Source: "ffprobe"}})
	require.NoError(t, err)
	assert.Contains(t, string(b), `"requested_seconds":2`)
	assert.Contains(t, string(b), `"duration_seconds":1.5`)
	assert.Contains(t, string(b), `"frames":15`)

	// VideoInfo.Check wants a duration and frames.
	assert.NoError(t, crabbox.VideoInfo{Duration: time.Second, Frames: 1}.Check())
	assert.Error(t, crabbox.VideoInfo{Duration: time.Second}.Check())
	assert.Error(t, crabbox.VideoInfo{Frames: 3}.Check())

	// A missing browser names every command tried.
	err = fmt.Errorf("open: %w", &crabbox.MissingToolError{Tools: crabbox.BrowserCommands()})
	assert.ErrorIs(t, err, crabbox.ErrMissingTool)
	assert.Contains(t, err.Error(), "none of google-chrome, chromium, chromium-browser is installed")
	assert.Contains(t, (&crabbox.MissingToolError{Tools: []string{"ffmpeg"}}).Error(), "missing tool: ffmpeg")

	// The proof page is a self-contained data: URL.
	assert.True(t, strings.HasPrefix(crabbox.ProofPageURL, "data:text/html"))
	assert.NotContains(t, crabbox.ProofPageURL, "http")
	assert.Len(t, crabbox.DesktopProof(), 2)
	assert.NotContains(t, crabbox.BrowserArgs(), "--no-sandbox", "--no-sandbox is added only for root")
}
