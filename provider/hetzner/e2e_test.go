// End-to-end tests through the crabbox client on the hcloud fake.

package hetzner_test

// End-to-end tests: the portable crabbox.Client drives the Hetzner driver
// against the fake Hetzner API, whose servers are real OpenSSH boxes on
// loopback (sshbox). Nothing here dials anything but loopback: the fake's
// public addresses are routed by fake.Dial.

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake/sshbox"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

type world struct {
	*env
	boxes *sshbox.Boxes
	c     *crabbox.Client
}

func newWorld(t *testing.T, fo hcloudfake.Options, opts ...hetzner.Option) *world {
	t.Helper()
	boxes := sshbox.New(t)
	e := newEnv(t, boxes.Options(fo), 2, opts...)
	c, err := crabbox.New(e.d,
		crabbox.WithStateDir(t.TempDir()),
		crabbox.WithDialer(e.fake.Dial),
		crabbox.WithOperator("tester"),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(10*time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(10*time.Millisecond)),
	)
	if err != nil {
		t.Fatal(err)
	}
	return &world{env: e, boxes: boxes, c: c}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// bake leases a box from the current channel (or base), writes a marker,
// images it and releases the box.
func (w *world) bake(t *testing.T, ctx context.Context, marker, name string) *crabbox.Image {
	t.Helper()
	l, err := w.c.Warmup(ctx, crabbox.WithClass("small"))
	if err != nil {
		t.Fatalf("warmup for bake: %v", err)
	}
	defer l.Release(context.Background())
	if _, err := l.Run(ctx, `echo `+marker+` > "${CRABBOX_FS_ROOT:-}/work/crabbox/marker"`, crabbox.Strict()); err != nil {
		t.Fatalf("bake command: %v", err)
	}
	img, err := w.c.CreateImage(ctx, l.ID, name, crabbox.WithWait(time.Minute))
	if err != nil {
		t.Fatalf("create image: %v", err)
	}
	if img.State != string(provider.ImageAvailable) || !img.Owned || img.Status != crabbox.StatusCandidate {
		t.Fatalf("image = %+v", img)
	}
	return img
}

// smoke leases a box from an image and checks the marker.
func (w *world) smoke(t *testing.T, ctx context.Context, imageID, marker string) *crabbox.SmokeReport {
	t.Helper()
	l, err := w.c.Warmup(ctx, crabbox.WithClass("small"), crabbox.WithImage(imageID))
	if err != nil {
		t.Fatalf("warmup from %s: %v", imageID, err)
	}
	defer l.Release(context.Background())
	rep, err := crabbox.Smoke(ctx, l, append(crabbox.CandidateSmoke(crabbox.CheckSetOptions{Tools: []string{"sh"}}),
		crabbox.FileExists("/work/crabbox/marker"),
		crabbox.CommandSucceeds("marker", `cat "${CRABBOX_FS_ROOT:-}/work/crabbox/marker"`, crabbox.OutputContains(marker)),
	))
	if err != nil {
		t.Fatalf("smoke of %s: %v (%+v)", imageID, err, rep)
	}
	return rep
}

func TestRunbookEndToEnd(t *testing.T) {
	w := newWorld(t, hcloudfake.Options{ImageSizeGB: 2})
	ctx := ctxFor(t, 3*time.Minute)

	// 1. A lease on the base image runs commands as the crabbox user.
	l, err := w.c.Warmup(ctx, crabbox.WithClass("small"))
	if err != nil {
		t.Fatal(err)
	}
	if l.ImageSource != crabbox.ImageBase || l.MachineType != "cx32" || !strings.HasPrefix(l.SSHAddr, "203.0.113.") {
		t.Fatalf("lease = %+v", l)
	}
	res, err := l.Run(ctx, "whoami")
	if err != nil || strings.TrimSpace(res.StdoutTail) != "crabbox" {
		t.Fatalf("whoami = %+v, %v", res, err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if st := w.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
		t.Fatalf("release left %+v", st)
	}

	// 2. Bake, smoke, promote with proof, mark known-good.
	img1 := w.bake(t, ctx, "one", "openclaw-crabbox-linux-20260506-0235")
	if img1.SizeGiB != 2 || img1.SourceLease == "" {
		t.Fatalf("image 1 = %+v", img1)
	}
	rep1 := w.smoke(t, ctx, img1.ID, "one")
	if _, err := w.c.Promote(ctx, img1.ID); !errors.Is(err, crabbox.ErrNoProof) {
		t.Fatalf("promote without proof: %v", err)
	}
	p1, err := w.c.Promote(ctx, img1.ID, crabbox.WithProof(rep1))
	if err != nil {
		t.Fatal(err)
	}
	if p1.Version != 1 || p1.Channel != crabbox.DefaultChannel {
		t.Fatalf("promotion 1 = %+v", p1)
	}
	// Known-good needs a pass on a normal lease booted from the channel,
	// not the candidate's explicit boot.
	if _, err := w.c.MarkKnownGood(ctx, img1.ID, rep1); !errors.Is(err, crabbox.ErrNoProof) {
		t.Fatalf("known-good from an explicit boot: %v", err)
	}
	normal, err := w.c.Warmup(ctx, crabbox.WithClass("small"))
	if err != nil {
		t.Fatal(err)
	}
	repN, err := crabbox.Smoke(ctx, normal, crabbox.PromotedSmoke(crabbox.CheckSetOptions{Tools: []string{"sh"}}))
	if err != nil || normal.ImageID != img1.ID || normal.ImageSource != crabbox.ImagePromoted {
		t.Fatalf("normal lease %s (%s): %v", normal.ImageID, normal.ImageSource, err)
	}
	if err := normal.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.c.MarkKnownGood(ctx, img1.ID, repN); err != nil {
		t.Fatal(err)
	}
	got, err := w.c.Promoted(ctx, crabbox.DefaultChannel)
	if err != nil || got.ID != img1.ID || !got.Protected {
		t.Fatalf("promoted = %+v, %v", got, err)
	}

	// 3. A lease from the channel boots the promoted image; bake #2 on it.
	img2 := w.bake(t, ctx, "two", "openclaw-crabbox-linux-20260506-0300")
	rep2 := w.smoke(t, ctx, img2.ID, "two")
	p2, err := w.c.Promote(ctx, img2.ID, crabbox.WithProof(rep2))
	if err != nil || p2.Version != 2 || p2.Previous != img1.ID {
		t.Fatalf("promotion 2 = %+v, %v", p2, err)
	}

	// 4. Roll back: the channel points at image 1 again, image 2 is failed
	// and loses its protection; the history keeps every step.
	rb, err := w.c.Rollback(ctx, crabbox.DefaultChannel, "bad build")
	if err != nil || rb.Image.ID != img1.ID || rb.Version != 3 {
		t.Fatalf("rollback = %+v, %v", rb, err)
	}
	hist, err := w.c.ChannelHistory(ctx, crabbox.DefaultChannel)
	if err != nil || len(hist) != 3 || hist[0].ImageID != img1.ID || hist[1].ImageID != img2.ID || hist[2].ImageID != img1.ID {
		t.Fatalf("history = %+v, %v", hist, err)
	}
	im2, err := w.c.GetImage(ctx, img2.ID)
	if err != nil || im2.Status != crabbox.StatusFailed || im2.Protected {
		t.Fatalf("image 2 after rollback = %+v, %v", im2, err)
	}
	// A fresh lease from the channel gets image 1's disk.
	l, err = w.c.Warmup(ctx, crabbox.WithClass("small"))
	if err != nil {
		t.Fatal(err)
	}
	if l.ImageID != img1.ID || l.ImageSource != crabbox.ImagePromoted {
		t.Fatalf("lease after rollback boots %s (%s), want %s", l.ImageID, l.ImageSource, img1.ID)
	}
	res, err = l.Run(ctx, `cat "${CRABBOX_FS_ROOT:-}/work/crabbox/marker"`)
	if err != nil || strings.TrimSpace(res.StdoutTail) != "one" {
		t.Fatalf("marker = %+v, %v", res, err)
	}
	_ = l.Release(ctx)

	// 5. Cleanup keeps the promoted image and the failed one (inspection
	// period); a stale candidate and a foreign snapshot are handled by policy.
	plan, err := w.c.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range plan.Items {
		if it.Image.ID == img1.ID && it.Action != crabbox.ActionKeep {
			t.Fatalf("cleanup would delete the promoted image: %+v", it)
		}
	}
	if _, err := plan.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.d.GetImage(ctx, img1.ID); err != nil {
		t.Fatalf("promoted image gone after cleanup: %v", err)
	}

	// Nothing but images and channel records is left: no servers, no lease keys.
	st := w.fake.State()
	if st.Servers != 0 || st.Boxes != 0 {
		t.Fatalf("servers left: %+v", st)
	}
	for _, k := range w.fake.SSHKeys() {
		if k.Labels[hetzner.LabelKind] != "channel-entry" {
			t.Fatalf("non-channel SSH key left: %+v", k)
		}
	}
}

func TestCleanupReclaimsUnpromotedSnapshots(t *testing.T) {
	now := time.Now()
	w := newWorld(t, hcloudfake.Options{ImageSizeGB: 1.5})
	ctx := ctxFor(t, 2*time.Minute)
	keep := w.bake(t, ctx, "keep", "openclaw-crabbox-linux-20260506-0100")
	rep := w.smoke(t, ctx, keep.ID, "keep")
	if _, err := w.c.Promote(ctx, keep.ID, crabbox.WithProof(rep)); err != nil {
		t.Fatal(err)
	}
	stale := w.bake(t, ctx, "stale", "openclaw-crabbox-linux-20260506-0200")
	// A foreign snapshot (not created by crabbox) must never be touched.
	hres, _, err := w.client.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "foreign",
		ServerType: &hcloud.ServerType{Name: "cx22"}, Image: &hcloud.Image{Name: "ubuntu-24.04"}})
	if err != nil {
		t.Fatal(err)
	}
	_ = w.client.Action.WaitFor(ctx, hres.Action)
	fimg, _, err := w.client.Server.CreateImage(ctx, hres.Server, &hcloud.ServerCreateImageOpts{Type: hcloud.ImageTypeSnapshot})
	if err != nil {
		t.Fatal(err)
	}
	_ = w.client.Action.WaitFor(ctx, fimg.Action)

	// Plan as of four days later: the never-promoted candidate is stale.
	c2, err := crabbox.New(w.d, crabbox.WithStateDir(t.TempDir()), crabbox.WithDialer(w.fake.Dial),
		crabbox.WithClock(func() time.Time { return now.Add(96 * time.Hour) }))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := c2.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	decided := map[string]string{}
	for _, it := range plan.Items {
		decided[it.Image.ID] = it.Action
	}
	if decided[keep.ID] != crabbox.ActionKeep || decided[stale.ID] != crabbox.ActionDelete {
		t.Fatalf("plan = %+v", plan.Items)
	}
	if a, ok := decided[itoa(fimg.Image.ID)]; ok && a != crabbox.ActionKeep {
		t.Fatalf("plan would delete the foreign snapshot: %+v", plan.Items)
	}
	if plan.GiBReclaimed != 1.5 {
		t.Fatalf("GiB reclaimed = %v, want 1.5 (image_size of the stale snapshot)", plan.GiBReclaimed)
	}
	if _, err := plan.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.d.GetImage(ctx, stale.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("stale image after cleanup: %v", err)
	}
	if _, err := w.d.GetImage(ctx, itoa(fimg.Image.ID)); err != nil {
		t.Fatalf("foreign snapshot after cleanup: %v", err)
	}
}

