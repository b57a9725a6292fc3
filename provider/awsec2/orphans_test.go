// Tests of orphans.go: SweepOrphans.

package awsec2_test

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

// testClock is the driver's clock: real time plus an offset the test moves.
type testClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// sweepEnv is a moto env whose driver runs on a clock the test can move.
func sweepEnv(t *testing.T, opts ...awsec2.Option) (*env, *testClock) {
	t.Helper()
	clk := &testClock{}
	return newEnv(t, append([]awsec2.Option{awsec2.WithClock(clk.now)}, opts...)...), clk
}

// keyNames lists every key pair in moto.
func (e *env) keyNames() []string {
	e.t.Helper()
	out, err := e.ec2.DescribeKeyPairs(context.Background(), &ec2.DescribeKeyPairsInput{})
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, k := range out.KeyPairs {
		names = append(names, aws.ToString(k.KeyName))
	}
	sort.Strings(names)
	return names
}

func (e *env) hasKey(name string) bool {
	return slices.Contains(e.keyNames(), name)
}

// importKey imports a key pair behind the driver's back with tags.
func (e *env) importKey(name string, tags map[string]string) {
	e.t.Helper()
	in := &ec2.ImportKeyPairInput{KeyName: aws.String(name), PublicKeyMaterial: authorizedKey(e.t)}
	if len(tags) > 0 {
		ts := types.TagSpecification{ResourceType: types.ResourceTypeKeyPair}
		for k, v := range tags {
			ts.Tags = append(ts.Tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		in.TagSpecifications = []types.TagSpecification{ts}
	}
	if _, err := e.ec2.ImportKeyPair(context.Background(), in); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) deleteKeys(names ...string) {
	e.t.Helper()
	for _, n := range names {
		if _, err := e.ec2.DeleteKeyPair(context.Background(), &ec2.DeleteKeyPairInput{KeyName: aws.String(n)}); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) sweep(want int) {
	e.t.Helper()
	n, err := e.d.SweepOrphans(e.t.Context())
	if err != nil || n != want {
		e.t.Fatalf("SweepOrphans = %d, %v; want %d deleted", n, err, want)
	}
}

// terminateBehindBack terminates an instance with the raw client; with
// vanish, moto then stops describing it (as EC2 does an hour after
// termination).
func (e *env) terminateBehindBack(id string, vanish bool) {
	e.t.Helper()
	ctx := context.Background()
	if vanish {
		if _, err := e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id},
			Tags: []types.Tag{{Key: aws.String(moto.TagVanishOnTerminate), Value: aws.String("true")}}}); err != nil {
			e.t.Fatal(err)
		}
	}
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		e.t.Fatal(err)
	}
	out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("instance-id"), Values: []string{id}}}})
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, r := range out.Reservations {
		n += len(r.Instances)
	}
	if vanish && n != 0 {
		e.t.Fatalf("moto still describes %s after its termination with %s", id, moto.TagVanishOnTerminate)
	}
	if !vanish && n != 1 {
		e.t.Fatalf("moto describes %d instances %s after termination, want 1 (terminated)", n, id)
	}
}

// A machine that terminated behind the SDK's back leaves its key pair; once
// EC2 no longer describes the instance, DeleteMachine cannot find the key,
// and SweepOrphans deletes it once it is older than the grace. The same
// holds while the terminated instance is still described.
func TestSweepOrphansDeletesKeyOfGoneInstance(t *testing.T) {
	for _, vanish := range []bool{true, false} {
		name := "terminated"
		if vanish {
			name = "vanished"
		}
		t.Run(name, func(t *testing.T) {
			e, clk := sweepEnv(t)
			ctx := t.Context()
			m, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_0rphan000001"))
			if err != nil {
				t.Fatal(err)
			}
			e.terminateBehindBack(m.ID, vanish)
			if vanish {
				if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
					t.Fatal(err)
				}
				if !e.hasKey("crabbox-cbx_0rphan000001") {
					t.Fatal("DeleteMachine of a vanished instance found its key pair; the test no longer shows an orphan")
				}
			}
			e.sweep(0) // younger than the grace
			if !e.hasKey("crabbox-cbx_0rphan000001") {
				t.Fatal("SweepOrphans deleted a key pair younger than the grace")
			}
			clk.advance(awsec2.DefaultOrphanGrace + time.Minute)
			e.sweep(1)
			if keys := e.keyNames(); len(keys) != 0 {
				t.Errorf("key pairs after SweepOrphans = %v, want none", keys)
			}
			e.sweep(0)
			e.expectClean()
		})
	}
}

