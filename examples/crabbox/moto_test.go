package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest/awstest"
	"github.com/crabbox/crabbox-go/provider"
)

// TestRunbookCommandsOnMoto runs the operator tool's runbook commands with
// --provider aws against EC2 emulated by moto, each instance a real sshd
// box on loopback (crabboxtest/awstest): warmup, run, image create, a
// promotion refused without proof, the candidate's smoke, promote with that
// proof, a normal lease booting the promoted image, release; each command
// a fresh invocation sharing only the state dir, asserting the JSON
// records it prints.
func TestRunbookCommandsOnMoto(t *testing.T) {
	ctx := context.Background()
	cloud, err := awstest.Start(ctx, awstest.Options{})
	if errors.Is(err, awstest.ErrMissing) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cloud.Close() })
	clouds := builtinClouds()
	clouds["aws"] = func(context.Context, *env, string) (provider.Driver, []crabbox.Option, error) {
		d, err := cloud.Driver()
		return d, cloud.ClientOptions(), err
	}
	state := t.TempDir()
	t.Setenv("CRABBOX_STATE_DIR", state)
	t.Setenv("CRABBOX_PROVIDER", "")
	t.Setenv("CRABBOX_OPERATOR", "runbook-tester")
	tl := &tool{t: t, state: state, dir: t.TempDir(), clouds: clouds}
	p := "--provider=aws"

	var src record
	tl.ok(&src, "warmup", "--provider", "aws", "--class", "standard", "--ttl", "2h", "--idle-timeout", "30m")
	if !strings.HasPrefix(src.ID, "cbx_") || src.Operator != "runbook-tester" || src.ImageID == "" {
		t.Fatalf("warmup record: %+v", src)
	}
	out, _, code := tl.run("run", p, "--id", src.ID, "--no-sync", "--shell", "--", "echo bake-step; exit 7")
	if code != 7 || out != "bake-step\n" {
		t.Fatalf("run: exit %d, output %q; want 7 and the command's output", code, out)
	}
	tl.ok(nil, "run", p, "--id", src.ID, "--no-sync", "--shell", "--",
		`mkdir -p "${CRABBOX_FS_ROOT:-}/usr/local/bin" && printf '#!/bin/sh\necho hello\n' > "${CRABBOX_FS_ROOT:-}/usr/local/bin/crabbox-hello" && chmod 755 "${CRABBOX_FS_ROOT:-}/usr/local/bin/crabbox-hello"`)

	var img record
	tl.ok(&img, "image", "create", p, "--id", src.ID, "--name", "crabbox-openclaw-desktop-20260101-1200", "--wait", "--json")
	if !strings.HasPrefix(img.ID, "ami-") || img.Name != "crabbox-openclaw-desktop-20260101-1200" || img.SourceLease != src.ID ||
		img.Operator != "runbook-tester" || img.Created == "" || img.Status != "candidate" {
		t.Fatalf("image record: %+v", img)
	}
	tl.ok(nil, "release", p, "--id", src.ID)

	_, errs, code := tl.run("image", "promote", img.ID, p, "--json")
	if code == 0 || !strings.Contains(errs, "crabbox smoke --id") {
		t.Fatalf("promote without proof: exit %d, %s", code, errs)
	}

	var cand record
	tl.ok(&cand, "warmup", p, "--image", img.ID)
	if cand.ImageID != img.ID || cand.ImageSource != "explicit" {
		t.Fatalf("candidate lease: %+v", cand)
	}
	report := filepath.Join(t.TempDir(), "report.json")
	tl.ok(nil, "smoke", p, "--id", cand.ID, "--tools", "sh,crabbox-hello", "--output", report)
	var promo struct {
		Channel string  `json:"channel"`
		Image   *record `json:"image"`
		Proof   string  `json:"proof"`
	}
	tl.ok(&promo, "image", "promote", img.ID, p, "--proof", report, "--json")
	if promo.Channel != crabbox.DefaultChannel || promo.Image == nil || promo.Image.ID != img.ID || !strings.HasPrefix(promo.Proof, "proof-") {
		t.Fatalf("promotion: %+v", promo)
	}
	tl.ok(nil, "release", p, "--id", cand.ID)

	var normal record
	tl.ok(&normal, "warmup", p)
	if normal.ImageID != img.ID || normal.ImageSource != "promoted" {
		t.Fatalf("normal lease: %+v", normal)
	}
	tl.ok(nil, "release", p, "--id", normal.ID)
	var leases []record
	tl.ok(&leases, "list", p)
	if len(leases) != 0 {
		t.Fatalf("leases left: %+v", leases)
	}
}
