package crabbox_test

// Runbook flows through the portable API on the embedded local cloud:
// warmup, type fallback, cancellation, image creation and its failures,
// promotion proof, concurrent promotion, rollback, cleanup.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

func fast() []crabbox.Option {
	return []crabbox.Option{
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(10 * time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(10 * time.Millisecond)),
	}
}

func localClient(t *testing.T, drv provider.Driver, opts ...crabbox.Option) *crabbox.Client {
	t.Helper()
	c, err := crabbox.New(drv, append(append(fast(), crabbox.WithStateDir(t.TempDir()), crabbox.WithOperator("tester")), opts...)...)
	require.NoError(t, err)
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func imageName(t *testing.T, purpose string) string {
	n, err := crabbox.NewImageName("crabbox", "test", purpose, time.Now())
	require.NoError(t, err)
	return n.String()
}

// smokeOK runs a minimal passing smoke on a lease.
func smokeOK(t *testing.T, ctx context.Context, l *crabbox.Lease) *crabbox.SmokeReport {
	t.Helper()
	rep, err := crabbox.Smoke(ctx, l, []crabbox.SmokeCheck{crabbox.CommandExists("sh"), crabbox.WorkRootExists()})
	require.NoError(t, err)
	require.True(t, rep.OK())
	return rep
}

// bake warms a source lease, writes a marker file and images it.
func bake(t *testing.T, ctx context.Context, c *crabbox.Client, purpose string) *crabbox.Image {
	t.Helper()
	src, err := c.Warmup(ctx, crabbox.WithClass("small"))
	require.NoError(t, err)
	defer src.Release(context.Background())
	_, err = src.Run(ctx, `echo `+purpose+` > "${CRABBOX_FS_ROOT:-}/etc-marker"`)
	require.NoError(t, err)
	img, err := c.CreateImage(ctx, src.ID, imageName(t, purpose), crabbox.WithPrepare(), crabbox.WithWait(time.Minute))
	require.NoError(t, err)
	return img
}

func proveImage(t *testing.T, ctx context.Context, c *crabbox.Client, imageID string) *crabbox.SmokeReport {
	t.Helper()
	l, err := c.Warmup(ctx, crabbox.WithImage(imageID), crabbox.WithClass("small"))
	require.NoError(t, err)
	defer l.Release(context.Background())
	assert.Equal(t, crabbox.ImageExplicit, l.ImageSource)
	return smokeOK(t, ctx, l)
}

// proveNormal smokes a normal lease (no image override) and checks it
// booted the promoted image want.
func proveNormal(t *testing.T, ctx context.Context, c *crabbox.Client, want string) *crabbox.SmokeReport {
	t.Helper()
	l, err := c.Warmup(ctx, crabbox.WithClass("small"))
	require.NoError(t, err)
	defer l.Release(context.Background())
	require.Equal(t, crabbox.ImagePromoted, l.ImageSource)
	require.Equal(t, want, l.ImageID)
	return smokeOK(t, ctx, l)
}

func TestWarmupLabelsKeysAndEvents(t *testing.T) {
	cloud := crabboxtest.Start(t)
	var mu sync.Mutex
	var events []crabbox.Event
	returned := atomic.Bool{}
	late := atomic.Bool{}
	c := localClient(t, cloud, crabbox.WithEvents(func(e crabbox.Event) {
		if returned.Load() {
			late.Store(true)
		}
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}))
	ctx := testCtx(t)
	l, err := c.Warmup(ctx, crabbox.WithClass("small"), crabbox.WithTTL(time.Hour), crabbox.WithIdleTimeout(10*time.Minute),
		crabbox.WithLabels(map[string]string{"team": "qa lane"}))
	returned.Store(true)
	require.NoError(t, err)
	defer l.Release(context.Background())
	assert.True(t, crabbox.ValidLeaseID(l.ID))
	assert.Equal(t, crabbox.LeaseSlug(l.ID), l.Slug)
	assert.Equal(t, crabbox.ImageBase, l.ImageSource)
	assert.Equal(t, crabboxtest.BaseImageID, l.ImageID)
	assert.WithinDuration(t, time.Now().Add(10*time.Minute), l.Expires, time.Minute)

	m, err := cloud.GetMachine(ctx, l.MachineID)
	require.NoError(t, err)
	for k, want := range map[string]string{
		crabbox.LabelManaged: "true", crabbox.LabelCreatedBy: "crabbox", crabbox.LabelLease: l.ID,
		crabbox.LabelSlug: l.Slug, crabbox.LabelClass: "small", crabbox.LabelOperator: "tester",
		crabbox.LabelTTL: "3600", crabbox.LabelIdle: "600", crabbox.LabelDesktop: "false",
		crabbox.LabelImage: crabboxtest.BaseImageID, crabbox.LabelImageSource: "base", crabbox.LabelState: "ready",
		"team": "qa-lane",
	} {
		assert.Equal(t, want, m.Labels[k], k)
	}
	for _, k := range []string{crabbox.LabelCreated, crabbox.LabelExpires} {
		assert.NotEmpty(t, m.Labels[k], k)
	}
	time.Sleep(50 * time.Millisecond)
	assert.False(t, late.Load(), "no event may arrive after Warmup returned")
	mu.Lock()
	kinds := map[crabbox.EventKind]bool{}
	for _, e := range events {
		kinds[e.Kind] = true
		assert.False(t, e.Time.IsZero())
	}
	mu.Unlock()
	assert.True(t, kinds[crabbox.EventLeaseCreating] && kinds[crabbox.EventLeaseCreated] && kinds[crabbox.EventLeaseReady], "%v", kinds)

	_, err = c.Warmup(ctx, crabbox.WithLabels(map[string]string{"crabbox-lease": "x"}))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	_, err = c.Warmup(ctx, crabbox.WithClass("huge"))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	_, err = c.Warmup(ctx, crabbox.WithTTL(time.Second))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	assert.Equal(t, 1, cloud.MachineCount(), "rejected options create nothing")
}

func TestWarmupTypeFallbackOnCapacity(t *testing.T) {
	cloud := crabboxtest.Start(t)
	var fallbacks atomic.Int32
	c := localClient(t, cloud, crabbox.WithEvents(func(e crabbox.Event) {
		if e.Kind == crabbox.EventTypeFallback {
			fallbacks.Add(1)
		}
	}))
	ctx := testCtx(t)
	types, err := cloud.MachineTypes("standard", "amd64")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(types), 2)
	cloud.SetCapacity(types[0], false)
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer l.Release(context.Background())
	assert.Equal(t, types[1], l.MachineType)
	assert.EqualValues(t, 1, fallbacks.Load())

	for _, typ := range types {
		cloud.SetCapacity(typ, false)
	}
	_, err = c.Warmup(ctx)
	require.Error(t, err)
	assert.ErrorIs(t, err, crabbox.ErrCapacity)
	assert.Equal(t, 1, cloud.MachineCount(), "no machine leaked by the failed warmup")

	// An explicit type disables fallback.
	cloud.SetCapacity(types[1], true)
	_, err = c.Warmup(ctx, crabbox.WithMachineType(types[0]))
	assert.ErrorIs(t, err, crabbox.ErrCapacity)
}

