// Command hetzner runs the Crabbox image bake runbook (package
// examples/runbook/steps) on Hetzner Cloud (-provider hetzner, HCLOUD_TOKEN)
// or on the fake Hetzner API with real sshd boxes on loopback (-provider
// hetzner-fake). It is its own program so that the local demo
// (examples/runbook) does not link hcloud-go.
//
//	HCLOUD_TOKEN=... go run ./examples/runbook/hetzner -provider hetzner
//	go run ./examples/runbook/hetzner -provider hetzner-fake
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest/hetznertest"
	"github.com/crabbox/crabbox-go/examples/runbook/steps"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

// Hetzner Cloud, for real (HCLOUD_TOKEN) or against the fake Hetzner API
// whose servers are OpenSSH boxes on loopback.
// backends are the ones this program links; init adds them.
var backends []steps.Backend

func main() { steps.Main("hetzner", backends) }

func init() {
	backends = append(backends, steps.Backend{
		Name: "hetzner",
		Help: "Hetzner Cloud (HCLOUD_TOKEN; HCLOUD_LOCATION, default fsn1)",
		Setup: func(ctx context.Context) (provider.Driver, []crabbox.Option, steps.Params, func(), error) {
			token := os.Getenv("HCLOUD_TOKEN")
			if token == "" {
				return nil, nil, steps.Params{}, nil, errors.New("HCLOUD_TOKEN is not set")
			}
			loc := os.Getenv("HCLOUD_LOCATION")
			if loc == "" {
				loc = "fsn1"
			}
			// The driver's waits keep their request budget (PollSchedule)
			// with hcloud-go's default poll options; hetzner.PollOpts()
			// here would double every pause.
			client := hcloud.NewClient(hcloud.WithToken(token), hcloud.WithApplication("crabbox-runbook", ""))
			d, err := hetzner.New(client, hetzner.WithLocation(loc))
			if err != nil {
				return nil, nil, steps.Params{}, nil, err
			}
			p := steps.Params{
				// What the crabbox bootstrap installs on Ubuntu 24.04; add a
				// bake (packages) and the runbook's full tool list for a
				// production image.
				Tools:   []string{"sh", "git", "curl", "tar", "jq", "rsync"},
				Class:   crabbox.ClassStandard,
				Owner:   "crabbox",
				Product: "hetzner",
			}
			return d, nil, p, func() {}, nil
		},
	})
	backends = append(backends, steps.Backend{
		Name:  "hetzner-fake",
		Help:  "fake Hetzner API with OpenSSH boxes on loopback (crabboxtest/hetznertest; needs root and sshd; no account)",
		Setup: setupHetznerFake,
	})
}

func setupHetznerFake(ctx context.Context) (provider.Driver, []crabbox.Option, steps.Params, func(), error) {
	cloud, err := hetznertest.Start(ctx)
	if err != nil {
		return nil, nil, steps.Params{}, nil, err
	}
	// The fake finishes an action after a few reads: poll it quickly rather
	// than on the schedule that keeps real waits inside Hetzner's budget.
	d, err := hetzner.New(cloud.Client(), hetzner.WithLocation("fsn1"),
		hetzner.WithPollSchedule(func(time.Duration) time.Duration { return 20 * time.Millisecond }))
	if err != nil {
		cloud.Close()
		return nil, nil, steps.Params{}, nil, err
	}
	p := steps.Params{
		// Tools the host running the fake boxes has; the bake installs one
		// into the image's disk, as a real bake installs packages.
		Tools: []string{"sh", "git", "curl", "tar", "crabbox-hello"},
		Bake: `R="${CRABBOX_FS_ROOT:-}"
mkdir -p "$R/usr/local/bin" "$R/var/cache/crabbox/pnpm"
printf '#!/bin/sh\necho crabbox-hello from the baked image\n' > "$R/usr/local/bin/crabbox-hello"
chmod 755 "$R/usr/local/bin/crabbox-hello"
crabbox-hello`,
		Class:   crabbox.ClassStandard,
		Owner:   "crabbox",
		Product: "hetzner",
	}
	cleanup := func() {
		st := cloud.Counts()
		_ = cloud.Close()
		fmt.Printf("\nfake Hetzner at exit: %d servers, %d SSH keys (channel records), %d snapshots\n", st.Servers, st.SSHKeys, st.Images)
	}
	return d, cloud.ClientOptions(), p, cleanup, nil
}
