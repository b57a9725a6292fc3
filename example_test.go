package crabbox_test

// The package example: the README's quick start, kept compiling here
// (examples/quickstart_test.go runs the README's own copy).

import (
	"context"
	"fmt"
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
	fmt.Printf("warmed source lease %s from image %s\n", src.ID, src.ImageID)
	if _, err := src.Run(ctx, "git --version", crabbox.Strict()); err != nil {
		log.Fatal(err)
	}

	// Create the candidate image and wait for it.
	name, _ := crabbox.NewImageName("acme", "crabbox", "linux-base", time.Now())
	img, err := c.CreateImage(ctx, src.ID, name.String(), crabbox.WithPrepare(), crabbox.WithWait(45*time.Minute))
	if err != nil {
		log.Fatal(err) // img is non-nil when the wait gave up: its ID is kept
	}
	fmt.Printf("created candidate image %s (%s)\n", img.ID, img.Name)

	// Boot the candidate explicitly, smoke it, promote with that proof.
	cand, err := c.Warmup(ctx, crabbox.WithImage(img.ID))
	if err != nil {
		log.Fatal(err)
	}
	defer cand.Release(context.WithoutCancel(ctx))
	// The candidate smoke: readiness, work root, hygiene (what the default
	// proof policy requires) and the image's tools. Smoke records the
	// outcome on the image; Promote checks the report against that record.
	report, err := crabbox.Smoke(ctx, cand, crabbox.CandidateSmoke(crabbox.CheckSetOptions{Tools: []string{"git"}}))
	if err != nil {
		log.Fatal(err) // errors.Is(err, crabbox.ErrSmokeFailed); report says which
	}
	fmt.Printf("candidate smoke on %s: %d checks passed\n", cand.ID, report.Passed)
	pr, err := c.Promote(ctx, img.ID, crabbox.WithProof(report))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("promoted %s in channel %s (version %d)\n", pr.Image.ID, pr.Channel, pr.Version)
}
