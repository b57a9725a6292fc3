// The polling budget of the driver's waits, counted in the fake: a
// 10-minute snapshot wait stays within hetzner.PollBudget10m requests
// whatever the client's poll options, and a whole bake within a budget
// that lets several bakes share Hetzner's 3,600 requests per hour.
//
// Time is compressed: the actions last a thousandth of their real length
// and the schedule is PollSchedule scaled by the same factor, so a wait
// makes the polls a real one of a thousand times its length would make
// (late timers only make fewer).

package hetzner_test

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

const timeScale = 1000

// scaledSchedule is hetzner.PollSchedule at timeScale.
func scaledSchedule(waited time.Duration) time.Duration {
	return hetzner.PollSchedule(waited*timeScale) / timeScale
}

// real10m is ten minutes at timeScale.
const real10m = 10 * time.Minute / timeScale

func TestSnapshotWaitStaysInPollBudget(t *testing.T) {
	var polls atomic.Int32
	f := hcloudfake.New(hcloudfake.Options{
		ActionDurations: map[string]time.Duration{"create_image": real10m},
		BeforeRequest: func(r *http.Request) {
			if isActionPoll(r) {
				polls.Add(1)
			}
		},
	})
	t.Cleanup(f.Close)
	// hcloud-go's default poll backoff (500 ms) at the same scale: the
	// client alone would ask about 1,200 times in ten minutes.
	c := hcloud.NewClient(hcloud.WithEndpoint(f.URL()), hcloud.WithToken("t"),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(500 * time.Millisecond / timeScale)}))
	d, err := hetzner.New(c, hetzner.WithPollSchedule(scaledSchedule))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{fake: f, client: c, d: d}
	ctx := ctxFor(t, time.Minute)
	m := e.runningMachine(t, "cbx_0123456789ab")
	polls.Store(0)
	start := time.Now()
	im, err := d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-0000", Token: "tok"})
	if err != nil || im.State != provider.ImageAvailable {
		t.Fatalf("CreateImage = %+v, %v", im, err)
	}
	waited, n := time.Since(start), polls.Load()
	t.Logf("a %v snapshot wait (%v real) polled %d times", real10m, waited*timeScale, n)
	if waited < real10m {
		t.Fatalf("the wait ended after %v, before the snapshot's %v", waited, real10m)
	}
	if n > hetzner.PollBudget10m {
		t.Fatalf("a 10-minute snapshot wait polled %d times, budget %d", n, hetzner.PollBudget10m)
	}
	if n < 20 {
		t.Fatalf("only %d polls: the wait did not poll through the snapshot", n)
	}
	if err := d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
}

// One bake: Warmup (a 1-minute boot), a command, a 10-minute snapshot
// wait, Release. The count is the number docs/providers.md states.
func TestBakeRequestBudget(t *testing.T) {
	var requests atomic.Int32
	w := newWorld(t, hcloudfake.Options{
		ActionDurations: map[string]time.Duration{"create_server": time.Minute / timeScale, "create_image": real10m},
		BeforeRequest:   func(*http.Request) { requests.Add(1) },
	}, hetzner.WithPollSchedule(scaledSchedule))
	ctx := ctxFor(t, time.Minute)
	l, err := w.c.Warmup(ctx, crabbox.WithClass("small"))
	if err != nil {
		t.Fatal(err)
	}
	warm := requests.Load()
	if _, err := l.Run(ctx, "true"); err != nil {
		t.Fatal(err)
	}
	img, err := w.c.CreateImage(ctx, l.ID, "openclaw-crabbox-linux-20260506-0230", crabbox.WithWait(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	imaged := requests.Load()
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	total := requests.Load()
	t.Logf("bake: warmup %d, image %d, release %d: %d requests", warm, imaged-warm, total-imaged, total)
	const budget = 120
	if total > budget {
		t.Fatalf("one bake spent %d requests, budget %d", total, budget)
	}
	if err := w.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
}
