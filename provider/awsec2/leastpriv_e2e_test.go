// Tests as a least-privilege principal: the runbook, double and concurrent releases, and image references, with exactly Driver.Policy() enforced with tags by moto.IAMTransport.

package awsec2_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

// leastPriv makes the env's driver a principal holding exactly its own
// policy: its calls go through an IAMTransport (then the fault transport)
// to moto.
func leastPriv(t *testing.T, opts ...awsec2.Option) (*env, *moto.IAMTransport) {
	t.Helper()
	e := newEnv(t, opts...)
	pj, err := e.d.PolicyJSON()
	if err != nil {
		t.Fatal(err)
	}
	iam, err := moto.NewIAMTransport(motoSrv.Endpoint, pj, e.faults)
	if err != nil {
		t.Fatal(err)
	}
	e.build(iam, opts...)
	if again, _ := e.d.PolicyJSON(); string(again) != string(pj) {
		t.Fatal("the rebuilt driver has another policy")
	}
	return e, iam
}

// expectNoRefusals fails t for every request the principal was refused.
func expectNoRefusals(t *testing.T, iam *moto.IAMTransport, during string) {
	t.Helper()
	for _, r := range iam.Refusals() {
		t.Errorf("%s: refused under the driver's own policy: %s", during, r)
	}
}