func TestWarmupCancelledAtEveryStepLeavesNothing(t *testing.T) {
	cloud := crabboxtest.Start(t, crabboxtest.WithBootDelay(300*time.Millisecond))
	state := t.TempDir()
	// Cancel on the n-th event: before creating, after creating, while
	// waiting for SSH.
	for _, at := range []crabbox.EventKind{crabbox.EventLeaseCreating, crabbox.EventLeaseCreated, crabbox.EventLeaseWaiting} {
		t.Run(string(at), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c, err := crabbox.New(cloud, append(fast(), crabbox.WithStateDir(state), crabbox.WithEvents(func(e crabbox.Event) {
				if e.Kind == at {
					cancel()
				}
			}))...)
			require.NoError(t, err)
			l, err := c.Warmup(ctx)
			require.Error(t, err)
			assert.Nil(t, l)
			assert.ErrorIs(t, err, context.Canceled)
			assert.Equal(t, 0, cloud.MachineCount(), "cancelled warmup leaked a machine")
			ls, _ := c.Leases(context.Background())
			assert.Empty(t, ls)
		})
	}
	entries, err := dirEntries(state)
	require.NoError(t, err)
	assert.Empty(t, entries, "cancelled warmups leave no keys behind")
}

func TestImageCreationFailuresKeepTheImageID(t *testing.T) {
	t.Run("failed state names the reason", func(t *testing.T) {
		cloud := crabboxtest.Start(t)
		c := localClient(t, cloud)
		ctx := testCtx(t)
		src, err := c.Warmup(ctx)
		require.NoError(t, err)
		defer src.Release(context.Background())
		cloud.FailNextImage("disk snapshot error (test)")
		img, err := c.CreateImage(ctx, src.Slug, imageName(t, "broken"), crabbox.WithWait(time.Minute))
		require.Error(t, err)
		require.NotNil(t, img, "the image is returned with the error")
		assert.NotEmpty(t, img.ID)
		assert.ErrorIs(t, err, crabbox.ErrImageFailed)
		var we *crabbox.WaitError
		require.ErrorAs(t, err, &we)
		assert.Equal(t, "failed", we.LastState)
		assert.Contains(t, err.Error(), "disk snapshot error (test)")
		// Not promotable even with a forged passing report.
		_, err = c.Promote(ctx, img.ID, crabbox.WithProof(&crabbox.SmokeReport{ImageID: img.ID, Passed: 1,
			Results: []crabbox.CheckResult{{Title: "x", Passed: true}}}))
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	})
	t.Run("timeout returns the pending image", func(t *testing.T) {
		cloud := crabboxtest.Start(t, crabboxtest.WithImagePendingPolls(1000000))
		c := localClient(t, cloud)
		ctx := testCtx(t)
		src, err := c.Warmup(ctx)
		require.NoError(t, err)
		defer src.Release(context.Background())
		img, err := c.CreateImage(ctx, src.ID, imageName(t, "slow"), crabbox.WithWait(200*time.Millisecond))
		require.Error(t, err)
		require.NotNil(t, img)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		var we *crabbox.WaitError
		require.ErrorAs(t, err, &we)
		assert.Equal(t, "pending", we.LastState)
		got, err := c.GetImage(ctx, img.ID)
		require.NoError(t, err, "the image id from the failed wait finds the image")
		assert.Equal(t, img.Name, got.Name)
	})
	t.Run("bad names are rejected before anything is made", func(t *testing.T) {
		cloud := crabboxtest.Start(t)
		c := localClient(t, cloud)
		ctx := testCtx(t)
		before := cloud.ImageCount()
		for _, name := range []string{"", "my image", "crabbox-test-x-2026-01-01"} {
			_, err := c.CreateImage(ctx, "cbx_000000000000", name)
			assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, name)
		}
		_, err := c.CreateImage(ctx, "cbx_000000000000", imageName(t, "ok"))
		assert.ErrorIs(t, err, crabbox.ErrNotFound, "unknown lease")
		assert.Equal(t, before, cloud.ImageCount())
	})
}

