package main

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestRunbook runs the whole example, as `go run ./examples/runbook` would,
// on each backend that runs on this machine: the embedded local cloud (the
// README's default), with desktop proof, moto with real sshd boxes, and the
// Hetzner API fake with real sshd boxes.
func TestRunbook(t *testing.T) {
	ci := os.Getenv("CI") == "true"
	need := func(t *testing.T, what string, ok bool) {
		t.Helper()
		if ok {
			return
		}
		if ci {
			t.Fatalf("%s required in CI", what)
		}
		t.Skipf("skipping: %s not available", what)
	}
	has := func(bin string) bool { _, err := exec.LookPath(bin); return err == nil }
	root := os.Geteuid() == 0
	cases := []struct {
		name     string
		provider string
		desktop  bool
		require  func(t *testing.T)
	}{
		{name: "local", provider: "local", require: func(t *testing.T) {
			need(t, "git, curl, rsync, jq", has("git") && has("curl") && has("rsync") && has("jq"))
		}},
		{name: "local-desktop", provider: "local", desktop: true, require: func(t *testing.T) {
			need(t, "Xvfb, scrot, ffmpeg, xdotool, chromium", has("Xvfb") && has("scrot") && has("ffmpeg") && has("xdotool") && has("chromium"))
		}},
		{name: "moto", provider: "moto", require: func(t *testing.T) {
			need(t, "root, sshd and moto", root && has("/usr/sbin/sshd") && exec.Command("python3", "-c", "import moto.server").Run() == nil)
		}},
		{name: "hetzner-fake", provider: "hetzner-fake", require: func(t *testing.T) {
			need(t, "root and sshd", root && has("/usr/sbin/sshd"))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.require(t)
			*flagProvider, *flagDesktop, *flagApply = tc.provider, tc.desktop, true
			*flagEvidence, *flagState = t.TempDir(), t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := execute(ctx); err != nil {
				t.Fatalf("runbook on %s: %v", tc.name, err)
			}
		})
	}
}
