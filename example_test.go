package crabbox_test

// This file keeps the README's quick start compiling: it is the same code.

import (
	"context"
	"log"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
)

func Example() {
	ctx := context.Background()

	// Any provider.Driver: awsec2.New(cfg, ...), hetzner.New(hc, ...),
	// sshhost.New(hosts), or the embedded local cloud:
	cloud, err := crabboxtest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer cloud.Close()

	c, err := crabbox.New(cloud)
	if err != nil {
		log.Fatal(err)
	}

	// Warm a source lease and verify it.
	src, err := c.Warmup(ctx, crabbox.WithClass(crabbox.ClassStandard), crabbox.WithTTL(2*time.Hour))
	if err != nil {
		log.Fatal(err)
	}
	defer src.Release(context.WithoutCancel(ctx))
	if _, err := src.Run(ctx, "git --version", crabbox.Strict()); err != nil {
		log.Fatal(err)
	}

	// Create the candidate image and wait for it.
	name, _ := crabbox.NewImageName("acme", "crabbox", "linux-base", time.Now())
	img, err := c.CreateImage(ctx, src.ID, name.String(), crabbox.WithPrepare(), crabbox.WithWait(45*time.Minute))
	if err != nil {
		log.Fatal(err) // img is non-nil when the wait gave up: its ID is kept
	}

	// Boot the candidate explicitly, smoke it, promote with that proof.
	cand, err := c.Warmup(ctx, crabbox.WithImage(img.ID))
	if err != nil {
		log.Fatal(err)
	}
	defer cand.Release(context.WithoutCancel(ctx))
	// The candidate smoke the default proof policy asks for (readiness,
	// work root, hygiene), here with git as the image's tool. Smoke records
	// the outcome on the image; that record is what Promote checks.
	report, err := crabbox.Smoke(ctx, cand, crabbox.CandidateSmoke(crabbox.CheckSetOptions{Tools: []string{"git"}}))
	if err != nil {
		log.Fatal(err) // errors.Is(err, crabbox.ErrSmokeFailed); report says which
	}
	if _, err := c.Promote(ctx, img.ID, crabbox.WithProof(report)); err != nil {
		log.Fatal(err)
	}
}
