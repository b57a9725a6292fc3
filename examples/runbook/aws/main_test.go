package main

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/examples/runbook/steps"
)

// TestRunbook runs the whole example, as `go run ./examples/runbook/aws
// -provider moto` would, on EC2 emulated by moto with real sshd boxes.
func TestRunbook(t *testing.T) {
	has := func(bin string) bool { _, err := exec.LookPath(bin); return err == nil }
	root := os.Geteuid() == 0
	t.Run("moto", func(t *testing.T) {
		if !(root && has("/usr/sbin/sshd") && exec.Command("python3", "-c", "import moto.server").Run() == nil) {
			if os.Getenv("CI") == "true" {
				t.Fatalf("root, sshd and moto required in CI")
			}
			t.Skipf("skipping: root, sshd and moto not available")
		}
		cfg := steps.Config{Provider: "moto", ApplyCleanup: true, Evidence: t.TempDir(), StateDir: t.TempDir()}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := steps.Choose(ctx, cfg, backends); err != nil {
			t.Fatalf("runbook on moto: %v", err)
		}
	})
}
