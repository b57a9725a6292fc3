package crabbox_test

// Desktop and browser leases on a real desktop test host: OpenSSH on
// loopback, logged in as a fresh non-root user, with Xvfb, xdotool, scrot,
// ffmpeg and Chromium installed on this machine. The desktop bootstrap the
// SDK renders (cloudinit.DesktopBootstrapScript) is executed for real over
// SSH and brings up the display the tests use.
//
// The user is not root, so the host's crabbox state lives below a
// directory given to sessions as CRABBOX_FS_ROOT, and each host gets its own
// free display number as CRABBOX_DISPLAY (sshd's SetEnv), so tests never
// collide over :99.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

// needDesktopTools skips outside CI when a desktop tool is missing, and
// fails in CI.
func needDesktopTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required in CI (scripts/setup installs it): %v", n, err)
			}
			t.Skipf("%s not installed (run scripts/setup): %v", n, err)
		}
	}
}

var desktopTools = []string{"Xvfb", "xdotool", "scrot", "ffmpeg", "ffprobe", "x11vnc", "chromium"}

// freeDisplay returns a display number no X server uses or has locked.
func freeDisplay(t *testing.T) int {
	t.Helper()
	start := 200 + rand.IntN(700)
	for i := 0; i < 700; i++ {
		n := 200 + (start-200+i)%700
		if _, err := os.Lstat(fmt.Sprintf("/tmp/.X%d-lock", n)); err == nil {
			continue
		}
		if _, err := os.Lstat(fmt.Sprintf("/tmp/.X11-unix/X%d", n)); err == nil {
			continue
		}
		return n
	}
	t.Fatal("no free X display number")
	return 0
}

type desktopHost struct {
	srv     *sshd.Server
	c       *crabbox.Client
	l       *crabbox.Lease
	display int
	vncPort int
	root    string // CRABBOX_FS_ROOT of the host, on this machine
	home    string // the login user's real home
	user    string
}

type hostOptions struct {
	// path, when set, is the sessions' PATH (SetEnv PATH).
	path string
}

