// Package cloudrunbook is the image runbook every cloud backend's
// end-to-end test drives on boxes booted by the real cloud-init
// (internal/testenv/cloudbox behind the backend's emulator).
package cloudrunbook

import (
	"context"
	"strings"
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/cloudinit"
)

// bake installs a tool as root, the way a real bake does (sudo: the lease
// user is not root), and runs it.
const bake = `printf '#!/bin/sh\necho baked\n' | sudo -n tee /usr/local/bin/crabbox-hello >/dev/null &&
sudo -n chmod 755 /usr/local/bin/crabbox-hello && crabbox-hello`

// Run warms a source lease on the base image, checks that cloud-init (not
// an emulator) booted it, bakes a tool, images the box, boots a candidate
// from the image (cloud-init runs its first boot again there, over the
// source lease's marker), smokes it, promotes it with the proof and boots
// the promoted image by default. Every lease is released. It returns the
// image's id: the caller lifts its protection and deletes it.
func Run(t *testing.T, ctx context.Context, c *crabbox.Client) string {
	t.Helper()
	src, err := c.Warmup(ctx, crabbox.WithClass("small"), crabbox.WithTTL(time.Hour))
	if err != nil {
		t.Fatalf("Warmup: %v", err)
	}
	defer src.Release(context.Background())
	res, err := src.Run(ctx, `echo "fs-root=${CRABBOX_FS_ROOT:-none}"; cloud-init status; sudo -n cat `+cloudinit.BootstrapMarker, crabbox.Strict())
	if err != nil || !strings.Contains(res.StdoutTail, "fs-root=none") || !strings.Contains(res.StdoutTail, "status: done") ||
		!strings.Contains(res.StdoutTail, src.ID) {
		t.Fatalf("the source lease's box was not booted by cloud-init for %s: %+v, %v", src.ID, res, err)
	}
	if res, err := src.Run(ctx, bake, crabbox.Strict()); err != nil || strings.TrimSpace(res.StdoutTail) != "baked" {
		t.Fatalf("bake: %+v, %v", res, err)
	}
	name, err := crabbox.NewImageName("openclaw", "crabbox", "linux", time.Now().UTC())
	if err != nil {
		t.Fatal(err)
	}
	img, err := c.CreateImage(ctx, src.ID, name.String(), crabbox.WithWait(2*time.Minute))
	if err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	if err := src.Release(ctx); err != nil {
		t.Fatal(err)
	}

	cand, err := c.Warmup(ctx, crabbox.WithImage(img.ID), crabbox.WithTTL(30*time.Minute))
	if err != nil {
		t.Fatalf("candidate Warmup: %v", err)
	}
	defer cand.Release(context.Background())
	// The candidate smoke the default proof policy asks for (readiness,
	// work root, hygiene), then what the real first boot must show.
	rep, err := crabbox.Smoke(ctx, cand, append(crabbox.CandidateSmoke(crabbox.CheckSetOptions{Tools: []string{"git"}}),
		crabbox.CommandExists("crabbox-hello", "git"),
		crabbox.CommandSucceeds("baked tool runs", "crabbox-hello", crabbox.OutputContains("baked")),
		crabbox.CommandSucceeds("cloud-init finished this instance's first boot", "cloud-init status --long", crabbox.OutputContains("status: done")),
		crabbox.CommandSucceeds("the marker is this lease's", "cat "+cloudinit.BootstrapMarker, crabbox.OutputContains(cand.ID)),
	))
	if err != nil {
		t.Fatalf("candidate smoke: %v (%+v)", err, rep)
	}
	if err := cand.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Promote(ctx, img.ID, crabbox.WithProof(rep)); err != nil {
		t.Fatalf("Promote: %v", err)
	}

	norm, err := c.Warmup(ctx, crabbox.WithTTL(30*time.Minute))
	if err != nil {
		t.Fatalf("normal Warmup: %v", err)
	}
	defer norm.Release(context.Background())
	if norm.ImageID != img.ID {
		t.Errorf("normal lease booted %s (%s), want the promoted %s", norm.ImageID, norm.ImageSource, img.ID)
	}
	if res, err := norm.Run(ctx, "crabbox-hello", crabbox.Strict()); err != nil || strings.TrimSpace(res.StdoutTail) != "baked" {
		t.Errorf("promoted image: %+v, %v", res, err)
	}
	if err := norm.Release(ctx); err != nil {
		t.Fatal(err)
	}
	return img.ID
}