// A key pair a lease imported moments ago, whose instance does not exist
// yet, is kept until it is older than the grace (WithOrphanGrace).
func TestSweepOrphansKeepsYoungOrphanKey(t *testing.T) {
	e, clk := sweepEnv(t, awsec2.WithOrphanGrace(time.Hour))
	// As CreateMachine imports it, before RunInstances.
	e.importKey("crabbox-cbx_young0000001", map[string]string{
		awsec2.TagManaged: "true", awsec2.TagCreatedBy: "crabbox", awsec2.TagClientToken: "cbx_young0000001", "crabbox-lease": "cbx_young0000001"})
	e.sweep(0)
	clk.advance(awsec2.DefaultOrphanGrace + time.Minute) // older than the default, younger than the option
	e.sweep(0)
	if !e.hasKey("crabbox-cbx_young0000001") {
		t.Fatal("SweepOrphans deleted a key pair younger than its grace")
	}
	clk.advance(time.Hour)
	e.sweep(1)
	if keys := e.keyNames(); len(keys) != 0 {
		t.Errorf("key pairs after SweepOrphans = %v, want none", keys)
	}
	e.expectClean()
}

// The key pair of a live machine (running or stopped) is never swept, however
// old; an orphan next to it is.
func TestSweepOrphansKeepsKeyOfLiveInstance(t *testing.T) {
	e, clk := sweepEnv(t)
	ctx := t.Context()
	live, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_live00000001"))
	if err != nil {
		t.Fatal(err)
	}
	stopped, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_stop00000001"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{stopped.ID}}); err != nil {
		t.Fatal(err)
	}
	gone, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_gone00000001"))
	if err != nil {
		t.Fatal(err)
	}
	e.terminateBehindBack(gone.ID, true)
	clk.advance(24 * time.Hour)
	e.sweep(1)
	if got, want := e.keyNames(), []string{"crabbox-cbx_live00000001", "crabbox-cbx_stop00000001"}; !slices.Equal(got, want) {
		t.Errorf("key pairs after SweepOrphans = %v, want %v", got, want)
	}
	for _, id := range []string{live.ID, stopped.ID} {
		if err := e.d.DeleteMachine(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	e.expectClean()
}

// A key pair without crabbox's ownership tag is never touched, even with a
// crabbox-like name and no instance; an owned orphan in the same sweep is
// deleted.
func TestSweepOrphansNeverTouchesUntaggedKeys(t *testing.T) {
	e, clk := sweepEnv(t)
	e.importKey("crabbox-cbx_foreign00001", map[string]string{awsec2.TagClientToken: "cbx_foreign00001"})
	e.importKey("crabbox-cbx_notours0001", map[string]string{awsec2.TagManaged: "false"})
	e.importKey("deploy", nil)
	// Tagged crabbox=true, but not a name the driver gives its key pairs.
	e.importKey("ops-key", map[string]string{awsec2.TagManaged: "true"})
	e.importKey("crabbox-cbx_owned0000001", map[string]string{
		awsec2.TagManaged: "true", awsec2.TagCreatedBy: "crabbox", awsec2.TagClientToken: "cbx_owned0000001"})
	clk.advance(24 * time.Hour)
	e.sweep(1)
	want := []string{"crabbox-cbx_foreign00001", "crabbox-cbx_notours0001", "deploy", "ops-key"}
	if got := e.keyNames(); !slices.Equal(got, want) {
		t.Errorf("key pairs after SweepOrphans = %v, want %v", got, want)
	}
	e.deleteKeys(want...)
	e.expectClean()
}

// The instance is found by its crabbox-client-token tag as well as by its
// KeyName: a live instance whose KeyName differs (launched by an earlier
// attempt, or renamed key) still keeps the lease's key pair.
func TestSweepOrphansFindsInstanceByToken(t *testing.T) {
	e, clk := sweepEnv(t)
	ctx := t.Context()
	req := createReq(t, e, "cbx_bytoken000001")
	req.AuthorizedKey = nil // no key pair: the instance has no KeyName
	m, err := e.d.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	e.importKey("crabbox-cbx_bytoken000001", map[string]string{
		awsec2.TagManaged: "true", awsec2.TagCreatedBy: "crabbox", awsec2.TagClientToken: "cbx_bytoken000001"})
	e.importKey("crabbox-cbx_orphan0000002", map[string]string{
		awsec2.TagManaged: "true", awsec2.TagCreatedBy: "crabbox", awsec2.TagClientToken: "cbx_orphan0000002"})
	clk.advance(time.Hour)
	e.sweep(1)
	if got, want := e.keyNames(), []string{"crabbox-cbx_bytoken000001"}; !slices.Equal(got, want) {
		t.Errorf("key pairs after SweepOrphans = %v, want %v", got, want)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

// A failing listing is reported with its provider code and deletes nothing.
func TestSweepOrphansReportsErrors(t *testing.T) {
	e, clk := sweepEnv(t)
	e.importKey("crabbox-cbx_err000000001", map[string]string{
		awsec2.TagManaged: "true", awsec2.TagCreatedBy: "crabbox", awsec2.TagClientToken: "cbx_err000000001"})
	clk.advance(time.Hour)
	for _, action := range []string{"DescribeKeyPairs", "DescribeInstances", "DeleteKeyPair"} {
		e.faults.Add(moto.Fault{Action: action, Times: 1})
		n, err := e.d.SweepOrphans(t.Context())
		if n != 0 || !errors.Is(err, provider.ErrThrottled) {
			t.Errorf("SweepOrphans with %s throttled = %d, %v; want 0, ErrThrottled", action, n, err)
		}
		if !e.hasKey("crabbox-cbx_err000000001") {
			t.Fatalf("key pair gone after a failing sweep (%s)", action)
		}
	}
	e.sweep(1)
	e.expectClean()
}

func TestWithOrphanGraceAndClockValidate(t *testing.T) {
	if _, err := awsec2.NewFromClients(failingEC2{}, fakeSSM{}, awsec2.WithOrphanGrace(-time.Second)); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("negative grace err = %v", err)
	}
	// Zero would sweep the key of a lease between importing it and
	// launching: refused, as by every driver.
	if _, err := awsec2.NewFromClients(failingEC2{}, fakeSSM{}, awsec2.WithOrphanGrace(0)); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("zero grace err = %v", err)
	}
	for _, opt := range []awsec2.Option{
		awsec2.WithMachineTypes("custom", "amd64", "t3.small"),
		awsec2.WithMachineTypes("small", "x86_64", "t3.small"),
		awsec2.WithMachineTypes("small", "amd64"),
		awsec2.WithMachineTypes("small", "amd64", "t3.small", ""),
	} {
		if _, err := awsec2.NewFromClients(failingEC2{}, fakeSSM{}, opt); !errors.Is(err, provider.ErrInvalidArgument) {
			t.Errorf("invalid WithMachineTypes err = %v", err)
		}
	}
	if _, err := awsec2.NewFromClients(failingEC2{}, fakeSSM{}, awsec2.WithClock(nil)); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("nil clock err = %v", err)
	}
}
