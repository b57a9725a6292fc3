package main

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/examples/runbook/steps"
)

// TestRunbook runs the whole example, as `go run ./examples/runbook/hetzner
// -provider hetzner-fake` would, on the Hetzner API fake with real sshd boxes.
func TestRunbook(t *testing.T) {
	has := func(bin string) bool { _, err := exec.LookPath(bin); return err == nil }
	root := os.Geteuid() == 0
	t.Run("hetzner-fake", func(t *testing.T) {
		if !(root && has("/usr/sbin/sshd")) {
			if os.Getenv("CI") == "true" {
				t.Fatalf("root and sshd required in CI")
			}
			t.Skipf("skipping: root and sshd not available")
		}
		cfg := steps.Config{Provider: "hetzner-fake", ApplyCleanup: true, Evidence: t.TempDir(), StateDir: t.TempDir()}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := steps.Choose(ctx, cfg, backends); err != nil {
			t.Fatalf("runbook on hetzner-fake: %v", err)
		}
	})
}
