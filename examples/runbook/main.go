// Command runbook runs the Crabbox image bake runbook end to end (package
// steps: bake, smoke, promote, verify, a refused candidate, a rollback, the
// cleanup plan) on the embedded local cloud (package crabboxtest): no
// account, no network.
//
// It links no cloud SDK, so a first build on a fresh machine is quick. The
// cloud backends are programs of their own, one flag away:
//
//	go run ./examples/runbook/aws -provider aws|moto
//	go run ./examples/runbook/hetzner -provider hetzner|hetzner-fake
//
// (./scripts/runbook -provider NAME picks the right one.) Cleanup is a dry
// run unless -apply-cleanup; evidence is removed at exit unless -evidence
// DIR.
package main

import (
	"context"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/examples/runbook/steps"
	"github.com/crabbox/crabbox-go/provider"
)

func main() { steps.Main("local", []steps.Backend{local()}) }

// local is the embedded local cloud: machines are in-process SSH servers
// running commands in a directory per machine; images copy that directory.
func local() steps.Backend {
	return steps.Backend{
		Name: "local",
		Help: "embedded local cloud (default; no account, no network)",
		Setup: func(ctx context.Context) (provider.Driver, []crabbox.Option, steps.Params, func(), error) {
			cloud, err := crabboxtest.New()
			if err != nil {
				return nil, nil, steps.Params{}, nil, err
			}
			opts := []crabbox.Option{
				crabbox.WithPollBackoff(crabbox.ConstantBackoff(20 * time.Millisecond)),
				crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(20 * time.Millisecond)),
			}
			p := steps.Params{
				// Tools a fresh machine set up as the README says has; the
				// runbook's full list (node, pnpm, ffmpeg, ...) applies to
				// cloud images.
				Tools: []string{"sh", "git", "curl", "rsync", "jq", "tar", "crabbox-hello"},
				// The bake installs a tool into the image, the way a real
				// bake installs packages, so the candidate smoke checks
				// something the source did not have at boot.
				Bake: `R="${CRABBOX_FS_ROOT:-}"
mkdir -p "$R/usr/local/bin" "$R/var/cache/crabbox/pnpm"
printf '#!/bin/sh\necho crabbox-hello from the baked image\n' > "$R/usr/local/bin/crabbox-hello"
chmod 755 "$R/usr/local/bin/crabbox-hello"
crabbox-hello`,
				Class:   crabbox.ClassStandard,
				Owner:   "crabbox",
				Product: "demo",
			}
			return cloud, opts, p, func() { _ = cloud.Close() }, nil
		},
	}
}