func itoa(n int64) string {
	b := []byte{}
	if n == 0 {
		return "0"
	}
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

func TestWarmupFallsBackOnCapacity(t *testing.T) {
	w := newWorld(t, hcloudfake.Options{})
	ctx := ctxFor(t, time.Minute)
	w.fake.InjectFault(hcloudfake.Fault{ServerType: "cx32", Code: "resource_unavailable"})
	l, err := w.c.Warmup(ctx, crabbox.WithClass("small"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.Background())
	if l.MachineType != "cpx21" {
		t.Fatalf("machine type = %q, want the class's second type cpx21", l.MachineType)
	}
	if st := w.fake.State(); st.Servers != 1 || st.SSHKeys != 1 {
		t.Fatalf("state = %+v: the failed first type must leave nothing", st)
	}
}

// A project limit is not the type's: Warmup stops with ErrQuota and
// tries no other type.
func TestWarmupStopsOnQuota(t *testing.T) {
	w := newWorld(t, hcloudfake.Options{})
	ctx := ctxFor(t, time.Minute)
	w.fake.InjectFault(hcloudfake.Fault{ServerType: "cx32", Code: "resource_limit_exceeded"})
	_, err := w.c.Warmup(ctx, crabbox.WithClass("small"))
	if !errors.Is(err, crabbox.ErrQuota) || errors.Is(err, crabbox.ErrCapacity) {
		t.Fatalf("Warmup = %v, want ErrQuota and not ErrCapacity", err)
	}
	if st := w.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
		t.Fatalf("state = %+v: the failed warmup must leave nothing", st)
	}
}

func TestCancelledWarmupLeavesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fo hcloudfake.Options
	fo.AfterRequest = func(r *http.Request, status int) {
		if r.Method == "POST" && r.URL.Path == "/servers" {
			cancel()
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
	w := newWorld(t, fo)
	l, err := w.c.Warmup(ctx, crabbox.WithClass("small"))
	if err == nil {
		l.Release(context.Background())
		t.Fatal("warmup succeeded despite the cancellation")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if st := w.fake.State(); st.Servers != 0 || st.SSHKeys != 0 || st.Boxes != 0 {
		t.Fatalf("cancelled warmup left %+v", st)
	}
}

func TestCancelledWarmupWhileBootingLeavesNothing(t *testing.T) {
	// Cancel once the server exists and the SDK polls it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	var fo hcloudfake.Options
	fo.BeforeRequest = func(r *http.Request) {
		if r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/servers/") {
			once.Do(cancel)
		}
	}
	w := newWorld(t, fo)
	if _, err := w.c.Warmup(ctx, crabbox.WithClass("small")); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if st := w.fake.State(); st.Servers != 0 || st.SSHKeys != 0 || st.Boxes != 0 {
		t.Fatalf("cancelled warmup left %+v", st)
	}
}

func TestCancelledCreateImageLeavesNothing(t *testing.T) {
	w := newWorld(t, hcloudfake.Options{ActionSteps: 50})
	ctx := ctxFor(t, time.Minute)
	l, err := w.c.Warmup(ctx, crabbox.WithClass("small"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.Background())
	// Cancel while the SDK waits for the snapshot.
	ictx, cancel := context.WithCancel(ctx)
	var once sync.Once
	w.fakeBefore(func(r *http.Request) {
		if r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/images/") {
			once.Do(cancel)
		}
	})
	img, err := w.c.CreateImage(ictx, l.ID, "openclaw-crabbox-linux-20260506-0235", crabbox.WithWait(time.Minute))
	w.fakeBefore(nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	n := len(w.fake.Images())
	if n != 0 {
		// The SDK hands the image back so the caller can decide; it must
		// at least be reported.
		if img == nil || img.ID == "" {
			t.Fatalf("cancelled CreateImage left %d images and did not report them", n)
		}
		t.Logf("cancelled CreateImage kept image %s (handed back to the caller)", img.ID)
		if err := w.d.DeleteImage(context.Background(), img.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := w.fake.State(); st.Servers != 0 || st.Images != 0 || st.SSHKeys != 0 {
		t.Fatalf("left %+v", st)
	}
}

func TestPromotionRace(t *testing.T) {
	// Two operators promote different images from the same channel version
	// at the same moment. Documented result: exactly one promotion wins
	// (the one whose channel record Hetzner created first), the other fails
	// with ErrConflict, and the channel points at the winner.
	w := newWorld(t, hcloudfake.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	base := w.bake(t, ctx, "base", "openclaw-crabbox-linux-20260506-0000")
	if _, err := w.c.Promote(ctx, base.ID, crabbox.Force("seed the channel")); err != nil {
		t.Fatal(err)
	}
	a := w.bake(t, ctx, "a", "openclaw-crabbox-linux-20260506-0001")
	b := w.bake(t, ctx, "b", "openclaw-crabbox-linux-20260506-0002")

	var mu sync.Mutex
	var events []crabbox.Event
	rc, err := crabbox.New(w.d, crabbox.WithStateDir(t.TempDir()), crabbox.WithDialer(w.fake.Dial), crabbox.WithOperator("racer"),
		crabbox.WithEvents(func(ev crabbox.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }))
	if err != nil {
		t.Fatal(err)
	}

	w.fakeBefore(holdSSHKeyCreates(2))
	var wg sync.WaitGroup
	ids := []string{a.ID, b.ID}
	errs := make([]error, 2)
	prs := make([]*crabbox.Promotion, 2)
	for i := range ids {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			prs[i], errs[i] = rc.Promote(ctx, ids[i], crabbox.Force("race"))
		}(i)
	}
	wg.Wait()
	w.fakeBefore(nil)
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatal("both promotions won")
			}
			winner = i
		case !errors.Is(err, crabbox.ErrConflict):
			t.Fatalf("losing promotion: %v, want ErrConflict", err)
		}
	}
	if winner < 0 {
		t.Fatalf("no promotion won: %v", errs)
	}
	got, err := w.c.Promoted(ctx, crabbox.DefaultChannel)
	if err != nil || got.ID != ids[winner] {
		t.Fatalf("promoted = %+v, %v; want %s", got, err, ids[winner])
	}
	hist, _ := w.c.ChannelHistory(ctx, crabbox.DefaultChannel)
	if len(hist) != 2 {
		t.Fatalf("history = %+v, want seed + winner", hist)
	}
	loser, err := w.c.GetImage(ctx, ids[1-winner])
	// The loser keeps the protection its call turned on before writing
	// (lifting it would race a cleanup against a promotion elsewhere).
	if err != nil || !loser.Protected {
		t.Fatalf("losing image = %+v, %v: it must keep the protection its call gave", loser, err)
	}
	// The losing call has no side effects: ErrConflict naming the winner,
	// no Promotion, its image's labels untouched (no channel mirror, no
	// status time), no promoted event.
	if lerr := errs[1-winner]; !strings.Contains(lerr.Error(), ids[winner]) {
		t.Errorf("losing Promote = %v; want the conflict to name the winner %s", lerr, ids[winner])
	}
	if prs[1-winner] != nil {
		t.Errorf("losing Promote returned %+v; want nil", prs[1-winner])
	}
	was := a
	if winner == 0 {
		was = b
	}
	if !maps.Equal(loser.Labels, was.Labels) {
		t.Errorf("losing image's labels = %v; want them unchanged, %v", loser.Labels, was.Labels)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, ev := range events {
		if ev.Kind == crabbox.EventPromoted && ev.State == loser.ID {
			t.Errorf("promoted event for the losing image: %+v", ev)
		}
	}
}

func TestReattachAndReap(t *testing.T) {
	w := newWorld(t, hcloudfake.Options{})
	ctx := ctxFor(t, time.Minute)
	state := t.TempDir()
	c1, err := crabbox.New(w.d, crabbox.WithStateDir(state), crabbox.WithDialer(w.fake.Dial),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(10*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	l, err := c1.Warmup(ctx, crabbox.WithClass("tiny"), crabbox.WithTTL(time.Hour), crabbox.WithIdleTimeout(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close()

	// Another process re-attaches by slug through the label selector.
	c2, err := crabbox.New(w.d, crabbox.WithStateDir(state), crabbox.WithDialer(w.fake.Dial),
		crabbox.WithClock(func() time.Time { return time.Now().Add(2 * time.Hour) }))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c2.Lease(ctx, l.Slug)
	if err != nil || again.ID != l.ID || again.MachineID != l.MachineID {
		t.Fatalf("reattach = %+v, %v", again, err)
	}
	res, err := again.Run(ctx, "echo reattached")
	if err != nil || strings.TrimSpace(res.StdoutTail) != "reattached" {
		t.Fatalf("run after reattach = %+v, %v", res, err)
	}
	_ = again.Close()

	// Two hours later the lease is past its expiry: Reap releases it.
	reaped, err := c2.Reap(ctx)
	if err != nil || len(reaped) != 1 || reaped[0].ID != l.ID {
		t.Fatalf("reap = %+v, %v", reaped, err)
	}
	if st := w.fake.State(); st.Servers != 0 || st.SSHKeys != 0 || st.Boxes != 0 {
		t.Fatalf("reap left %+v", st)
	}
}