// The runbook's AWS steps as the least-privilege principal: warm, bake,
// image, smoke, promote, mark known-good, promote again and roll back,
// plan and apply the cleanup; every lease released twice, one of them by
// two concurrent Releases and one racing the reaper. Not one request is
// refused, so no call was made on a resource already gone.
func TestRunbookAsLeastPrivilegePrincipal(t *testing.T) {
	e, iam := leastPriv(t)
	c, _ := newClient(t, e)
	ctx := t.Context()
	releaseTwice := func(l *crabbox.Lease) {
		t.Helper()
		if err := l.Release(ctx); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatalf("second Release: %v", err)
		}
	}

	src, err := c.Warmup(ctx, crabbox.WithClass("small"), crabbox.WithTTL(time.Hour))
	if err != nil {
		t.Fatalf("Warmup: %v", err)
	}
	defer src.Release(context.Background())
	bake := `R="${CRABBOX_FS_ROOT:-}"
mkdir -p "$R/usr/local/bin"
printf '#!/bin/sh\necho baked\n' > "$R/usr/local/bin/crabbox-hello"
chmod 755 "$R/usr/local/bin/crabbox-hello"`
	if res, err := src.Run(ctx, bake, crabbox.Strict()); err != nil {
		t.Fatalf("bake: %+v, %v", res, err)
	}
	now := time.Now().UTC()
	img, err := c.CreateImage(ctx, src.ID, imageName(t, "linux", now), crabbox.WithWait(time.Minute))
	if err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	releaseTwice(src)

	cand, err := c.Warmup(ctx, crabbox.WithImage(img.ID), crabbox.WithTTL(30*time.Minute))
	if err != nil {
		t.Fatalf("candidate Warmup: %v", err)
	}
	rep, err := crabbox.Smoke(ctx, cand, append(crabbox.CandidateSmoke(crabbox.CheckSetOptions{Tools: []string{}}),
		crabbox.CommandSucceeds("baked tool runs", "crabbox-hello", crabbox.OutputContains("baked"))))
	if err != nil {
		t.Fatalf("candidate smoke: %v", err)
	}
	releaseTwice(cand)
	if _, err := c.Promote(ctx, img.ID, crabbox.WithProof(rep)); err != nil {
		t.Fatalf("Promote: %v", err)
	}

	norm, err := c.Warmup(ctx, crabbox.WithTTL(30*time.Minute))
	if err != nil {
		t.Fatalf("normal Warmup: %v", err)
	}
	repN, err := crabbox.Smoke(ctx, norm, crabbox.PromotedSmoke(crabbox.CheckSetOptions{Tools: []string{}}))
	if err != nil {
		t.Fatalf("promoted smoke: %v", err)
	}
	if _, err := c.MarkKnownGood(ctx, img.ID, repN); err != nil {
		t.Fatalf("MarkKnownGood: %v", err)
	}
	img2, err := c.CreateImage(ctx, norm.ID, imageName(t, "linux2", now), crabbox.WithWait(time.Minute))
	if err != nil {
		t.Fatalf("second CreateImage: %v", err)
	}
	// Two concurrent releases of one lease, then a third.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = norm.Release(ctx) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Release %d: %v", i, err)
		}
	}
	releaseTwice(norm)

	if _, err := c.Promote(ctx, img2.ID, crabbox.Force("least-privilege runbook")); err != nil {
		t.Fatalf("second Promote: %v", err)
	}
	if _, err := c.Rollback(ctx, crabbox.DefaultChannel, "least-privilege runbook"); err != nil {
		t.Fatalf("Rollback: %v", err)
	}

	// A lease whose TTL passed, released while a reaper (a client a day
	// later) releases it too.
	late, err := c.Warmup(ctx, crabbox.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	reaper, err := crabbox.New(e.d, crabbox.WithStateDir(t.TempDir()), crabbox.WithOperator("reaper"),
		crabbox.WithClock(func() time.Time { return time.Now().Add(24 * time.Hour) }))
	if err != nil {
		t.Fatal(err)
	}
	var reapErr, relErr error
	wg.Add(2)
	go func() { defer wg.Done(); _, reapErr = reaper.Reap(ctx) }()
	go func() { defer wg.Done(); relErr = late.Release(ctx) }()
	wg.Wait()
	if reapErr != nil || relErr != nil {
		t.Errorf("Reap racing Release: %v, %v", reapErr, relErr)
	}
	releaseTwice(late)
	if _, err := reaper.Reap(ctx); err != nil {
		t.Errorf("Reap after the releases: %v", err)
	}

	planner, err := crabbox.New(e.d, crabbox.WithStateDir(t.TempDir()), crabbox.WithOperator("tester"),
		crabbox.WithClock(func() time.Time { return time.Now().Add(7 * 24 * time.Hour) }),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := planner.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	if err != nil {
		t.Fatalf("PlanCleanup: %v", err)
	}
	if _, err := plan.Apply(ctx); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for _, id := range []string{img.ID, img2.ID} {
		if _, err := e.d.GetImage(ctx, id); errors.Is(err, provider.ErrNotFound) {
			continue
		}
		if err := e.d.ProtectImage(ctx, id, false); err != nil {
			t.Fatal(err)
		}
		if err := e.d.DeleteImage(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.d.DeleteChannel(ctx, crabbox.DefaultChannel); err != nil {
		t.Fatal(err)
	}

	expectNoRefusals(t, iam, "the runbook")
	// The front did evaluate the calls that need tags.
	for _, a := range []string{"ec2:RunInstances", "ec2:ImportKeyPair", "ec2:CreateImage", "ec2:DeleteKeyPair", "ec2:TerminateInstances",
		"ec2:CreateTags", "ec2:DeregisterImage", "ec2:DeleteSnapshot", "ec2:EnableImageDeregistrationProtection", "ssm:PutParameter"} {
		if iam.Authorized(a) == 0 {
			t.Errorf("no %s authorized: the runbook did not exercise it", a)
		}
	}
	e.expectClean()
}

// Releasing a lease whose key pair is already gone (deleted by a release
// in another process, or by SweepOrphans) calls nothing on the key: as the
// least-privilege principal that call would be refused.
func TestDeleteMachineWithGoneKeyAsLeastPrivilegePrincipal(t *testing.T) {
	e, iam := leastPriv(t)
	ctx := t.Context()
	m, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_1ea5700000001"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{m.ID}})
	if err != nil {
		t.Fatal(err)
	}
	kn := aws.ToString(in.Reservations[0].Instances[0].KeyName)
	if _, err := e.ec2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(kn)}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatalf("DeleteMachine with its key gone: %v", err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatalf("second DeleteMachine: %v", err)
	}
	expectNoRefusals(t, iam, "releases with the key gone")
	e.expectClean()
}

// Several releases of one machine at once, on one driver and on drivers of
// other processes: all return nil, and no release calls anything on a key
// pair or instance it saw gone.
func TestConcurrentDeleteMachineAsLeastPrivilegePrincipal(t *testing.T) {
	e, iam := leastPriv(t)
	ctx := t.Context()
	m, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_1ea5700000002"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = e.d.DeleteMachine(ctx, m.ID) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent DeleteMachine %d: %v", i, err)
		}
	}
	expectNoRefusals(t, iam, "concurrent releases")
	e.expectClean()
}

