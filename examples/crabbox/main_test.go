package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tool is the built binary run with one state dir, as an operator's shell
// runs it: every invocation is a new process.
type tool struct {
	t     *testing.T
	bin   string
	state string
	dir   string // working directory
	// clouds, when set, runs each command in this process on these
	// providers (runOn) instead of the binary: for clouds emulated by the
	// test, whose boxes only the test's dialer reaches. The environment
	// is the test's (t.Setenv) and the working directory is not dir.
	clouds map[string]cloudFunc
}

func buildTool(t *testing.T) *tool {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "crabbox")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return &tool{t: t, bin: bin, state: t.TempDir(), dir: t.TempDir()}
}

// run runs one command line and returns stdout, stderr and the exit code.
func (tl *tool) run(args ...string) (string, string, int) {
	tl.t.Helper()
	if tl.clouds != nil {
		var out, errb bytes.Buffer
		code := runOn(context.Background(), tl.clouds, args, &out, &errb)
		return out.String(), errb.String(), code
	}
	cmd := exec.Command(tl.bin, args...)
	cmd.Dir = tl.dir
	cmd.Env = append(os.Environ(), "CRABBOX_STATE_DIR="+tl.state, "CRABBOX_PROVIDER=", "CRABBOX_OPERATOR=runbook-tester")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		tl.t.Fatalf("%v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// ok runs a command that must succeed and decodes its JSON record.
func (tl *tool) ok(v any, args ...string) string {
	tl.t.Helper()
	out, errs, code := tl.run(args...)
	if code != 0 {
		tl.t.Fatalf("crabbox %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			tl.t.Fatalf("crabbox %s: output is not the JSON record: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return out
}

type record struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	SourceLease string `json:"source_lease"`
	Operator    string `json:"operator"`
	Created     string `json:"created"`
	ImageID     string `json:"image_id"`
	ImageSource string `json:"image_source"`
	Status      string `json:"status"`
}

// TestRunbookCommandByCommand follows the runbook's commands as an
// operator types them, on --provider local: each step a new process, the
// lease and images carried by the state dir.
func TestRunbookCommandByCommand(t *testing.T) {
	tl := buildTool(t)
	p := "--provider=local"

	// Warm the source lease.
	var src record
	tl.ok(&src, "warmup", "--provider", "local", "--class", "standard", "--ttl", "2h", "--idle-timeout", "30m")
	if src.ID == "" || src.Operator != "runbook-tester" || src.ImageSource != "base" {
		t.Fatalf("warmup record: %+v", src)
	}
	// run exits with the command's own exit code, streams its output.
	out, _, code := tl.run("run", p, "--id", src.ID, "--no-sync", "--shell", "--", "echo bake-step; exit 7")
	if code != 7 || out != "bake-step\n" {
		t.Fatalf("run: exit %d, output %q; want 7 and the command's output", code, out)
	}
	// Without --shell the words are quoted one by one.
	out, _, code = tl.run("run", p, "--id", src.ID, "--no-sync", "--", "printf", "%s|", "a b", "$HOME")
	if code != 0 || out != "a b|$HOME|" {
		t.Fatalf("run without --shell: exit %d, %q", code, out)
	}
	// Without --no-sync the working directory is synced to the work root,
	// private files left out.
	if err := os.WriteFile(filepath.Join(tl.dir, "app.txt"), []byte("synced app"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tl.dir, ".env"), []byte("TOKEN=secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, code = tl.run("run", p, "--id", src.ID, "--shell", "--", "cat app.txt; test ! -e .env && echo no-env")
	if code != 0 || out != "synced appno-env\n" {
		t.Fatalf("run with sync: exit %d, %q", code, out)
	}
	tl.ok(nil, "run", p, "--id", src.ID, "--no-sync", "--shell", "--", `rm -rf "${CRABBOX_FS_ROOT:-}/work/crabbox/"* "${CRABBOX_FS_ROOT:-}/work/crabbox/".env`)

	var leases []record
	tl.ok(&leases, "list", p)
	if len(leases) != 1 || leases[0].ID != src.ID {
		t.Fatalf("list: %+v", leases)
	}

	// Image it; the record carries name, source lease, creation and operator.
	var img record
	tl.ok(&img, "image", "create", p, "--id", src.ID, "--name", "crabbox-openclaw-desktop-20260101-1200", "--wait", "--json")
	if img.ID == "" || img.SourceLease != src.ID || img.Operator != "runbook-tester" || img.Created == "" || img.Status != "candidate" {
		t.Fatalf("image record: %+v", img)
	}
	tl.ok(nil, "release", p, "--id", src.ID)

	// Promotion without proof is refused, naming the command that gives one.
	_, errs, code := tl.run("image", "promote", img.ID, p, "--json")
	if code == 0 || !strings.Contains(errs, "crabbox smoke --id") {
		t.Fatalf("promote without proof: exit %d, %s", code, errs)
	}

	// Boot the candidate explicitly and smoke it.
	var cand record
	tl.ok(&cand, "warmup", p, "--image", img.ID)
	if cand.ImageID != img.ID || cand.ImageSource != "explicit" {
		t.Fatalf("candidate lease: %+v", cand)
	}
	report := filepath.Join(t.TempDir(), "report.json")
	tl.ok(nil, "smoke", p, "--id", cand.ID, "--output", report)
	// A report of another image does not promote this one: forged or
	// foreign reports are refused by the SDK.
	var promo struct {
		Channel string  `json:"channel"`
		Image   *record `json:"image"`
		Proof   string  `json:"proof"`
		Forced  string  `json:"forced"`
	}
	tl.ok(&promo, "image", "promote", img.ID, p, "--proof", report, "--json")
	if promo.Image == nil || promo.Image.ID != img.ID || !strings.HasPrefix(promo.Proof, "proof-") {
		t.Fatalf("promotion: %+v", promo)
	}
	tl.ok(nil, "release", p, "--id", cand.ID)

	// A normal lease now boots the promoted image.
	var normal record
	tl.ok(&normal, "warmup", p)
	if normal.ImageID != img.ID || normal.ImageSource != "promoted" {
		t.Fatalf("normal lease: %+v", normal)
	}
	normalReport := filepath.Join(t.TempDir(), "normal.json")
	tl.ok(nil, "smoke", p, "--id", normal.ID, "--output", normalReport)
	var good record
	tl.ok(&good, "image", "known-good", img.ID, p, "--proof", normalReport)
	if good.Status != "known-good" {
		t.Fatalf("known-good: %+v", good)
	}
	tl.ok(nil, "release", p, "--id", normal.ID)

	// A candidate that fails its smoke (a credential baked in) is refused.
	var bad record
	tl.ok(&bad, "warmup", p)
	tl.ok(nil, "run", p, "--id", bad.ID, "--no-sync", "--shell", "--", `mkdir -p "$HOME/.aws" && printf '[default]\n' > "$HOME/.aws/credentials"`)
	var badImg record
	tl.ok(&badImg, "image", "create", p, "--id", bad.ID, "--name", "crabbox-openclaw-desktop-20260101-1300", "--wait")
	tl.ok(nil, "release", p, "--id", bad.ID)
	var badCand record
	tl.ok(&badCand, "warmup", p, "--image", badImg.ID)
	badReport := filepath.Join(t.TempDir(), "bad.json")
	_, errs, code = tl.run("smoke", p, "--id", badCand.ID, "--output", badReport)
	if code == 0 || !strings.Contains(errs, "no credentials") && !strings.Contains(errs, "failed") {
		t.Fatalf("smoke of a candidate with a credential: exit %d, %s", code, errs)
	}
	_, errs, code = tl.run("image", "promote", badImg.ID, p, "--proof", badReport, "--json")
	if code == 0 || !strings.Contains(errs, "crabbox smoke --id") {
		t.Fatalf("promote with a failing proof: exit %d, %s", code, errs)
	}
	// Break glass is possible, and recorded as forced.
	tl.ok(&promo, "image", "promote", badImg.ID, p, "--force", "incident 42: testing break glass")
	if promo.Forced != "incident 42: testing break glass" {
		t.Fatalf("forced promotion: %+v", promo)
	}
	tl.ok(nil, "release", p, "--id", badCand.ID)

	// Roll back to the proven image.
	var rb struct {
		Image *record `json:"image"`
	}
	tl.ok(&rb, "image", "rollback", p, "--reason", "undo break glass")
	if rb.Image == nil || rb.Image.ID != img.ID {
		t.Fatalf("rollback: %+v", rb.Image)
	}
	var imgs []record
	tl.ok(&imgs, "image", "list", p, "--json")
	if len(imgs) != 2 {
		t.Fatalf("image list: %+v", imgs)
	}
	// Cleanup is a dry run unless told otherwise: nothing is deleted.
	tl.ok(nil, "image", "cleanup", p)
	tl.ok(&imgs, "image", "list", p)
	if len(imgs) != 2 {
		t.Fatalf("a dry-run cleanup deleted images: %+v", imgs)
	}
	tl.ok(&leases, "list", p)
	if len(leases) != 0 {
		t.Fatalf("leases left: %+v", leases)
	}
}

func TestBadCommandLines(t *testing.T) {
	tl := buildTool(t)
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"image"},
		{"run", "--provider", "local", "--id", "cbx_0123456789ab"},
		{"image", "promote", "--provider", "local"},
		{"warmup", "--provider", "nowhere"},
		{"screenshot", "--provider", "local", "--id", "cbx_0123456789ab"},
	} {
		_, errs, code := tl.run(args...)
		if code != exitUsage || !strings.Contains(errs, "usage:") {
			t.Errorf("%q: exit %d, want %d with usage\n%s", args, code, exitUsage, errs)
		}
	}
	// run never syncs a home directory or / to the box.
	for _, dir := range []string{"/", os.Getenv("HOME")} {
		if dir == "" {
			continue
		}
		tl.dir = dir
		_, errs, code := tl.run("run", "--provider", "local", "--id", "cbx_0123456789ab", "--shell", "--", "true")
		if code != exitUsage || !strings.Contains(errs, "refusing to sync") {
			t.Errorf("run from %s: exit %d, %s", dir, code, errs)
		}
	}
	tl.dir = t.TempDir()
	// An unknown lease is an error, not a usage error.
	_, _, code := tl.run("release", "--provider", "local", "--id", "cbx_0123456789ab")
	if code != exitFailed {
		t.Errorf("release of an unknown lease: exit %d", code)
	}
}
