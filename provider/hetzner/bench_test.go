// Benchmarks of lease and channel calls against the fake.

package hetzner_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

// The benchmarks report API requests per operation: Hetzner allows 3600
// requests per hour per project, so request counts matter more than speed.

func benchDriver(b *testing.B) (*hcloudfake.Fake, *hetzner.Driver) {
	f := hcloudfake.New(hcloudfake.Options{})
	b.Cleanup(f.Close)
	c := hcloud.NewClient(hcloud.WithEndpoint(f.URL()), hcloud.WithToken("b"),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(time.Millisecond)}))
	d, err := hetzner.New(c)
	if err != nil {
		b.Fatal(err)
	}
	return f, d
}

func BenchmarkCreateDeleteMachine(b *testing.B) {
	f, d := benchDriver(b)
	ctx := context.Background()
	img, err := d.BaseImage(ctx, "amd64")
	if err != nil {
		b.Fatal(err)
	}
	key := authorizedKey(b)
	start := f.Requests()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tok := fmt.Sprintf("cbx_%012x", i)
		m, err := d.CreateMachine(ctx, provider.CreateMachineRequest{Token: tok, Name: "bench-" + tok[4:], Image: img,
			Type: "cx22", UserData: []byte("#cloud-config\n"), AuthorizedKey: key})
		if err != nil {
			b.Fatal(err)
		}
		if err := d.DeleteMachine(ctx, m.ID); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(f.Requests()-start)/float64(b.N), "requests/op")
}

func BenchmarkSetChannel(b *testing.B) {
	f, d := benchDriver(b)
	ctx := context.Background()
	img, err := d.BaseImage(ctx, "amd64")
	if err != nil {
		b.Fatal(err)
	}
	start := f.Requests()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// IfVersion 0 (the first set) is unconditional, then each set is
		// conditional on the previous version.
		if _, err := d.SetChannel(ctx, provider.SetChannelRequest{Channel: "bench", ImageID: img, IfVersion: int64(i)}); err != nil {
			b.Fatal(err)
		}
		if i%20 == 19 {
			if _, err := d.PruneChannel(ctx, "bench", 1); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(f.Requests()-start)/float64(b.N), "requests/op")
}