// ImageUsage asks DescribeImageReferences about every resource type: the
// policy grants what each of them needs, so the call is not refused (and
// the driver does not fall back to its own scan).
func TestImageUsageAsLeastPrivilegePrincipal(t *testing.T) {
	e, iam := leastPriv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_1ea5700000003")
	img, err := e.d.CreateImage(ctx, imageReq(m, imageName(t, "refs", time.Now()), "tok-refs"))
	if err != nil {
		t.Fatal(err)
	}
	img = waitImage(t, e, img.ID)
	if _, err := e.d.ImageUsage(ctx, img.ID); err != nil {
		t.Fatalf("ImageUsage: %v", err)
	}
	expectNoRefusals(t, iam, "ImageUsage")
	if iam.Authorized("ec2:DescribeImageReferences") == 0 {
		t.Error("DescribeImageReferences was not called")
	}
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	expectNoRefusals(t, iam, "cleanup")
	e.expectClean()
}

// The front refuses what the policy does not grant, with AWS's errors: a
// too-broad policy would let these through, a too-narrow one would refuse
// the owned counterparts.
func TestLeastPrivilegePrincipalIsRefusedForeignResources(t *testing.T) {
	e, iam := leastPriv(t)
	ctx := t.Context()
	pj, _ := e.d.PolicyJSON()
	principal, err := moto.NewIAMTransport(motoSrv.Endpoint, pj, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := ec2.NewFromConfig(baseConfig(principal), func(o *ec2.Options) { o.BaseEndpoint = aws.String(motoSrv.Endpoint) })
	sc := ssm.NewFromConfig(baseConfig(principal), func(o *ssm.Options) { o.BaseEndpoint = aws.String(motoSrv.Endpoint) })
	snapshot := func(tags ...types.Tag) string {
		t.Helper()
		v, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)})
		if err != nil {
			t.Fatal(err)
		}
		in := &ec2.CreateSnapshotInput{VolumeId: v.VolumeId}
		if len(tags) > 0 {
			in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: tags}}
		}
		s, err := e.ec2.CreateSnapshot(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = e.ec2.DeleteSnapshot(context.Background(), &ec2.DeleteSnapshotInput{SnapshotId: s.SnapshotId})
			_, _ = e.ec2.DeleteVolume(context.Background(), &ec2.DeleteVolumeInput{VolumeId: v.VolumeId})
		})
		return aws.ToString(s.SnapshotId)
	}
	refused := func(what, code string, err error) {
		t.Helper()
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != code {
			t.Errorf("%s = %v, want %s", what, err, code)
		}
	}
	managed := types.Tag{Key: aws.String(awsec2.TagManaged), Value: aws.String("true")}

	foreign := snapshot()
	_, err = c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(foreign)})
	refused("DeleteSnapshot of a foreign snapshot", "UnauthorizedOperation", err)
	_, err = c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{foreign}, Tags: []types.Tag{managed}})
	refused("CreateTags crabbox=true on a foreign snapshot", "UnauthorizedOperation", err)
	if _, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{foreign}}); err != nil {
		t.Errorf("the foreign snapshot is gone: %v", err)
	}
	// A key pair without the tag, and one that does not exist: both
	// refused (the latter is the second release's old bug).
	_, err = e.ec2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String("crabbox-foreign"), PublicKeyMaterial: authorizedKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = e.ec2.DeleteKeyPair(context.Background(), &ec2.DeleteKeyPairInput{KeyName: aws.String("crabbox-foreign")})
	})
	_, err = c.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String("crabbox-foreign")})
	refused("DeleteKeyPair of an untagged key", "UnauthorizedOperation", err)
	_, err = c.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String("crabbox-never-existed")})
	refused("DeleteKeyPair of a missing key", "UnauthorizedOperation", err)
	_, err = sc.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/other/team/x"), Value: aws.String("ami-1"),
		Type: ssmtypes.ParameterTypeString})
	refused("PutParameter outside the prefix", "AccessDeniedException", err)
	if err != nil && !strings.Contains(err.Error(), "is not authorized to perform: ssm:PutParameter") {
		t.Errorf("SSM refusal message: %v", err)
	}
	if n := len(principal.Refusals()); n != 5 {
		t.Errorf("%d refusals recorded, want 5: %v", n, principal.Refusals())
	}

	// The owned counterparts are allowed: the policy is not too narrow.
	owned := snapshot(managed)
	if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(owned)}); err != nil {
		t.Errorf("DeleteSnapshot of a crabbox=true snapshot: %v", err)
	}
	if _, err := sc.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(awsec2.DefaultSSMPrefix + "scratch"), Value: aws.String("x"),
		Type: ssmtypes.ParameterTypeString}); err != nil {
		t.Errorf("PutParameter under the prefix: %v", err)
	}
	_, _ = e.ssm.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(awsec2.DefaultSSMPrefix + "scratch")})
	if n := len(principal.Refusals()); n != 5 {
		t.Errorf("owned counterparts refused: %v", principal.Refusals()[5:])
	}
	expectNoRefusals(t, iam, "the driver")
}

