// Tests of orphans.go: DeleteOrphanKeys.

package hetzner_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

// clock is a settable clock shared by the fake and the driver.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestDeleteOrphanKeys(t *testing.T) {
	clk := &clock{t: time.Date(2026, 5, 6, 2, 0, 0, 0, time.UTC)}
	e := newEnv(t, hcloudfake.Options{Now: clk.now}, 0, hetzner.WithClock(clk.now))
	ctx := context.Background()
	live, err := e.d.CreateMachine(ctx, e.createReq(t, "cbx_00000000000a", "cx22"))
	if err != nil {
		t.Fatal(err)
	}
	gone, err := e.d.CreateMachine(ctx, e.createReq(t, "cbx_00000000000b", "cx22"))
	if err != nil {
		t.Fatal(err)
	}
	// The server vanishes behind the driver's back (deleted in the console).
	if _, _, err := e.client.Server.DeleteWithResult(ctx, &hcloud.Server{ID: mustID(t, gone.ID)}); err != nil {
		t.Fatal(err)
	}
	// A foreign key is never touched.
	if _, _, err := e.client.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: "someone", PublicKey: string(authorizedKey(t))}); err != nil {
		t.Fatal(err)
	}
	// Within the grace period even the orphan stays: it could be a lease
	// whose server is not created yet.
	clk.advance(9 * time.Minute)
	if n, err := e.d.DeleteOrphanKeys(ctx); err != nil || n != 0 {
		t.Fatalf("DeleteOrphanKeys within the grace = %d, %v; want 0", n, err)
	}
	clk.advance(2 * time.Minute)
	// A lease being created right now: its key is uploaded, its server is
	// not there yet. Its key must survive the sweep.
	creating := e.createReq(t, "cbx_00000000000c", "cx22")
	var mu sync.Mutex
	var swept int
	var sweepErr error
	sweptOnce := false // the create may be retried under another name
	e.fakeBefore(func(r *http.Request) {
		if r.Method == "POST" && r.URL.Path == "/servers" {
			// Between the key upload and the server create, sweep.
			mu.Lock()
			defer mu.Unlock()
			if !sweptOnce {
				sweptOnce = true
				swept, sweepErr = e.d.DeleteOrphanKeys(ctx)
			}
		}
	})
	m, err := e.d.CreateMachine(ctx, creating)
	e.fakeBefore(nil)
	if err != nil {
		t.Fatalf("create with a sweep in the middle: %v", err)
	}
	mu.Lock()
	if sweepErr != nil || swept != 1 {
		t.Fatalf("DeleteOrphanKeys past the grace = %d, %v; want 1 (the orphan only)", swept, sweepErr)
	}
	mu.Unlock()
	keys := e.fake.SSHKeys()
	toks := map[string]bool{}
	for _, k := range keys {
		toks[k.Labels[hetzner.LabelToken]] = true
	}
	if toks["cbx_00000000000b"] || !toks["cbx_00000000000a"] || !toks["cbx_00000000000c"] || len(keys) != 3 {
		t.Fatalf("keys left = %+v; want the live lease's, the creating lease's and the foreign key", keys)
	}
	// The new lease's server got its key.
	if s := e.fake.Servers(); len(s) != 2 {
		t.Fatalf("servers = %+v", s)
	}
	// A key whose lease never got a server is deleted once it is old enough.
	if _, _, err := e.client.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: "crabbox-cbx_00000000000d", PublicKey: string(authorizedKey(t)),
		Labels: map[string]string{"crabbox": "true", "created-by": "crabbox", hetzner.LabelKind: "lease-key", hetzner.LabelToken: "cbx_00000000000d"}}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.d.DeleteOrphanKeys(ctx); err != nil || n != 0 {
		t.Fatalf("young serverless key: %d, %v; want 0", n, err)
	}
	clk.advance(11 * time.Minute)
	if n, err := e.d.DeleteOrphanKeys(ctx); err != nil || n != 1 {
		t.Fatalf("old serverless key: %d, %v; want 1", n, err)
	}
	if n := len(e.fake.SSHKeys()); n != 3 {
		t.Fatalf("%d keys left, want 3", n)
	}
	for _, id := range []string{live.ID, m.ID} {
		if err := e.d.DeleteMachine(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := hetzner.New(e.client, hetzner.WithOrphanGrace(0)); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Fatalf("zero grace: %v", err)
	}
	t.Run("deprecated WithOrphanKeyGrace", func(t *testing.T) {
		if _, err := hetzner.New(e.client, hetzner.WithOrphanKeyGrace(0)); !errors.Is(err, provider.ErrInvalidArgument) {
			t.Fatalf("zero grace: %v", err)
		}
		if _, err := hetzner.New(e.client, hetzner.WithOrphanKeyGrace(time.Minute)); err != nil {
			t.Fatalf("one minute grace: %v", err)
		}
		if hetzner.DefaultOrphanKeyGrace != hetzner.DefaultOrphanGrace {
			t.Fatalf("DefaultOrphanKeyGrace = %v, DefaultOrphanGrace = %v", hetzner.DefaultOrphanKeyGrace, hetzner.DefaultOrphanGrace)
		}
	})
}

// A key labelled like a lease key but without both ownership labels (one
// alone, or another tool's created-by) is foreign: the sweep keeps it.
func TestDeleteOrphanKeysKeepsForeignWithOneOwnershipLabel(t *testing.T) {
	clk := &clock{t: time.Date(2026, 5, 6, 2, 0, 0, 0, time.UTC)}
	e := newEnv(t, hcloudfake.Options{Now: clk.now}, 0, hetzner.WithClock(clk.now))
	ctx := context.Background()
	for i, labels := range []map[string]string{
		{"crabbox": "true", "created-by": "other-tool"},
		{"crabbox": "true"},
		{"created-by": "crabbox"},
	} {
		tok := fmt.Sprintf("cbx_f0000000000%d", i)
		labels[hetzner.LabelKind], labels[hetzner.LabelToken] = "lease-key", tok
		if _, _, err := e.client.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: "crabbox-" + tok,
			PublicKey: string(authorizedKey(t)), Labels: labels}); err != nil {
			t.Fatal(err)
		}
	}
	clk.advance(time.Hour)
	if n, err := e.d.DeleteOrphanKeys(ctx); err != nil || n != 0 {
		t.Fatalf("DeleteOrphanKeys = %d, %v; want 0: none of these keys is crabbox's", n, err)
	}
	if n := len(e.fake.SSHKeys()); n != 3 {
		t.Fatalf("%d keys left, want the 3 foreign ones", n)
	}
}
