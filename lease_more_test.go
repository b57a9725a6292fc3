package crabbox_test

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
)

func TestZeroLeaseAndNilValuesDoNotPanic(t *testing.T) {
	ctx := context.Background()
	var l crabbox.Lease
	require.NoError(t, json.Unmarshal([]byte(`{"id":"cbx_0123456789ab","machine_id":"m-1"}`), &l))
	_, err := l.Run(ctx, "true")
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	_, err = l.Screenshot(ctx)
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	assert.ErrorIs(t, l.Touch(ctx), crabbox.ErrInvalidArgument)
	assert.ErrorIs(t, l.Extend(ctx, time.Hour), crabbox.ErrInvalidArgument)
	assert.ErrorIs(t, l.Release(ctx), crabbox.ErrInvalidArgument)
	assert.NoError(t, l.Close())
	var nl *crabbox.Lease
	_, err = nl.Run(ctx, "true")
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	assert.Equal(t, "command failed", (&crabbox.RunError{}).Error())
}

// fakeShutdownCloud reports a provider that terminates machines on
// shutdown, so Extend takes the path that reschedules the box's shutdown.
type fakeShutdownCloud struct{ *crabboxtest.Cloud }

func (f fakeShutdownCloud) Info() provider.Info {
	i := f.Cloud.Info()
	i.ShutdownTerminates = true
	return i
}

// The machines look like real boxes to the SDK (no FSRoot), as emulated
// AWS boxes do; only the box's own environment says it is emulated.
func (f fakeShutdownCloud) CreateMachine(ctx context.Context, req provider.CreateMachineRequest) (*provider.Machine, error) {
	m, err := f.Cloud.CreateMachine(ctx, req)
	if m != nil {
		m.FSRoot = ""
	}
	return m, err
}

func (f fakeShutdownCloud) GetMachine(ctx context.Context, id string) (*provider.Machine, error) {
	m, err := f.Cloud.GetMachine(ctx, id)
	if m != nil {
		m.FSRoot = ""
	}
	return m, err
}

func TestExtendNeverTouchesAnEmulatedBoxsPowerState(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, fakeShutdownCloud{cloud})
	ctx := testCtx(t)
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer l.Release(context.Background())
	// Shadow sudo and shutdown on the box's PATH with stubs that record
	// being called: if the guard failed they would be reached (and never
	// the host's real ones).
	require.Empty(t, l.FSRoot())
	root, err := cloud.MachineDir(l.MachineID)
	require.NoError(t, err)
	log := filepath.Join(root, "power-calls")
	for _, name := range []string{"sudo", "shutdown"} {
		stub := "#!/bin/sh\necho " + name + " \"$@\" >> " + crabbox.ShellQuote(log) + "\n"
		require.NoError(t, os.WriteFile(filepath.Join(root, "usr/local/bin", name), []byte(stub), 0o755))
	}
	res, err := l.Run(ctx, "command -v sudo")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(root, "usr/local/bin/sudo")+"\n", res.StdoutTail, "the stub shadows sudo")
	require.NoError(t, l.Extend(ctx, time.Hour))
	_, err = os.Stat(log)
	assert.True(t, os.IsNotExist(err), "Extend ran a power command on an emulated box")
}

func TestSilentByDefault(t *testing.T) {
	cloud := crabboxtest.Start(t)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	saved := os.Stderr
	os.Stderr = w
	var out strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _, _ = io.Copy(&out, r) }()
	func() {
		defer func() { os.Stderr = saved }()
		c, err := crabbox.New(cloud, append(fast(), crabbox.WithStateDir(t.TempDir()))...)
		require.NoError(t, err)
		ctx := testCtx(t)
		l, err := c.Warmup(ctx)
		require.NoError(t, err)
		_, _ = l.Run(ctx, "exit 3")
		require.NoError(t, l.Release(ctx))
	}()
	w.Close()
	wg.Wait()
	assert.Empty(t, out.String(), "the SDK wrote to stderr without a logger")
}

func TestCreateImageAgainAdoptsTheImage(t *testing.T) {
	cloud := crabboxtest.Start(t, crabboxtest.WithImagePendingPolls(1000000))
	c := localClient(t, cloud)
	ctx := testCtx(t)
	src, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer src.Release(context.Background())
	name := imageName(t, "again")
	first, err := c.CreateImage(ctx, src.ID, name, crabbox.WithWait(100*time.Millisecond))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	n := cloud.ImageCount()
	second, err := c.CreateImage(ctx, src.Slug, name)
	require.NoError(t, err)
	assert.Equal(t, first.ID, second.ID, "the same lease and name adopt the image")
	assert.Equal(t, n, cloud.ImageCount(), "no second image")
}

func TestApplySkipsImagesPromotedSincePlanning(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	stale := bake(t, ctx, c, "stale")
	later := localClient(t, cloud, crabbox.WithClock(func() time.Time { return time.Now().Add(7 * 24 * time.Hour) }))
	plan, err := later.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	require.NoError(t, err)
	require.Equal(t, 1, plan.Deletes)
	// Between plan and apply, someone promotes it.
	_, err = c.Promote(ctx, stale.ID, crabbox.WithProof(proveImage(t, ctx, c, stale.ID)))
	require.NoError(t, err)
	res, err := plan.Apply(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{stale.ID}, res.Skipped)
	assert.Empty(t, res.Deleted)
	_, err = c.GetImage(ctx, stale.ID)
	assert.NoError(t, err)
}