// A release deletes a key pair between SweepOrphans' listing and its
// deletion: the sweep's DeleteKeyPair of the gone key is refused (the one
// refusal the test forces), and SweepOrphans sees the key gone and goes
// on without an error.
func TestSweepOrphansRacingReleaseAsLeastPrivilegePrincipal(t *testing.T) {
	clk := &testClock{}
	e, iam := leastPriv(t, awsec2.WithClock(clk.now))
	ctx := t.Context()
	m, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_1ea5700000004"))
	if err != nil {
		t.Fatal(err)
	}
	e.terminateBehindBack(m.ID, true)
	clk.advance(awsec2.DefaultOrphanGrace + time.Minute)
	raced := false
	e.build(&hookTransport{base: iam, before: func(action string) {
		if action == "DeleteKeyPair" && !raced {
			raced = true
			e.deleteKeys("crabbox-cbx_1ea5700000004")
		}
	}}, awsec2.WithClock(clk.now))
	n, err := e.d.SweepOrphans(ctx)
	if err != nil || n != 0 {
		t.Errorf("SweepOrphans racing a release = %d, %v; want 0, nil", n, err)
	}
	if !raced {
		t.Fatal("SweepOrphans made no DeleteKeyPair call")
	}
	if r := iam.Refusals(); len(r) != 1 || r[0].Action != "ec2:DeleteKeyPair" {
		t.Errorf("refusals = %v, want only the forced DeleteKeyPair of the gone key", r)
	}
	e.expectClean()
}

// Releases at once of an instance that terminated by itself (its idle
// shutdown) before any release marked it: no release finds it live, so no
// TerminateInstances answer says which one owns the key pair. Within one
// driver they take turns, so only the first deletes the key and the rest
// find the mark: not one refused DeleteKeyPair on a key already gone.
func TestConcurrentDeleteOfSelfTerminatedMachineAsLeastPrivilegePrincipal(t *testing.T) {
	e, iam := leastPriv(t)
	ctx := t.Context()
	m, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_1ea5700000009"))
	if err != nil {
		t.Fatal(err)
	}
	// The box shuts itself down: terminated without the crabbox-deleted
	// mark, with its key pair still there.
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{m.ID}}); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for i := range errs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = e.d.DeleteMachine(ctx, m.ID) }()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d: concurrent DeleteMachine %d: %v", round, i, err)
			}
		}
	}
	expectNoRefusals(t, iam, "concurrent releases of a self-terminated machine")
	// The evaluator reads the key's tags before moto applies an earlier
	// delete, so a second DeleteKeyPair may slip through as allowed: count
	// the calls themselves.
	if n := iam.Authorized("ec2:DeleteKeyPair"); n != 1 {
		t.Errorf("DeleteKeyPair called %d times for one key pair, want 1", n)
	}
	e.expectClean()
}
