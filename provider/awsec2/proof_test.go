// Forged and edited smoke reports cannot promote on AWS (moto).

package awsec2_test

import (
	"context"
	"errors"
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/forge"
)

func TestForgedReportsCannotPromote(t *testing.T) {
	e := newEnv(t)
	c, _ := newClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	now := time.Now().UTC()
	src, err := c.Warmup(ctx, crabbox.WithClass("small"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := c.CreateImage(ctx, src.ID, imageName(t, "forged", now), crabbox.WithWait(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.CreateImage(ctx, src.ID, imageName(t, "other", now), crabbox.WithWait(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	_ = src.Release(ctx)
	checks := crabbox.CandidateSmoke(crabbox.CheckSetOptions{Tools: []string{"sh"}})
	smoke := func(imageID string, extra ...crabbox.SmokeCheck) *crabbox.SmokeReport {
		t.Helper()
		l, err := c.Warmup(ctx, crabbox.WithImage(imageID), crabbox.WithClass("small"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release(context.Background())
		rep, _ := crabbox.Smoke(ctx, l, append(append([]crabbox.SmokeCheck(nil), checks...), extra...))
		return rep
	}
	pass, otherPass := smoke(img.ID), smoke(other.ID)
	fail := smoke(img.ID, crabbox.CommandExists("definitely-not-installed-xyz"))
	if !pass.OK() || !otherPass.OK() || fail.OK() {
		t.Fatalf("smokes: pass %v, other %v, fail %v", pass.OK(), otherPass.OK(), fail.OK())
	}
	for _, fc := range forge.Candidates(img.ID, pass, fail, otherPass) {
		t.Run(fc.Name, func(t *testing.T) {
			if pr, err := c.Promote(ctx, img.ID, crabbox.WithProof(fc.Report)); !errors.Is(err, crabbox.ErrNoProof) || pr != nil {
				t.Fatalf("Promote = %+v, %v; want ErrNoProof", pr, err)
			}
			if _, err := c.Promoted(ctx, crabbox.DefaultChannel); !errors.Is(err, crabbox.ErrNotFound) {
				t.Fatalf("the channel moved: %v", err)
			}
			got, err := c.GetImage(ctx, img.ID)
			if err != nil || got.Labels[crabbox.LabelSmokeLease] != "" || got.Protected {
				t.Fatalf("image after a refused promotion = %+v, %v", got, err)
			}
		})
	}
	for _, fc := range forge.KnownGood(pass) {
		t.Run("known-good: "+fc.Name, func(t *testing.T) {
			if _, err := c.MarkKnownGood(ctx, img.ID, fc.Report); !errors.Is(err, crabbox.ErrNoProof) {
				t.Fatalf("MarkKnownGood = %v; want ErrNoProof", err)
			}
		})
	}
	pr, err := c.Promote(ctx, img.ID, crabbox.WithProof(pass))
	if err != nil {
		t.Fatalf("the genuine report: %v", err)
	}
	ev, err := c.Evidence(ctx, img.ID)
	if err != nil || len(ev.Promotions) != 1 || ev.Promotions[0].Proof != "proof-"+pass.Digest() || ev.Promotions[0].Version != pr.Version {
		t.Fatalf("evidence = %+v, %v", ev, err)
	}
}
