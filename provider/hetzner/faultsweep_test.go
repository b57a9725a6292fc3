// The fault sweep on the Hetzner fake with real sshd boxes: creates applied
// late (the caller's context ends while POST /servers, POST /ssh_keys or
// create_image is in flight, and the fake applies it afterwards) leave
// nothing behind.

package hetzner_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake/sshbox"
	"github.com/crabbox/crabbox-go/internal/testenv/leakcheck"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

// sweepAdoptWait is the driver's adopt wait in the sweep: longer than any
// lag the sweep injects.
const sweepAdoptWait = 3 * time.Second

// sweepWorld is a world whose driver adopts with sweepAdoptWait, with its
// state dir.
func sweepWorld(t *testing.T) (*world, string) {
	t.Helper()
	boxes := sshbox.New(t)
	e := newEnv(t, boxes.Options(hcloudfake.Options{}), 2, hetzner.WithAdoptWait(sweepAdoptWait))
	dir := t.TempDir()
	c, err := crabbox.New(e.d,
		crabbox.WithStateDir(dir),
		crabbox.WithDialer(e.fake.Dial),
		crabbox.WithOperator("tester"),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(10*time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(10*time.Millisecond)),
	)
	if err != nil {
		t.Fatal(err)
	}
	return &world{env: e, boxes: boxes, c: c}, dir
}

// TestFaultSweepLateCreates cancels Warmup while POST /ssh_keys or POST
// /servers is in flight, and Client.CreateImage while create_image is, with
// the fake applying the request 20 ms to 1 s later. Afterwards nothing the
// SDK created is left: no server, box, SSH key or snapshot the caller was
// not handed (and that one deletes cleanly), no state-dir entry, no SDK
// goroutine.
func TestFaultSweepLateCreates(t *testing.T) {
	paths := map[string]string{
		"ssh_keys":     "/ssh_keys",
		"servers":      "/servers",
		"create_image": "/servers/*/actions/create_image",
	}
	for _, what := range []string{"ssh_keys", "servers", "create_image"} {
		for _, lag := range []time.Duration{20 * time.Millisecond, 300 * time.Millisecond, time.Second} {
			t.Run(fmt.Sprintf("%s/%v", what, lag), func(t *testing.T) {
				w, dir := sweepWorld(t)
				var src *crabbox.Lease
				if what == "create_image" {
					var err error
					if src, err = w.c.Warmup(t.Context(), crabbox.WithClass("small")); err != nil {
						t.Fatal(err)
					}
				}
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				w.fake.InjectFault(hcloudfake.Fault{Method: "POST", Path: paths[what], Late: lag, OnHold: cancel})
				start := time.Now()
				var err error
				var img *crabbox.Image
				if what == "create_image" {
					img, err = w.c.CreateImage(ctx, src.ID, "openclaw-crabbox-linux-20260506-0235", crabbox.WithWait(time.Minute))
				} else {
					var l *crabbox.Lease
					l, err = w.c.Warmup(ctx, crabbox.WithClass("small"))
					if l != nil {
						t.Errorf("Warmup returned lease %s with %v: its release failed", l.ID, err)
						_ = l.Release(context.Background())
					}
				}
				took := time.Since(start)
				if w.fake.PendingFaults() != 0 {
					t.Fatalf("no POST %s was held", paths[what])
				}
				leakcheck.Cancelled(t, err, took, sweepAdoptWait+5*time.Second)
				w.fake.WaitLate()
				if f := w.fake.LateFailures(); len(f) > 0 {
					// On Hetzner the request was accepted before the caller
					// gave up: what it needed was deleted while in flight.
					t.Errorf("the fake refused the late request (%v): something it depended on was deleted under it", f)
				}
				if what == "create_image" {
					ims := w.fake.Images()
					switch {
					case len(ims) > 1:
						t.Fatalf("%d images: more than one", len(ims))
					case len(ims) == 1 && (img == nil || img.ID != itoa(ims[0].ID)):
						t.Fatalf("image %d exists but CreateImage returned %+v: it is left behind", ims[0].ID, img)
					}
					if img != nil && img.ID != "" {
						if err := w.d.DeleteImage(context.Background(), img.ID); err != nil {
							t.Fatal(err)
						}
					}
					if err := src.Release(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				if st := w.fake.State(); st.Servers != 0 || st.SSHKeys != 0 || st.Images != 0 || st.Boxes != 0 {
					t.Errorf("left %+v", st)
				}
				leakcheck.Local(t, dir)
			})
		}
	}
}