func TestPromoteRequiresProofOfThatImage(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	assert.Equal(t, crabbox.StatusCandidate, a.Status)
	assert.True(t, a.Owned)

	_, err := c.Promote(ctx, a.ID)
	assert.ErrorIs(t, err, crabbox.ErrNoProof)
	repB := proveImage(t, ctx, c, b.ID)
	_, err = c.Promote(ctx, a.ID, crabbox.WithProof(repB))
	assert.ErrorIs(t, err, crabbox.ErrNoProof, "proof of another image")

	// A failing report is no proof.
	l, err := c.Warmup(ctx, crabbox.WithImage(a.ID))
	require.NoError(t, err)
	bad, err := crabbox.Smoke(ctx, l, []crabbox.SmokeCheck{crabbox.CommandExists("definitely-not-installed-xyz")})
	require.ErrorIs(t, err, crabbox.ErrSmokeFailed)
	require.NoError(t, l.Release(ctx))
	_, err = c.Promote(ctx, a.ID, crabbox.WithProof(bad))
	assert.ErrorIs(t, err, crabbox.ErrNoProof)
	assert.ErrorIs(t, err, crabbox.ErrSmokeFailed)

	// Foreign images are refused even when forced.
	_, err = c.Promote(ctx, crabboxtest.BaseImageID, crabbox.Force("test"))
	assert.ErrorIs(t, err, crabbox.ErrNotOwned)
	_, err = c.Promoted(ctx, crabbox.DefaultChannel)
	assert.ErrorIs(t, err, crabbox.ErrNotFound, "nothing promoted yet")

	repA := proveImage(t, ctx, c, a.ID)
	pr, err := c.Promote(ctx, a.ID, crabbox.WithProof(repA))
	require.NoError(t, err)
	assert.Equal(t, "", pr.Previous)
	assert.True(t, pr.Image.Protected, "the promoted image is protected")
	got, err := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	assert.Equal(t, a.ID, got.ID)

	// A normal lease now boots the promoted image.
	n, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer n.Release(context.Background())
	assert.Equal(t, crabbox.ImagePromoted, n.ImageSource)
	assert.Equal(t, a.ID, n.ImageID)
	res, err := n.Run(ctx, `cat "${CRABBOX_FS_ROOT:-}/etc-marker"`)
	require.NoError(t, err)
	assert.Equal(t, "alpha\n", res.StdoutTail, "the lease runs the baked image's content")

	// Promoting again is idempotent.
	pr2, err := c.Promote(ctx, a.ID, crabbox.WithProof(repA))
	require.NoError(t, err)
	assert.Equal(t, pr.Version, pr2.Version)
}

