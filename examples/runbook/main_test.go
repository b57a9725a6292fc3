package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/examples/runbook/steps"
)

// TestRunbook runs the whole example, as `go run ./examples/runbook` would,
// on the embedded local cloud (the README's default), also with desktop
// proof. The moto and Hetzner-fake runs are the tests of
// examples/runbook/aws and examples/runbook/hetzner.
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
	cases := []struct {
		name    string
		desktop bool
		require func(t *testing.T)
	}{
		{name: "local", require: func(t *testing.T) {
			need(t, "git, curl, rsync, jq", has("git") && has("curl") && has("rsync") && has("jq"))
		}},
		{name: "local-desktop", desktop: true, require: func(t *testing.T) {
			need(t, "Xvfb, scrot, ffmpeg, xdotool, chromium", has("Xvfb") && has("scrot") && has("ffmpeg") && has("xdotool") && has("chromium"))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.require(t)
			cfg := steps.Config{Provider: "local", Desktop: tc.desktop, ApplyCleanup: true,
				Evidence: t.TempDir(), StateDir: t.TempDir()}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := steps.Choose(ctx, cfg, []steps.Backend{local()}); err != nil {
				t.Fatalf("runbook on %s: %v", tc.name, err)
			}
		})
	}
}

// TestCloudBackendsAreElsewhere: the local demo links no cloud SDK, and
// asking it for a cloud backend names the program that has it.
func TestCloudBackendsAreElsewhere(t *testing.T) {
	for name, pkg := range map[string]string{"aws": "./examples/runbook/aws", "moto": "./examples/runbook/aws",
		"hetzner": "./examples/runbook/hetzner", "hetzner-fake": "./examples/runbook/hetzner"} {
		err := steps.Choose(context.Background(), steps.Config{Provider: name, Out: io.Discard}, []steps.Backend{local()})
		if err == nil || !strings.Contains(err.Error(), "go run "+pkg+" -provider "+name) {
			t.Errorf("-provider %s: %v, want it to name %s", name, err, pkg)
		}
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, sdk := range []string{"github.com/aws/", "github.com/hetznercloud/", "/provider/awsec2", "/provider/hetzner"} {
			if strings.Contains(dep, sdk) {
				t.Errorf("examples/runbook links %s: the default demo must build without the cloud SDKs", dep)
			}
		}
	}
}
