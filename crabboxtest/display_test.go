// Tests of display.go: desktop and browser leases.

package crabboxtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
)

func TestDesktopAndBrowser(t *testing.T) {
	var missing []string
	for _, tool := range append(cloudinit.ReadyTools(), "Xvfb", "xdotool", "chromium") {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("desktop tools missing: %v", missing)
		}
		t.Skipf("desktop tools missing: %v (install them)", missing)
	}
	c := Start(t)
	l := newLease(t, func(cfg *cloudinit.Config) { cfg.Desktop, cfg.Browser = true, true })
	m := boot(t, c, l)
	cl := dial(t, m.Machine, l)
	out := mustRun(t, cl, `echo "$DISPLAY $CRABBOX_DISPLAY"; xdotool getdisplaygeometry`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], ":") || lines[1] != "1280 800" {
		t.Fatalf("display check printed %q", out)
	}
	if out := mustRun(t, cl, cloudinit.ReadyShellCommand); strings.TrimSpace(out) != "ready" {
		t.Fatalf("ready command printed %q", out)
	}
	c.mu.Lock()
	xvfb := c.machines[m.ID].xvfb
	c.mu.Unlock()
	if err := c.DeleteMachine(ctxT(t), m.ID); err != nil {
		t.Fatal(err)
	}
	// The display server went with the machine (Delete waits for it).
	if xvfb.ProcessState == nil || alive(xvfb.Process.Pid) {
		t.Error("the machine's Xvfb still runs after delete")
	}
}