// racingCloud promotes another image between Promote's read of the channel
// and its conditional write, as a concurrent operator would.
type racingCloud struct {
	*crabboxtest.Cloud
	once  sync.Once
	other string
}

func (r *racingCloud) CurrentChannel(ctx context.Context, ch string) (*provider.ChannelEntry, error) {
	e, err := r.Cloud.CurrentChannel(ctx, ch)
	r.once.Do(func() {
		_, serr := r.Cloud.SetChannel(ctx, provider.SetChannelRequest{Channel: ch, ImageID: r.other, Operator: "someone-else"})
		if serr != nil {
			panic(serr)
		}
	})
	return e, err
}

func TestConcurrentPromotionIsAConflict(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	repA := proveImage(t, ctx, c, a.ID)

	racer := &racingCloud{Cloud: cloud, other: b.ID}
	rc := localClient(t, racer)
	_, err := rc.Promote(ctx, a.ID, crabbox.WithProof(repA))
	require.Error(t, err)
	assert.ErrorIs(t, err, crabbox.ErrConflict)
	cur, err := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	assert.Equal(t, b.ID, cur.ID, "the concurrent promotion is not overwritten")
}

func TestRollbackAndKnownGood(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")

	_, err := c.Promote(ctx, a.ID, crabbox.WithProof(proveImage(t, ctx, c, a.ID)))
	require.NoError(t, err)
	_, err = c.Rollback(ctx, crabbox.DefaultChannel, "nothing earlier")
	assert.ErrorIs(t, err, crabbox.ErrNotFound)

	// Known-good needs a passing report of that image.
	_, err = c.MarkKnownGood(ctx, a.ID, nil)
	assert.ErrorIs(t, err, crabbox.ErrNoProof)
	_, err = c.MarkKnownGood(ctx, a.ID, proveImage(t, ctx, c, a.ID))
	assert.ErrorIs(t, err, crabbox.ErrNoProof, "an explicit boot of the candidate is no known-good proof")
	kg, err := c.MarkKnownGood(ctx, a.ID, proveNormal(t, ctx, c, a.ID))
	require.NoError(t, err)
	assert.Equal(t, crabbox.StatusKnownGood, kg.Status)

	pr, err := c.Promote(ctx, b.ID, crabbox.WithProof(proveImage(t, ctx, c, b.ID)))
	require.NoError(t, err)
	assert.Equal(t, a.ID, pr.Previous)

	rb, err := c.Rollback(ctx, crabbox.DefaultChannel, "qa lane failed")
	require.NoError(t, err)
	assert.Equal(t, a.ID, rb.Image.ID)
	assert.Greater(t, rb.Version, pr.Version)
	cur, err := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	assert.Equal(t, a.ID, cur.ID)
	failed, err := c.GetImage(ctx, b.ID)
	require.NoError(t, err, "the image rolled back from is kept")
	assert.Equal(t, crabbox.StatusFailed, failed.Status)
	assert.False(t, failed.Protected, "a failed image loses promotion protection so cleanup can remove it later")
	hist, err := c.ChannelHistory(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	require.Len(t, hist, 3)
	assert.Equal(t, []string{a.ID, b.ID, a.ID}, []string{hist[0].ImageID, hist[1].ImageID, hist[2].ImageID})
	_, err = c.Promote(ctx, b.ID, crabbox.WithProof(proveImage(t, ctx, c, b.ID)))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, "a failed image is not promoted again without force")
}

