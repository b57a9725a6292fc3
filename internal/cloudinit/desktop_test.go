package cloudinit

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHost is a PATH for the desktop bootstrap: a few real utilities it
// needs, and stubs that append their name and arguments to a log instead of
// doing anything. It stands in for the host of an emulated box. In stub
// bodies, @LOG@ is the log's quoted path.
type fakeHost struct {
	bin, log, root string
}

// hostUtils are the real programs the bootstrap needs besides the stubs.
var hostUtils = []string{"id", "sed", "tr", "cat", "mkdir", "chmod", "mktemp", "sleep", "tee", "rm", "setsid", "nohup", "env", "grep"}

func newFakeHost(t *testing.T, stubs map[string]string) *fakeHost {
	t.Helper()
	dir := t.TempDir()
	h := &fakeHost{bin: filepath.Join(dir, "bin"), log: filepath.Join(dir, "calls.log"), root: filepath.Join(dir, "root")}
	for _, d := range []string{h.bin, filepath.Join(h.root, "var", "lib", "crabbox")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range hostUtils {
		p, err := exec.LookPath(u)
		if err != nil {
			t.Fatalf("host utility %s: %v", u, err)
		}
		if err := os.Symlink(p, filepath.Join(h.bin, u)); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range stubs {
		script := "#!/bin/sh\necho \"" + name + " $*\" >>" + shellQuote(h.log) + "\n" +
			strings.ReplaceAll(body, "@LOG@", shellQuote(h.log)) + "\n"
		if err := os.WriteFile(filepath.Join(h.bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// run runs the bootstrap for cfg with env added to a minimal environment
// (PATH is the fake host's bin directory only).
func (h *fakeHost) run(t *testing.T, cfg Config, env ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", DesktopBootstrapScript(cfg))
	cmd.Env = append([]string{"PATH=" + h.bin, "HOME=" + h.root, "TMPDIR=" + h.root}, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func (h *fakeHost) calls(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(h.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// privStubs are sudo and apt-get that would "work": a bootstrap allowed to
// use them would install everything.
var privStubs = map[string]string{"sudo": `[ "$1" = -n ] && shift; exec "$@"`, "apt-get": "exit 0"}

// TestDesktopBootstrapNeverInstallsOnEmulatedHost: with CRABBOX_FS_ROOT set
// the bootstrap neither runs sudo nor apt-get, whatever the privileges;
// missing tools are the exit-91 error naming them.
func TestDesktopBootstrapNeverInstallsOnEmulatedHost(t *testing.T) {
	h := newFakeHost(t, privStubs)
	_, stderr, code := h.run(t, Config{Desktop: true, Browser: true}, "CRABBOX_FS_ROOT="+h.root, "CRABBOX_DISPLAY=:977")
	if code != 91 {
		t.Errorf("exit %d, want 91 (missing tools); stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "crabbox-missing: Xvfb xdotool scrot ffmpeg ffprobe google-chrome chromium chromium-browser") {
		t.Errorf("stderr does not name the missing tools:\n%s", stderr)
	}
	if c := h.calls(t); c != "" {
		t.Fatalf("the bootstrap ran privileged or package commands on the host:\n%s", c)
	}

	// Without CRABBOX_FS_ROOT (a real box) the same host would install.
	h2 := newFakeHost(t, privStubs)
	_, _, _ = h2.run(t, Config{Browser: true})
	if c := h2.calls(t); !strings.Contains(c, "apt-get") {
		t.Errorf("a real box with root or sudo does not install missing tools; calls:\n%s", c)
	}
}

// desktopStubs are the desktop tools as stubs: Xvfb only records that it
// was started; xdotool answers once Xvfb was started.
func desktopStubs() map[string]string {
	m := map[string]string{}
	for k, v := range privStubs {
		m[k] = v
	}
	for _, tool := range DesktopTools() {
		m[tool] = "exit 0"
	}
	m["xdotool"] = "grep -q '^Xvfb ' @LOG@ 2>/dev/null || exit 1\necho '1280 800'"
	return m
}

func TestDesktopBootstrapNeedsDisplayOnEmulatedHost(t *testing.T) {
	h := newFakeHost(t, desktopStubs())
	_, stderr, code := h.run(t, Config{Desktop: true}, "CRABBOX_FS_ROOT="+h.root)
	if code == 0 || !strings.Contains(stderr, "CRABBOX_DISPLAY is not set") {
		t.Errorf("exit %d without CRABBOX_DISPLAY, want a failure naming it; stderr:\n%s", code, stderr)
	}
	if c := h.calls(t); strings.Contains(c, "Xvfb") || strings.Contains(c, "sudo") || strings.Contains(c, "apt-get") {
		t.Errorf("the bootstrap started something on the host without CRABBOX_DISPLAY:\n%s", c)
	}
}

// freeX returns a display number with no lock or socket on this host.
func freeX(t *testing.T) int {
	t.Helper()
	for i := 0; i < 1000; i++ {
		n := 1000 + rand.IntN(8000)
		_, e1 := os.Lstat(fmt.Sprintf("/tmp/.X%d-lock", n))
		_, e2 := os.Lstat(fmt.Sprintf("/tmp/.X11-unix/X%d", n))
		if os.IsNotExist(e1) && os.IsNotExist(e2) {
			return n
		}
	}
	t.Fatal("no free display number")
	return 0
}

// deadPid returns the pid of a process that has exited.
func deadPid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// TestDesktopBootstrapKeepsForeignXLocks: on an emulated box's host, a
// stale lock (and socket) of a display the bootstrap did not start stays
// where it is and the bootstrap fails naming it; the lock of a display it
// started itself (recorded pid) is cleaned up and the display restarted.
func TestDesktopBootstrapKeepsForeignXLocks(t *testing.T) {
	if err := os.MkdirAll("/tmp/.X11-unix", 0o1777); err != nil {
		t.Fatal(err)
	}
	n := freeX(t)
	lock := fmt.Sprintf("/tmp/.X%d-lock", n)
	sock := fmt.Sprintf("/tmp/.X11-unix/X%d", n)
	t.Cleanup(func() { _ = os.Remove(lock); _ = os.Remove(sock) })
	pid := deadPid(t)
	content := []byte(fmt.Sprintf("%10d\n", pid))
	for _, p := range []string{lock, sock} {
		if err := os.WriteFile(p, content, 0o444); err != nil {
			t.Fatal(err)
		}
	}

	h := newFakeHost(t, desktopStubs())
	display := fmt.Sprintf("CRABBOX_DISPLAY=:%d", n)
	_, stderr, code := h.run(t, Config{Desktop: true}, "CRABBOX_FS_ROOT="+h.root, display)
	if code == 0 || !strings.Contains(stderr, "not started by crabbox") {
		t.Errorf("exit %d with a foreign stale lock, want a failure naming it; stderr:\n%s", code, stderr)
	}
	for _, p := range []string{lock, sock} {
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, content) {
			t.Errorf("the bootstrap changed %s of a display it did not start: %q, %v", p, b, err)
		}
	}
	if c := h.calls(t); strings.Contains(c, "Xvfb") {
		t.Errorf("the bootstrap started Xvfb over a foreign lock:\n%s", c)
	}

	// A display the bootstrap started itself (its pid recorded) is
	// restarted: its stale lock and socket go.
	pidfile := filepath.Join(h.root, "var", "lib", "crabbox", fmt.Sprintf("xvfb-%d.pid", n))
	if err := os.WriteFile(pidfile, []byte(fmt.Sprintf("%d\n", pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := h.run(t, Config{Desktop: true}, "CRABBOX_FS_ROOT="+h.root, display)
	if code != 0 || !strings.Contains(stdout, fmt.Sprintf("ready: display :%d 1280 800;", n)) {
		t.Fatalf("exit %d restarting its own display; stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	for _, p := range []string{lock, sock} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("stale %s of the bootstrap's own display is still there: %v", p, err)
		}
	}
	if c := h.calls(t); !strings.Contains(c, fmt.Sprintf("Xvfb :%d -screen 0 1280x800x24 -nolisten tcp", n)) ||
		strings.Contains(c, "sudo") || strings.Contains(c, "apt-get") {
		t.Errorf("calls on the host:\n%s", c)
	}
	if b, err := os.ReadFile(pidfile); err != nil || strings.TrimSpace(string(b)) == fmt.Sprint(pid) {
		t.Errorf("the new Xvfb's pid is not recorded: %q, %v", b, err)
	}
}
