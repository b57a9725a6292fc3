// Test helpers shared by the external test files of package crabbox: local
// and sshhost clients, contexts, bakes and proofs, keys, the box root of an
// emulated lease, and the desktop test host (a real sshd with its own Xvfb
// display) with the watchers the cancellation tests use.

package crabbox_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
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
	"golang.org/x/crypto/ssh"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/ports"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/internal/testenv/xdisplay"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

func fast() []crabbox.Option {
	return []crabbox.Option{
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(10 * time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(10 * time.Millisecond)),
	}
}

func localClient(t *testing.T, drv provider.Driver, opts ...crabbox.Option) *crabbox.Client {
	t.Helper()
	c, err := crabbox.New(drv, append(append(fast(), crabbox.WithStateDir(t.TempDir()), crabbox.WithOperator("tester")), opts...)...)
	require.NoError(t, err)
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func imageName(t *testing.T, purpose string) string {
	n, err := crabbox.NewImageName("crabbox", "test", purpose, time.Now())
	require.NoError(t, err)
	return n.String()
}

// smokeOK runs a passing smoke on a lease: what the default proof policy
// asks of a candidate (explicit image) or a known-good (promoted image)
// proof, with the tool sh.
func smokeOK(t *testing.T, ctx context.Context, l *crabbox.Lease) *crabbox.SmokeReport {
	t.Helper()
	o := crabbox.CheckSetOptions{Tools: []string{"sh"}}
	checks := crabbox.CandidateSmoke(o)
	if l.ImageSource == crabbox.ImagePromoted {
		checks = crabbox.PromotedSmoke(o)
	}
	rep, err := crabbox.Smoke(ctx, l, checks)
	require.NoError(t, err)
	require.True(t, rep.OK())
	return rep
}

// bake warms a source lease, writes a marker file and images it.
func bake(t *testing.T, ctx context.Context, c *crabbox.Client, purpose string) *crabbox.Image {
	t.Helper()
	src, err := c.Warmup(ctx, crabbox.WithClass("small"))
	require.NoError(t, err)
	defer src.Release(context.Background())
	_, err = src.Run(ctx, `echo `+purpose+` > "${CRABBOX_FS_ROOT:-}/etc-marker"`)
	require.NoError(t, err)
	img, err := c.CreateImage(ctx, src.ID, imageName(t, purpose), crabbox.WithPrepare(), crabbox.WithWait(time.Minute))
	require.NoError(t, err)
	return img
}

func proveImage(t *testing.T, ctx context.Context, c *crabbox.Client, imageID string) *crabbox.SmokeReport {
	t.Helper()
	l, err := c.Warmup(ctx, crabbox.WithImage(imageID), crabbox.WithClass("small"))
	require.NoError(t, err)
	defer l.Release(context.Background())
	assert.Equal(t, crabbox.ImageExplicit, l.ImageSource)
	return smokeOK(t, ctx, l)
}

// proveNormal smokes a normal lease (no image override) and checks it
// booted the promoted image want.
func proveNormal(t *testing.T, ctx context.Context, c *crabbox.Client, want string) *crabbox.SmokeReport {
	t.Helper()
	l, err := c.Warmup(ctx, crabbox.WithClass("small"))
	require.NoError(t, err)
	defer l.Release(context.Background())
	require.Equal(t, crabbox.ImagePromoted, l.ImageSource)
	require.Equal(t, want, l.ImageID)
	return smokeOK(t, ctx, l)
}

func dirEntries(state string) ([]string, error) {
	es, err := os.ReadDir(filepath.Join(state, "leases"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out, err
}

func mustSigner(t *testing.T) ssh.Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	s, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	return s
}

func hostFor(s *sshd.Server) sshhost.Host {
	return sshhost.Host{Addr: s.Addr, User: s.User, Signer: s.ClientKey.Signer, HostKey: s.HostKey}
}

func sshhostClient(t *testing.T, hosts []sshhost.Host, opts ...crabbox.Option) (*crabbox.Client, *sshhost.Driver) {
	t.Helper()
	drv, err := sshhost.New(hosts)
	require.NoError(t, err)
	opts = append([]crabbox.Option{
		crabbox.WithStateDir(t.TempDir()),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(50 * time.Millisecond)),
		crabbox.WithOperator("tester"),
	}, opts...)
	c, err := crabbox.New(drv, opts...)
	require.NoError(t, err)
	return c, drv
}

func liveLeases(t *testing.T, c *crabbox.Client) int {
	t.Helper()
	ls, err := c.Leases(context.Background())
	require.NoError(t, err)
	return len(ls)
}

func mustDriver(t *testing.T, hosts ...sshhost.Host) *sshhost.Driver {
	d, err := sshhost.New(hosts)
	require.NoError(t, err)
	return d
}

// boxRoot returns the host directory an emulated box (the local cloud)
// keeps its file system in, as the box's own environment says
// (CRABBOX_FS_ROOT); the SDK itself never knows it.
func boxRoot(t *testing.T, l *crabbox.Lease) string {
	t.Helper()
	res, err := l.Run(testCtx(t), `printf %s "${CRABBOX_FS_ROOT:?not an emulated box}"`, crabbox.Strict())
	if err != nil {
		t.Fatalf("box root: %v", err)
	}
	return res.StdoutTail
}

// The desktop test host, shared by the desktop test files: OpenSSH on
// loopback, logged in as a fresh non-root user, with Xvfb, xdotool, scrot,
// ffmpeg and Chromium installed on this machine. The desktop bootstrap the
// SDK renders (cloudinit.DesktopBootstrapScript) is executed for real over
// SSH and brings up the display the tests use.
//
// The user is not root, so the host's crabbox state lives below a
// directory given to sessions as CRABBOX_FS_ROOT, and each host gets its own
// free display number as CRABBOX_DISPLAY (sshd's SetEnv), so tests never
// collide over :99.

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

// freeDisplay returns a display number no X server uses or has locked,
// reserved (against hosts of this and other test processes whose X server
// has not started yet either) until the test's cleanups have run.
func freeDisplay(t *testing.T) int {
	t.Helper()
	r, err := xdisplay.Reserve(200, 900, -1)
	require.NoError(t, err)
	t.Cleanup(r.Release) // registered first of the host's: runs last
	return r.N
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
	vncPort, err := ports.Free("127.0.0.1")
	require.NoError(t, err)
	h.vncPort = vncPort
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
