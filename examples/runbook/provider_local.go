package main

import (
	"context"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
)

// The embedded local cloud: machines are in-process SSH servers running
// commands in a directory per machine; images copy that directory.
func init() {
	register(backend{
		name: "local",
		help: "embedded local cloud (default; no account, no network)",
		setup: func(ctx context.Context) (provider.Driver, []crabbox.Option, params, func(), error) {
			cloud, err := crabboxtest.New()
			if err != nil {
				return nil, nil, params{}, nil, err
			}
			opts := []crabbox.Option{
				crabbox.WithPollBackoff(crabbox.ConstantBackoff(20 * time.Millisecond)),
				crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(20 * time.Millisecond)),
			}
			p := params{
				// Tools a fresh machine set up as the README says has; the
				// runbook's full list (node, pnpm, ffmpeg, ...) applies to
				// cloud images.
				tools: []string{"sh", "git", "curl", "rsync", "jq", "tar", "crabbox-hello"},
				// The bake installs a tool into the image, the way a real
				// bake installs packages, so the candidate smoke checks
				// something the source did not have at boot.
				bake: `R="${CRABBOX_FS_ROOT:-}"
mkdir -p "$R/usr/local/bin" "$R/var/cache/crabbox/pnpm"
printf '#!/bin/sh\necho crabbox-hello from the baked image\n' > "$R/usr/local/bin/crabbox-hello"
chmod 755 "$R/usr/local/bin/crabbox-hello"
crabbox-hello`,
				class:   crabbox.ClassStandard,
				owner:   "crabbox",
				product: "demo",
			}
			return cloud, opts, p, func() { _ = cloud.Close() }, nil
		},
	})
}
