// End-to-end tests through the crabbox client on moto: capacity fallback, cleanup, box death.

package awsec2_test

import (
	"context"
	"strings"
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/awsbox"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

// A type without capacity makes the SDK fall back to the class's next type;
// the failed attempt leaves no key pair or instance.
func TestWarmupFallsBackOnCapacity(t *testing.T) {
	e := newEnv(t, awsec2.WithMachineTypes("small", "amd64", noCapacity, "t3.medium"))
	c, _ := newClient(t, e)
	ctx := t.Context()
	l, err := c.Warmup(ctx, crabbox.WithClass("small"), crabbox.WithTTL(time.Hour))
	if err != nil {
		t.Fatalf("Warmup: %v", err)
	}
	if l.MachineType != "t3.medium" {
		t.Errorf("lease type = %s, want the fallback t3.medium", l.MachineType)
	}
	if n := e.faults.Calls("RunInstances"); n != 2 {
		t.Errorf("RunInstances calls = %d, want 2", n)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

// The cleanup plan keeps an image a running box still uses (found with
// DescribeImageReferences) and deletes an old unused candidate with its
// snapshot; a copy to another region carries the labels.
func TestCleanupKeepsImagesInUse(t *testing.T) {
	e := newEnv(t)
	c, _ := newClient(t, e)
	ctx := t.Context()
	src, err := c.Warmup(ctx, crabbox.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	used, err := c.CreateImage(ctx, src.ID, imageName(t, "used", now), crabbox.WithWait(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	unused, err := c.CreateImage(ctx, src.ID, imageName(t, "unused", now), crabbox.WithWait(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Release(ctx); err != nil {
		t.Fatal(err)
	}
	user, err := c.Warmup(ctx, crabbox.WithImage(used.ID), crabbox.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}

	cp, err := c.CopyImage(ctx, used.ID, "eu-west-1")
	if err != nil {
		t.Fatalf("CopyImage: %v", err)
	}
	if cp.Labels["crabbox-source-lease"] != src.ID {
		t.Errorf("copy labels = %v", cp.Labels)
	}

	// Four days later, both candidates are past the default max age.
	later, err := crabbox.New(e.d, crabbox.WithDialer(awsbox.New(t, e.ec2).Dial), crabbox.WithStateDir(t.TempDir()),
		crabbox.WithClock(func() time.Time { return time.Now().Add(96 * time.Hour) }),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(10*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := later.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	if err != nil {
		t.Fatalf("PlanCleanup: %v", err)
	}
	actions := map[string]crabbox.CleanupItem{}
	for _, it := range plan.Items {
		actions[it.Image.ID] = it
	}
	if it := actions[used.ID]; it.Action != crabbox.ActionKeep || !strings.Contains(it.Reason, user.MachineID) {
		t.Errorf("in-use image: %+v, want keep because %s uses it", it, user.MachineID)
	}
	if it := actions[unused.ID]; it.Action != crabbox.ActionDelete {
		t.Errorf("old unused candidate: %+v, want delete", it)
	}
	res, err := plan.Apply(ctx)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(res.Deleted) != 1 || res.Deleted[0] != unused.ID {
		t.Errorf("deleted %v, want [%s]", res.Deleted, unused.ID)
	}
	if err := user.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteImage(ctx, used.ID); err != nil {
		t.Fatal(err)
	}
	eud, err := newRecordedDriver(e.cfg, awsec2.WithEndpoint(motoSrv.Endpoint), awsec2.WithRegion("eu-west-1"),
		awsec2.WithCleanupBackoff(time.Millisecond, 5*time.Millisecond, 6))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		_, _ = eud.GetImage(context.Background(), cp.ID)
	}
	if err := eud.DeleteImage(ctx, cp.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean("us-east-1", "eu-west-1")
}

// A box that dies under a lease: commands fail instead of hanging, and the
// release still cleans up in moto.
func TestBoxDeathFailsCommands(t *testing.T) {
	e := newEnv(t)
	c, emu := newClient(t, e)
	ctx := t.Context()
	l, err := c.Warmup(ctx, crabbox.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Run(ctx, "true"); err != nil {
		t.Fatal(err)
	}
	if err := emu.Kill(l.MachineID); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute) // a bound, not an assertion
	defer cancel()
	if _, err := l.Run(rctx, "true"); err == nil {
		t.Fatal("Run on a dead box succeeded")
	} else if rctx.Err() != nil {
		t.Fatalf("Run on a dead box hung until the bound: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}
