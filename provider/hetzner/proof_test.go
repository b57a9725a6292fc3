// Forged and edited smoke reports cannot promote on Hetzner.

package hetzner_test

import (
	"context"
	"errors"
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/forge"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
)

func TestForgedReportsCannotPromote(t *testing.T) {
	w := newWorld(t, hcloudfake.Options{ImageSizeGB: 1})
	ctx := ctxFor(t, 3*time.Minute)
	img := w.bake(t, ctx, "forged", "openclaw-crabbox-linux-20260506-0100")
	other := w.bake(t, ctx, "other", "openclaw-crabbox-linux-20260506-0200")
	pass := w.smoke(t, ctx, img.ID, "forged")
	otherPass := w.smoke(t, ctx, other.ID, "other")
	l, err := w.c.Warmup(ctx, crabbox.WithImage(img.ID), crabbox.WithClass("small"))
	if err != nil {
		t.Fatal(err)
	}
	fail, err := crabbox.Smoke(ctx, l, append(crabbox.CandidateSmoke(crabbox.CheckSetOptions{Tools: []string{"sh"}}),
		crabbox.CommandExists("definitely-not-installed-xyz")))
	if !errors.Is(err, crabbox.ErrSmokeFailed) {
		t.Fatalf("failing smoke: %v", err)
	}
	_ = l.Release(context.Background())

	for _, fc := range forge.Candidates(img.ID, pass, fail, otherPass) {
		t.Run(fc.Name, func(t *testing.T) {
			if pr, err := w.c.Promote(ctx, img.ID, crabbox.WithProof(fc.Report)); !errors.Is(err, crabbox.ErrNoProof) || pr != nil {
				t.Fatalf("Promote = %+v, %v; want ErrNoProof", pr, err)
			}
			if _, err := w.c.Promoted(ctx, crabbox.DefaultChannel); !errors.Is(err, crabbox.ErrNotFound) {
				t.Fatalf("the channel moved: %v", err)
			}
			got, err := w.c.GetImage(ctx, img.ID)
			if err != nil || got.Labels[crabbox.LabelSmokeLease] != "" || got.Protected {
				t.Fatalf("image after a refused promotion = %+v, %v", got, err)
			}
		})
	}
	for _, fc := range forge.KnownGood(pass) {
		t.Run("known-good: "+fc.Name, func(t *testing.T) {
			if _, err := w.c.MarkKnownGood(ctx, img.ID, fc.Report); !errors.Is(err, crabbox.ErrNoProof) {
				t.Fatalf("MarkKnownGood = %v; want ErrNoProof", err)
			}
		})
	}
	pr, err := w.c.Promote(ctx, img.ID, crabbox.WithProof(pass))
	if err != nil {
		t.Fatalf("the genuine report: %v", err)
	}
	ev, err := w.c.Evidence(ctx, img.ID)
	if err != nil || len(ev.Promotions) != 1 || ev.Promotions[0].Proof != "proof-"+pass.Digest() || ev.Promotions[0].Version != pr.Version {
		t.Fatalf("evidence = %+v, %v", ev, err)
	}
}