// startDesktopHost starts sshd for a fresh user, with a display number and
// an FS root exported to its sessions, and leases it through sshhost. The
// display is not started: run the bootstrap for that.
func startDesktopHost(t *testing.T, o hostOptions) *desktopHost {
	t.Helper()
	sshd.Require(t)
	h := &desktopHost{display: freeDisplay(t)}
	root, err := os.MkdirTemp("", "cbx-desktop-root-")
	require.NoError(t, err)
	h.root = root
	// Registered first, so it runs last: after sshd killed the user's
	// processes (Xvfb, x11vnc, browsers).
	t.Cleanup(func() {
		_ = os.RemoveAll(root)
		removeStaleXLock(h.display)
	})
	require.NoError(t, os.Chmod(root, 0o755))
	h.vncPort = 20000 + rand.IntN(20000)
	env := fmt.Sprintf("SetEnv CRABBOX_DISPLAY=:%d CRABBOX_FS_ROOT=%s CRABBOX_VNC_PORT=%d", h.display, root, h.vncPort)
	if o.path != "" {
		env += " PATH=" + o.path
	}
	srv := sshd.New(t, sshd.Options{Extra: []string{env}})
	h.srv, h.user = srv, srv.User
	u, err := user.Lookup(srv.User)
	require.NoError(t, err)
	h.home = u.HomeDir
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, d := range []string{root, filepath.Join(root, "tmp"), filepath.Join(root, "work", "crabbox"), filepath.Join(root, "var", "lib", "crabbox")} {
		require.NoError(t, os.MkdirAll(d, 0o755))
		require.NoError(t, os.Chown(d, uid, gid))
	}
	require.NoError(t, os.Chown(filepath.Join(root, "work"), uid, gid))
	require.NoError(t, os.Chown(filepath.Join(root, "var"), uid, gid))
	require.NoError(t, os.Chown(filepath.Join(root, "var", "lib"), uid, gid))
	require.NoError(t, srv.Start())

	c, _ := sshhostClient(t, []sshhost.Host{hostFor(srv)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := c.Warmup(ctx, crabbox.WithDesktop(), crabbox.WithBrowser())
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	// Runs before the release and before sshd kills everything: stop the
	// display gracefully, so Xvfb removes its lock and socket.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, _ = l.Run(ctx, `pkill -TERM -u "$(id -u)" -x Xvfb
i=0; while [ -e "/tmp/.X${CRABBOX_DISPLAY#:}-lock" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done`)
	})
	h.c, h.l = c, l
	return h
}

// removeStaleXLock removes the lock and socket of a display whose server
// is gone (killed with SIGKILL by the sshd harness).
func removeStaleXLock(n int) {
	lock := fmt.Sprintf("/tmp/.X%d-lock", n)
	b, err := os.ReadFile(lock)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err == nil && pid > 0 {
		// Alive unless gone or a zombie.
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if _, rest, ok := strings.Cut(string(st), ") "); !ok || !strings.HasPrefix(rest, "Z") {
				return
			}
		}
	}
	_ = os.Remove(lock)
	_ = os.Remove(fmt.Sprintf("/tmp/.X11-unix/X%d", n))
}

// bootstrap runs the SDK's desktop bootstrap on the host for real.
func (h *desktopHost) bootstrap(t *testing.T, desktop, browser bool) (*crabbox.RunResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	script := cloudinit.DesktopBootstrapScript(cloudinit.Config{Desktop: desktop, Browser: browser})
	return h.l.Run(ctx, script)
}

// mustBootstrap brings the display up with Lease.PrepareDesktop (the same
// script, for the lease's desktop and browser flags).
func (h *desktopHost) mustBootstrap(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	summary, err := h.l.PrepareDesktop(ctx)
	require.NoError(t, err)
	require.Contains(t, summary, fmt.Sprintf("ready: display :%d 1280 800;", h.display))
	require.Contains(t, summary, "browser /usr/bin/chromium")
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

// writePage writes a colourful HTML page on the host and returns its
// file:// URL.
func (h *desktopHost) writePage(t *testing.T, title string) string {
	t.Helper()
	p := filepath.Join(h.root, "tmp", "page.html")
	page := `<!doctype html><html><head><title>` + title + `</title></head>
<body style="margin:0;background:linear-gradient(135deg,#ffd54f,#e53935 50%,#1e88e5);font:48px sans-serif;color:#fff">
<h1 style="padding:40px">Crabbox desktop proof</h1><p style="padding:0 40px;color:#111">A page rendered by Chromium on Xvfb.</p>
<input id="q" style="margin:40px;font-size:32px" autofocus></body></html>`
	require.NoError(t, os.WriteFile(p, []byte(page), 0o644))
	return "file://" + p
}

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
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", b.PID))
	require.NoError(t, err, "browser process %d", b.PID)
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

func ffprobe(t *testing.T, path string) (frames int, duration float64, width int) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames,width:format=duration", "-of", "json", path).Output()
	require.NoError(t, err, "ffprobe %s", path)
	var v struct {
		Streams []struct {
			Frames string `json:"nb_read_frames"`
			Width  int    `json:"width"`
		} `json:"streams"`
		Format struct {
			Duration string `json:"duration"`
		} `json:"format"`
	}
	require.NoError(t, json.Unmarshal(out, &v))
	require.Len(t, v.Streams, 1)
	frames, _ = strconv.Atoi(v.Streams[0].Frames)
	duration, _ = strconv.ParseFloat(v.Format.Duration, 64)
	return frames, duration, v.Streams[0].Width
}

func TestDesktopRecording(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{})
	h.mustBootstrap(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := h.l.OpenURL(ctx, h.writePage(t, "Recorded page"))
	require.NoError(t, err)
	defer b.Close(context.Background())
	_, err = h.l.WaitWindow(ctx, "chromium")
	require.NoError(t, err)

	rec, err := h.l.Record(ctx, 2*time.Second)
	require.NoError(t, err)
	require.NotEmpty(t, rec.Data)
	assert.Equal(t, int64(len(rec.Data)), rec.Size)
	assert.Equal(t, "ffprobe", rec.Video.Source)
	assert.Greater(t, rec.Video.Frames, 5)
	assert.Greater(t, rec.Video.Duration, time.Second)
	assert.Equal(t, 1280, rec.Video.Width)
	local := filepath.Join(t.TempDir(), "rec.mp4")
	require.NoError(t, os.WriteFile(local, rec.Data, 0o644))
	frames, dur, width := ffprobe(t, local)
	assert.Greater(t, frames, 5, "the fetched video decodes here with frames")
	assert.Greater(t, dur, 1.0)
	assert.Equal(t, 1280, width)
	left, _ := filepath.Glob(filepath.Join(h.root, "tmp", "crabbox-rec.*"))
	assert.Empty(t, left, "the recording is removed from the box after the fetch")

	// WebM to a local path, kept on the box.
	local2 := filepath.Join(t.TempDir(), "rec.webm")
	rec2, err := h.l.Record(ctx, time.Second, crabbox.WithRecordFormat(crabbox.FormatWebM), crabbox.RecordTo(local2),
		crabbox.KeepOnBox(), crabbox.WithFramerate(5))
	require.NoError(t, err)
	assert.Nil(t, rec2.Data)
	assert.Equal(t, local2, rec2.LocalPath)
	frames, dur, _ = ffprobe(t, local2)
	assert.Greater(t, frames, 0)
	assert.Greater(t, dur, 0.0)
	assert.FileExists(t, filepath.Join(h.root, rec2.RemotePath))
	var fetched bytes.Buffer
	n, err := h.l.Fetch(ctx, rec2.RemotePath, &fetched)
	require.NoError(t, err)
	want, err := os.ReadFile(local2)
	require.NoError(t, err)
	assert.Equal(t, int64(len(want)), n)
	assert.True(t, bytes.Equal(want, fetched.Bytes()), "Fetch returns the file's bytes")

	// The smoke check keeps the video as evidence.
	dir := t.TempDir()
	rep, err := crabbox.Smoke(ctx, h.l, []crabbox.SmokeCheck{crabbox.RecordingNotEmpty(time.Second)}, crabbox.WithEvidenceDir(dir))
	require.NoError(t, err, "%+v", rep)
	r := rep.Results[0]
	assert.Equal(t, crabbox.KindRecording, r.Kind)
	require.Len(t, r.Evidence, 1)
	assert.True(t, strings.HasSuffix(r.Evidence[0], ".mp4"), r.Evidence[0])
	frames, _, _ = ffprobe(t, r.Evidence[0])
	assert.Greater(t, frames, 0)
	assert.Contains(t, r.Output, "ffprobe")
}

func TestDesktopFetch(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	payload := bytes.Repeat([]byte("crab\x00\xff"), 50000)
	require.NoError(t, os.WriteFile(filepath.Join(h.root, "tmp", "blob"), payload, 0o644))
	var buf bytes.Buffer
	n, err := h.l.Fetch(ctx, "/tmp/blob", &buf)
	require.NoError(t, err)
	assert.Equal(t, int64(len(payload)), n)
	assert.True(t, bytes.Equal(payload, buf.Bytes()))

	local := filepath.Join(t.TempDir(), "blob")
	require.NoError(t, h.l.FetchFile(ctx, "/tmp/blob", local))
	got, err := os.ReadFile(local)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(payload, got))

	_, err = h.l.Fetch(ctx, "/tmp/no-such-file", &buf)
	assert.ErrorIs(t, err, crabbox.ErrNotFound)
	err = h.l.FetchFile(ctx, "/tmp/no-such-file", filepath.Join(t.TempDir(), "x"))
	assert.ErrorIs(t, err, crabbox.ErrNotFound)
	_, err = h.l.Fetch(ctx, "/tmp", &buf)
	assert.ErrorIs(t, err, crabbox.ErrNotFound, "a directory is not a file")
	_, err = h.l.Fetch(ctx, "", &buf)
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
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

// procsWith returns the pids of this machine's processes whose command
// line contains s (the desktop test host runs on this machine).
func procsWith(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// sessionLeader reports whether pid leads its own session (setsid done).
func sessionLeader(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	// state ppid pgrp session ...
	return ok && len(f) > 3 && f[3] == strconv.Itoa(pid)
}

// cancelWhenRunning cancels ctx as soon as a process whose command line
// contains marker runs on this machine (and, with leader, leads its own
// session), and reports whether it did.
func cancelWhenRunning(ctx context.Context, cancel context.CancelFunc, marker string, leader bool) <-chan bool {
	fired := make(chan bool, 1)
	go func() {
		for {
			for _, pid := range procsWith(marker) {
				if !leader || sessionLeader(pid) {
					cancel()
					fired <- true
					return
				}
			}
			select {
			case <-ctx.Done():
				fired <- false
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return fired
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

// TestDesktopRecordCancelledLeavesNothing cancels Record's context while
// ffmpeg records on the box: no ffmpeg keeps recording and no file stays.
func TestDesktopRecordCancelledLeavesNothing(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{})
	h.mustBootstrap(t)
	marker := filepath.Join(h.root, "tmp", "crabbox-rec.")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fired := cancelWhenRunning(ctx, cancel, marker, false)
	rec, err := h.l.Record(ctx, 40*time.Second)
	require.True(t, <-fired, "ffmpeg was never seen recording")
	require.Error(t, err)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Nil(t, rec)
	assert.Empty(t, procsWith(marker), "ffmpeg of the cancelled Record still runs")
	left, err := filepath.Glob(filepath.Join(h.root, "tmp", "crabbox-rec.*"))
	require.NoError(t, err)
	assert.Empty(t, left, "the cancelled Record left its file on the box")
}