func TestCleanupApplyKeepsPromotedAndDeletesStale(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	stale := bake(t, ctx, c, "stale")
	_, err := c.Promote(ctx, a.ID, crabbox.WithProof(proveImage(t, ctx, c, a.ID)))
	require.NoError(t, err)
	before := cloud.ImageCount()

	// Today nothing is old enough.
	plan, err := c.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	require.NoError(t, err)
	assert.Equal(t, 0, plan.Deletes)

	// A week later the never-promoted candidate is stale.
	later := localClient(t, cloud, crabbox.WithClock(func() time.Time { return time.Now().Add(7 * 24 * time.Hour) }))
	plan, err = later.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	require.NoError(t, err)
	byID := map[string]crabbox.CleanupItem{}
	for _, it := range plan.Items {
		byID[it.Image.ID] = it
	}
	assert.Equal(t, crabbox.ActionDelete, byID[stale.ID].Action)
	assert.Equal(t, crabbox.ActionKeep, byID[a.ID].Action)
	assert.Equal(t, crabbox.ActionKeep, byID[crabboxtest.BaseImageID].Action)
	assert.Equal(t, 1, plan.SnapshotsFreed)
	b, err := json.Marshal(plan)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"action":"delete"`)

	res, err := plan.Apply(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{stale.ID}, res.Deleted)
	assert.Equal(t, before-1, cloud.ImageCount())
	_, err = c.GetImage(ctx, stale.ID)
	assert.ErrorIs(t, err, crabbox.ErrNotFound)
	_, err = c.GetImage(ctx, a.ID)
	assert.NoError(t, err)

	var zero crabbox.CleanupPlan
	_, err = zero.Apply(ctx)
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
}

func TestImageJSONRecord(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	img := bake(t, ctx, c, "record")
	b, err := json.Marshal(img)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{"id", "name", "provider", "region", "state", "source_lease", "created", "operator", "snapshots"} {
		assert.Contains(t, m, k)
	}
	assert.Equal(t, "tester", m["operator"])
	assert.Equal(t, "available", m["state"])
	assert.Len(t, m["snapshots"], 1)
}

func TestImagesUnsupportedOnExistingHosts(t *testing.T) {
	drv, err := sshhost.New([]sshhost.Host{{Addr: "127.0.0.1:1", User: "u", Signer: mustSigner(t), HostKey: mustSigner(t).PublicKey()}})
	require.NoError(t, err)
	c := localClient(t, drv)
	ctx := testCtx(t)
	_, err = c.Images(ctx)
	assert.ErrorIs(t, err, crabbox.ErrUnsupported)
	_, err = c.Promoted(ctx, "default")
	assert.ErrorIs(t, err, crabbox.ErrUnsupported)
	_, err = c.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	assert.ErrorIs(t, err, crabbox.ErrUnsupported)
	var oe *crabbox.OpError
	assert.True(t, errors.As(err, &oe))
}

func dirEntries(state string) ([]string, error) {
	es, err := os.ReadDir(filepath.Join(state, "leases"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out, err
}

func mustSigner(t *testing.T) ssh.Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	s, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	return s
}