func TestKnownGoodRetiresSupersededImages(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	_, err := c.Promote(ctx, a.ID, crabbox.WithProof(proveImage(t, ctx, c, a.ID)))
	require.NoError(t, err)
	_, err = c.Promote(ctx, b.ID, crabbox.WithProof(proveImage(t, ctx, c, b.ID)))
	require.NoError(t, err)
	old, err := c.GetImage(ctx, a.ID)
	require.NoError(t, err)
	assert.True(t, old.Protected, "the previous image stays protected until the new one is known-good")
	_, err = c.MarkKnownGood(ctx, b.ID, proveNormal(t, ctx, c, b.ID))
	require.NoError(t, err)
	old, err = c.GetImage(ctx, a.ID)
	require.NoError(t, err)
	assert.False(t, old.Protected, "superseded image keeps promotion's protection")
	assert.NotNil(t, old.Deprecated, "superseded image is not deprecated")
	cur, err := c.GetImage(ctx, b.ID)
	require.NoError(t, err)
	assert.True(t, cur.Protected)
	assert.Nil(t, cur.Deprecated)
}

// historyRacer promotes another image right after Rollback read the
// channel's history.
type historyRacer struct {
	*crabboxtest.Cloud
	once  sync.Once
	other string
}

func (r *historyRacer) ChannelHistory(ctx context.Context, ch string) ([]provider.ChannelEntry, error) {
	h, err := r.Cloud.ChannelHistory(ctx, ch)
	r.once.Do(func() {
		if _, serr := r.Cloud.SetChannel(ctx, provider.SetChannelRequest{Channel: ch, ImageID: r.other}); serr != nil {
			panic(serr)
		}
	})
	return h, err
}

func TestRollbackRacingAPromotionIsAConflict(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	b := bake(t, ctx, c, "beta")
	d := bake(t, ctx, c, "delta")
	_, err := c.Promote(ctx, a.ID, crabbox.WithProof(proveImage(t, ctx, c, a.ID)))
	require.NoError(t, err)
	_, err = c.MarkKnownGood(ctx, a.ID, proveNormal(t, ctx, c, a.ID))
	require.NoError(t, err)
	_, err = c.Promote(ctx, b.ID, crabbox.WithProof(proveImage(t, ctx, c, b.ID)))
	require.NoError(t, err)

	rc := localClient(t, &historyRacer{Cloud: cloud, other: d.ID})
	_, err = rc.Rollback(ctx, crabbox.DefaultChannel, "racing")
	require.ErrorIs(t, err, crabbox.ErrConflict)
	cur, err := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	assert.Equal(t, d.ID, cur.ID, "the concurrent promotion stands")
	img, err := c.GetImage(ctx, b.ID)
	require.NoError(t, err)
	assert.NotEqual(t, crabbox.StatusFailed, img.Status, "nothing was marked failed by the lost rollback")
}

// halfSet moves the channel, then reports a transient failure of its
// follow-up work (as the Hetzner driver does when mirroring labels fails).
type halfSet struct {
	*crabboxtest.Cloud
	calls atomic.Int32
}

func (h *halfSet) SetChannel(ctx context.Context, req provider.SetChannelRequest) (*provider.ChannelEntry, error) {
	h.calls.Add(1)
	e, err := h.Cloud.SetChannel(ctx, req)
	if err != nil {
		return nil, err
	}
	return e, provider.Errorf(provider.ErrUnavailable, "mirroring labels failed")
}

func TestPromoteWhoseChannelMovedIsNotRetried(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	a := bake(t, ctx, c, "alpha")
	rep := proveImage(t, ctx, c, a.ID)
	h := &halfSet{Cloud: cloud}
	hc := localClient(t, h)
	pr, err := hc.Promote(ctx, a.ID, crabbox.WithProof(rep))
	require.Error(t, err)
	assert.ErrorIs(t, err, crabbox.ErrUnavailable)
	assert.NotErrorIs(t, err, crabbox.ErrConflict, "a retried conditional set would report a conflict")
	require.NotNil(t, pr, "the promotion happened and is returned with the error")
	assert.Equal(t, a.ID, pr.Image.ID)
	assert.EqualValues(t, 1, h.calls.Load())
	cur, err := c.Promoted(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	assert.Equal(t, a.ID, cur.ID)
}

func TestScreenshotOfAnEmulatedBoxWithoutDisplay(t *testing.T) {
	// A local-cloud lease without a desktop must not capture the host's
	// :99 even when the host runs one.
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer l.Release(context.Background())
	_, err = l.Screenshot(ctx)
	assert.ErrorIs(t, err, crabbox.ErrNoDisplay)
}

type sweepingCloud struct {
	*crabboxtest.Cloud
	sweeps atomic.Int32
}

func (s *sweepingCloud) SweepOrphans(ctx context.Context) (int, error) {
	s.sweeps.Add(1)
	return 2, nil
}

func TestReapSweepsOrphans(t *testing.T) {
	cloud := crabboxtest.Start(t)
	sc := &sweepingCloud{Cloud: cloud}
	var swept atomic.Bool
	c := localClient(t, sc, crabbox.WithEvents(func(e crabbox.Event) {
		if e.Kind == crabbox.EventOrphansSwept {
			swept.Store(true)
		}
	}))
	_, err := c.Reap(testCtx(t))
	require.NoError(t, err)
	assert.EqualValues(t, 1, sc.sweeps.Load())
	assert.True(t, swept.Load())
}
