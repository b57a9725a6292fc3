package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMERunbookBlock runs the README's "The runbook, command by
// command" shell block as pasted (with the binary this test built on PATH
// instead of the block's go build line) and expects it to pass, with the
// promotion without proof refused.
func TestREADMERunbookBlock(t *testing.T) {
	if _, err := exec.LookPath("jq"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("jq is required in CI (scripts/setup installs it)")
		}
		t.Skip("jq not installed")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "## The runbook, command by command")
	if !ok {
		t.Fatal("README has no section \"The runbook, command by command\"")
	}
	_, block, ok := strings.Cut(after, "```sh\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("the section has no sh block")
	}
	var script []string
	for _, line := range strings.Split(block, "\n") {
		if strings.HasPrefix(line, "go build ") {
			continue
		}
		script = append(script, line)
	}
	tl := buildTool(t)
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", strings.Join(script, "\n"))
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(tl.bin)+":"+os.Getenv("PATH"), "TMPDIR="+t.TempDir(), "CRABBOX_PROVIDER=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("the README's runbook block failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{"refusing to promote", "refused: no proof yet", `"status": "known-good"`, `"proof": "proof-`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the block's output lacks %q:\n%s", want, out.String())
		}
	}
}
