package cloudinit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readyTools skips (or fails in CI) when the tools the readiness script
// requires are missing on this host.
func readyTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range ReadyTools() {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("tools the readiness script needs are missing: %v", missing)
		}
		t.Skipf("tools the readiness script needs are missing: %v", missing)
	}
}

// TestReadyNeedsOwnLeaseMarker runs the rendered readiness script under a
// file-system root like an emulated box: a marker kept from the lease that
// baked the image (or an old empty one) is not "ready"; only the marker the
// box's own bootstrap writes (the runcmd's last command) is.
func TestReadyNeedsOwnLeaseMarker(t *testing.T) {
	readyTools(t)
	cfg := baseConfig(t)
	files, err := BootFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, f := range files {
		p := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Content, f.Mode.Perm()); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, DefaultWorkRoot), 0o755); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(root, BootstrapMarker)
	ready := func() (string, error) {
		cmd := exec.Command("/bin/sh", "-c", ReadyShellCommand)
		cmd.Env = append(os.Environ(), "CRABBOX_FS_ROOT="+root)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}

	if out, err := ready(); err == nil || !strings.Contains(out, "bootstrap not finished") {
		t.Fatalf("ready without a marker: %v, %q", err, out)
	}
	// The image's marker, from the lease that baked it.
	for name, stale := range map[string][]byte{
		"other lease":  BootstrapMarkerContent("cbx_baker0000000"),
		"empty marker": nil,
		"prefix":       []byte(cfg.LeaseID + "x\n"),
	} {
		if err := os.WriteFile(marker, stale, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := ready(); err == nil || !strings.Contains(out, "bootstrap not finished") {
			t.Errorf("%s: ready with a stale marker %q: %v, %q", name, stale, err, out)
		}
	}

	// The box's own bootstrap: run the rendered last runcmd with the
	// marker path moved under root.
	doc, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := markerCommand(cfg.LeaseID)
	if !strings.Contains(string(doc), yamlQuote(want)) {
		t.Fatalf("user-data does not write the marker with %q", want)
	}
	if out, err := exec.Command("/bin/sh", "-c", strings.ReplaceAll(want, BootstrapMarker, marker)).CombinedOutput(); err != nil {
		t.Fatalf("marker command: %v: %s", err, out)
	}
	got, err := os.ReadFile(marker)
	if err != nil || !bytes.Equal(got, BootstrapMarkerContent(cfg.LeaseID)) {
		t.Fatalf("marker = %q, %v; want %q", got, err, BootstrapMarkerContent(cfg.LeaseID))
	}
	if _, err := os.Stat(marker + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary marker left behind: %v", err)
	}
	if out, err := ready(); err != nil || strings.TrimSpace(out) != "ready" {
		t.Fatalf("ready with the lease's own marker: %v, %q", err, out)
	}
}
