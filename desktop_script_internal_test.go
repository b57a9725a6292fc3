package crabbox

// Tests of desktop_script.go: the prelude on an emulated box.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestEmulatedBoxWithoutDisplayVariable: on an emulated box (CRABBOX_FS_ROOT
// set) without CRABBOX_DISPLAY, the desktop methods find no display; they
// never fall back to the host's :99.
func TestEmulatedBoxWithoutDisplayVariable(t *testing.T) {
	s := newShellTarget(t) // CRABBOX_FS_ROOT set, no CRABBOX_DISPLAY
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := runScript(ctx, s, "display", "need_display\necho \"$D\"\n", nil)
	if !errors.Is(err, ErrNoDisplay) || !strings.Contains(err.Error(), "CRABBOX_DISPLAY is not set") {
		t.Fatalf("need_display on an emulated box without CRABBOX_DISPLAY: %v; want ErrNoDisplay naming CRABBOX_DISPLAY", err)
	}
	_, err = openBrowser(ctx, s, "about:blank")
	if !errors.Is(err, ErrNoDisplay) {
		t.Fatalf("OpenURL: %v, want ErrNoDisplay", err)
	}
	_, err = record(ctx, s, time.Second)
	if !errors.Is(err, ErrNoDisplay) {
		t.Fatalf("Record: %v, want ErrNoDisplay", err)
	}
}
