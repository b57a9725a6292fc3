// Tests of lease.go: Warmup, the lease options, Touch and Extend, a zero Lease.

package crabbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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

// A quota error is about the account, not the type: every type of the
// class counts against the same limit, so Warmup neither falls back nor
// retries and says quota, not capacity.
func TestWarmupQuotaDoesNotFallBack(t *testing.T) {
	cloud := crabboxtest.Start(t)
	var fallbacks atomic.Int32
	c := localClient(t, cloud, crabbox.WithEvents(func(e crabbox.Event) {
		if e.Kind == crabbox.EventTypeFallback {
			fallbacks.Add(1)
		}
	}))
	restore, err := cloud.InjectFault("CreateMachine", "quota")
	require.NoError(t, err)
	defer restore()
	_, err = c.Warmup(testCtx(t))
	require.Error(t, err)
	assert.ErrorIs(t, err, crabbox.ErrQuota)
	assert.NotErrorIs(t, err, crabbox.ErrCapacity)
	assert.Zero(t, fallbacks.Load(), "no fallback to a type under the same limit")
	assert.Zero(t, cloud.MachineCount())
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

func TestArchAndClasses(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	l, err := c.Warmup(ctx, crabbox.WithArch("arm64"), crabbox.WithClass(crabbox.ClassTiny))
	require.NoError(t, err)
	defer l.Release(context.Background())
	types, err := cloud.MachineTypes(crabbox.ClassTiny, "arm64")
	require.NoError(t, err)
	assert.Equal(t, types[0], l.MachineType, "arm64 picks the class's arm64 types")
	_, err = c.Warmup(ctx, crabbox.WithArch("x86"))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)

	cl := crabbox.Classes()
	require.Equal(t, []string{"tiny", "small", "standard", "fast", "large", "beast"}, cl)
	cl[0] = "changed"
	assert.Equal(t, "tiny", crabbox.Classes()[0], "Classes returns a copy")
}

func TestTouchAndExtend(t *testing.T) {
	cloud := crabboxtest.Start(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	c := localClient(t, cloud, crabbox.WithClock(clock))
	ctx := testCtx(t)
	l, err := c.Warmup(ctx, crabbox.WithTTL(time.Hour), crabbox.WithIdleTimeout(10*time.Minute))
	require.NoError(t, err)
	defer l.Release(context.Background())
	first := l.Expires

	now.Add(int64(5 * time.Minute))
	require.NoError(t, l.Touch(ctx))
	assert.Equal(t, first.Add(5*time.Minute), l.Expires, "touch moves the idle expiry")

	// Near the TTL the idle expiry is capped by it; Extend lifts the cap.
	now.Add(int64(54 * time.Minute))
	require.NoError(t, l.Touch(ctx))
	assert.Equal(t, l.Created.Add(time.Hour), l.Expires)
	require.NoError(t, l.Extend(ctx, time.Hour))
	assert.Equal(t, 2*time.Hour, l.TTL)
	assert.Equal(t, clock().UTC().Truncate(time.Second).Add(10*time.Minute), l.Expires)
	m, err := cloud.GetMachine(ctx, l.MachineID)
	require.NoError(t, err)
	assert.Equal(t, "7200", m.Labels[crabbox.LabelTTL])

	assert.ErrorIs(t, l.Extend(ctx, 0), crabbox.ErrInvalidArgument)
	now.Add(int64(3 * time.Hour))
	assert.ErrorIs(t, l.Touch(ctx), crabbox.ErrExpired)
}

// TestLeaseJSONDurationsInSeconds: a lease's JSON has its TTL and idle
// timeout in float seconds, like every duration the SDK writes, reads back
// to the same lease, and a record written by an earlier version (the
// nanosecond fields) still reads, and its lease re-attaches from the state
// dir.
func TestLeaseJSONDurationsInSeconds(t *testing.T) {
	cloud, err := crabboxtest.New()
	require.NoError(t, err)
	t.Cleanup(func() { _ = cloud.Close() })
	state := t.TempDir()
	c := localClient(t, cloud, crabbox.WithStateDir(state))
	ctx := testCtx(t)
	l, err := c.Warmup(ctx, crabbox.WithTTL(90*time.Minute), crabbox.WithIdleTimeout((25*time.Minute + 500*time.Millisecond)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Release(ctx) })

	b, err := json.Marshal(l)
	require.NoError(t, err)
	var fields map[string]any
	require.NoError(t, json.Unmarshal(b, &fields))
	assert.Equal(t, 5400.0, fields["ttl_seconds"], "%s", b)
	assert.Equal(t, 1500.5, fields["idle_timeout_seconds"], "%s", b)
	assert.NotContains(t, fields, "ttl_ns")
	assert.NotContains(t, fields, "idle_timeout_ns")
	var back crabbox.Lease
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, l.ID, back.ID)
	assert.Equal(t, 90*time.Minute, back.TTL)
	assert.Equal(t, (25*time.Minute + 500*time.Millisecond), back.IdleTimeout)

	// What the previous version wrote for this lease.
	old := fmt.Sprintf(`{"id":%q,"slug":%q,"provider":"local","machine_id":%q,"image_id":%q,"ttl_ns":%d,"idle_timeout_ns":%d}`,
		l.ID, l.Slug, l.MachineID, l.ImageID, int64(90*time.Minute), int64((25*time.Minute + 500*time.Millisecond)))
	var prev crabbox.Lease
	require.NoError(t, json.Unmarshal([]byte(old), &prev))
	assert.Equal(t, 90*time.Minute, prev.TTL)
	assert.Equal(t, (25*time.Minute + 500*time.Millisecond), prev.IdleTimeout)
	again, err := localClient(t, cloud, crabbox.WithStateDir(state)).Lease(ctx, prev.ID)
	require.NoError(t, err)
	defer again.Close()
	_, err = again.Run(ctx, "true")
	require.NoError(t, err)
}
