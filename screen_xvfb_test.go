package crabbox

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// needTool skips outside CI when a program is missing, and fails in CI.
func needTool(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required in CI: %v", n, err)
			}
			t.Skipf("%s not installed: %v", n, err)
		}
	}
}

// startXvfb starts a real Xvfb on a free display and returns ":N".
func startXvfb(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "Xvfb", "-displayfd", "3", "-screen", "0", "800x600x24", "-nolisten", "tcp")
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	line, err := bufio.NewReader(r).ReadString('\n')
	r.Close()
	if err != nil {
		t.Fatalf("Xvfb did not report its display: %v", err)
	}
	return ":" + strings.TrimSpace(line)
}

func scrot(t *testing.T, display string) []byte {
	t.Helper()
	cmd := exec.Command("scrot", "-o", "-")
	cmd.Env = append(os.Environ(), "DISPLAY="+display)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scrot: %v", err)
	}
	return out
}

// TestJudgeRealScreens judges real screenshots: an empty Xvfb screen is
// blank, the same screen with a Chromium window is not.
func TestJudgeRealScreens(t *testing.T) {
	needTool(t, "Xvfb", "scrot")
	display := startXvfb(t)
	st, err := JudgeScreenshot(scrot(t, display))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Blank() || st.Width != 800 || st.Height != 600 {
		t.Fatalf("empty Xvfb screen: %s", st)
	}

	needTool(t, "chromium")
	home := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	page := "data:text/html,<body style='background:%23fff;font:32px sans-serif'><h1>crabbox smoke</h1><p style='color:%23c00'>not blank</p></body>"
	cmd := exec.CommandContext(ctx, "chromium", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+home+"/profile", "--window-size=800,600", "--window-position=0,0", page)
	cmd.Env = append(os.Environ(), "DISPLAY="+display, "HOME="+home)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	// The window appears after about a second, first as a frame of one or
	// two colours before the page is drawn; poll until the screen shows a
	// drawn browser (as BrowserWindowVisible judges it), with a bounded
	// deadline.
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err = JudgeScreenshot(scrot(t, display))
		if err != nil {
			t.Fatal(err)
		}
		if !st.Blank() && st.Colors >= MinBrowserColors {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("screen with chromium not drawn after 60 s (want at least %d colours): %s", MinBrowserColors, st)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("chromium screen: %s", st)
}
