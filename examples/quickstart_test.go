package examples_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMEQuickStartSaysWhatItDid runs the README's quick start, as a
// reader pasting it into a main would, on the embedded local cloud: it
// succeeds and prints each thing it did.
func TestREADMEQuickStartSaysWhatItDid(t *testing.T) {
	for _, tool := range []string{"git", "curl", "rsync", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s required in CI", tool)
			}
			t.Skipf("skipping: %s not available (the local boxes' readiness check looks for it)", tool)
		}
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "\n## Quick start\n")
	if !ok {
		t.Fatal("README.md has no Quick start section")
	}
	_, rest, ok = strings.Cut(rest, "```go\n")
	if !ok {
		t.Fatal("the Quick start section has no Go block")
	}
	code, _, ok := strings.Cut(rest, "\n```")
	if !ok {
		t.Fatal("the Quick start's Go block does not end")
	}
	// Inside the module (so its imports resolve), in a directory the go
	// command's ./... patterns ignore.
	dir, err := os.MkdirTemp(".", ".quickstart-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	main := filepath.Join(dir, "main.go")
	if err := os.WriteFile(main, []byte(code+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", "./"+main)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run of the quick start: %v\n%s", err, out)
	}
	for _, want := range []string{"warmed source lease cbx_", "created candidate image ", "candidate smoke on cbx_", "checks passed", "promoted ", "in channel default (version 1)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the quick start's output lacks %q:\n%s", want, out)
		}
	}
}
