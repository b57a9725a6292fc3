// The fault sweep on moto with real sshd boxes: creates applied late (the
// caller's context ends while RunInstances, ImportKeyPair or CreateImage is
// in flight, and moto applies the call afterwards) leave nothing behind.

package awsec2_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/awsbox"
	"github.com/crabbox/crabbox-go/internal/testenv/leakcheck"
	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

// sweepAdoptWait is the driver's adopt wait in the sweep: longer than any
// lag the sweep injects.
const sweepAdoptWait = 3 * time.Second

// sweepLags are how late the emulator applies a create after the caller's
// context ended.
var sweepLags = []time.Duration{20 * time.Millisecond, 300 * time.Millisecond, time.Second}

// sweepClient is a client on e's driver with its own state dir.
func sweepClient(t *testing.T, e *env) (*crabbox.Client, string) {
	t.Helper()
	emu := awsbox.New(t, e.ec2)
	dir := t.TempDir()
	c, err := crabbox.New(e.d,
		crabbox.WithDialer(emu.Dial),
		crabbox.WithStateDir(dir),
		crabbox.WithOperator("tester"),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(10*time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(10*time.Millisecond)),
	)
	if err != nil {
		t.Fatal(err)
	}
	return c, dir
}

// TestFaultSweepLateCreates cancels Warmup while ImportKeyPair or
// RunInstances is in flight, and Client.CreateImage while CreateImage is,
// with moto applying the call 20 ms to 1 s later. Afterwards nothing the
// SDK created is left: no instance that is not terminated, no key pair, no
// image or snapshot the caller was not handed (and that one deletes
// cleanly), no state-dir entry, no SDK goroutine.
func TestFaultSweepLateCreates(t *testing.T) {
	for _, action := range []string{"ImportKeyPair", "RunInstances", "CreateImage"} {
		for _, lag := range sweepLags {
			t.Run(fmt.Sprintf("%s/%v", action, lag), func(t *testing.T) {
				e := newEnv(t, awsec2.WithAdoptWait(sweepAdoptWait))
				c, dir := sweepClient(t, e)
				var src *crabbox.Lease
				if action == "CreateImage" {
					var err error
					if src, err = c.Warmup(t.Context(), crabbox.WithTTL(time.Hour)); err != nil {
						t.Fatal(err)
					}
				}
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				e.faults.Add(moto.Fault{Action: action, Times: 1, Late: lag, OnHold: cancel})
				start := time.Now()
				var err error
				var img *crabbox.Image
				if action == "CreateImage" {
					img, err = c.CreateImage(ctx, src.ID, imageName(t, "sweep", time.Now()), crabbox.WithWait(time.Minute))
				} else {
					var l *crabbox.Lease
					l, err = c.Warmup(ctx, crabbox.WithTTL(time.Hour))
					if l != nil {
						t.Errorf("Warmup returned lease %s with %v: its release failed", l.ID, err)
						_ = l.Release(context.Background())
					}
				}
				took := time.Since(start)
				if e.faults.Injected(action) != 1 {
					t.Fatalf("no %s call was held", action)
				}
				leakcheck.Cancelled(t, err, took, sweepAdoptWait+5*time.Second)
				e.faults.WaitLate()
				if f := e.faults.LateFailures(); len(f) > 0 {
					// On EC2 the call was accepted before the caller gave
					// up: what it needed was deleted while it was in flight.
					t.Errorf("moto refused the late call (%v): something it depended on was deleted under it", f)
				}
				if action == "CreateImage" {
					images, _ := ownedImages(t, e)
					switch {
					case len(images) > 1:
						t.Fatalf("images = %v: more than one", images)
					case len(images) == 1 && (img == nil || img.ID != images[0]):
						t.Fatalf("image %s exists but CreateImage returned %+v: it is left behind", images[0], img)
					}
					if img != nil && img.ID != "" {
						if err := e.d.DeleteImage(context.Background(), img.ID); err != nil {
							t.Fatal(err)
						}
					}
					if err := src.Release(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				e.expectClean()
				leakcheck.Local(t, dir)
			})
		}
	}
}
