// Tests against the moto launcher's documented AWS behaviour the driver must
// not assume away: snapshot descriptions in AWS's own formats, the 24-hour
// deregistration-protection cooldown, and DescribeImageReferences' coverage.

package awsec2_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

// tagCooldownOver is the launcher's test control that ends an image's
// protection cooldown (a test cannot wait 24 hours).
const tagCooldownOver = "moto-emu:protection-cooldown-over"

// madeImage creates an image of m and waits until it is available.
func madeImage(t *testing.T, e *env, m *provider.Machine, name, token string) *provider.Image {
	t.Helper()
	img, err := e.d.CreateImage(t.Context(), imageReq(m, name, token))
	if err != nil {
		t.Fatal(err)
	}
	return waitImage(t, e, img.ID)
}

// snapshotOf returns the (first) snapshot of image id in the region of c.
func snapshotOf(t *testing.T, c *ec2.Client, id string) types.Snapshot {
	t.Helper()
	out, err := c.DescribeImages(t.Context(), &ec2.DescribeImagesInput{ImageIds: []string{id}})
	if err != nil || len(out.Images) != 1 || len(out.Images[0].BlockDeviceMappings) == 0 {
		t.Fatalf("DescribeImages(%s) = %v, %v", id, out, err)
	}
	snap := aws.ToString(out.Images[0].BlockDeviceMappings[0].Ebs.SnapshotId)
	so, err := c.DescribeSnapshots(t.Context(), &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
	if err != nil || len(so.Snapshots) != 1 {
		t.Fatalf("DescribeSnapshots(%s) = %v, %v", snap, so, err)
	}
	return so.Snapshots[0]
}

// interruptedDelete deletes an image with d while every DeleteSnapshot
// fails, so the image is deregistered and its snapshot left; it returns the
// snapshot's id.
func interruptedDelete(t *testing.T, e *env, d *awsec2.Driver, c *ec2.Client, id string) string {
	t.Helper()
	snap := aws.ToString(snapshotOf(t, c, id).SnapshotId)
	e.faults.Add(moto.Fault{Action: "DeleteSnapshot", Times: 1 << 20, Code: "InternalError", Status: 500})
	if err := d.DeleteImage(t.Context(), id); err == nil {
		t.Fatal("DeleteImage with DeleteSnapshot failing = nil, want the error")
	}
	e.faults.Clear()
	if out, err := c.DescribeImages(t.Context(), &ec2.DescribeImagesInput{ImageIds: []string{id}}); err == nil && len(out.Images) > 0 &&
		out.Images[0].State != types.ImageStateDeregistered {
		t.Fatalf("image %s still registered after the interrupted delete", id)
	}
	if _, err := c.DescribeSnapshots(t.Context(), &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}}); err != nil {
		t.Fatalf("snapshot %s gone after the interrupted delete: %v", snap, err)
	}
	return snap
}

// A delete interrupted after the deregistration leaves the snapshot; the
// retry finds and deletes it although its description (AWS's own text,
// "Created by CreateImage(i-...) for ami-... from vol-...", or for a copy
// "Copied for DestinationAmi ...") does not end in " for <ami>".
func TestDeleteImageRetryFindsSnapshotsOfDeregisteredImage(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_5a0500000001")
	img := madeImage(t, e, m, "openclaw-crabbox-snap-20260101-0000", "")
	if d := aws.ToString(snapshotOf(t, e.ec2, img.ID).Description); !strings.HasPrefix(d, "Created by CreateImage("+m.ID+") for "+img.ID+" from vol-") {
		t.Fatalf("snapshot description %q: the launcher does not write AWS's format", d)
	}

	// A copy in another region: its snapshot reads "Copied for ...".
	cp, err := e.d.CopyImage(ctx, img.ID, "eu-west-1", "")
	if err != nil {
		t.Fatal(err)
	}
	eu := e.ec2In("eu-west-1")
	eud, err := newRecordedDriver(e.cfg, awsec2.WithEndpoint(motoSrv.Endpoint), awsec2.WithRegion("eu-west-1"),
		awsec2.WithCleanupBackoff(time.Millisecond, 5*time.Millisecond, 6))
	if err != nil {
		t.Fatal(err)
	}
	waitImage(t, &env{t: t, d: eud}, cp.ID)
	if d := aws.ToString(snapshotOf(t, eu, cp.ID).Description); !strings.HasPrefix(d, "Copied for DestinationAmi "+cp.ID+" from SourceAmi "+img.ID+" for SourceSnapshot snap-") {
		t.Fatalf("copy's snapshot description %q: the launcher does not write AWS's format", d)
	}

	for _, c := range []struct {
		d   *awsec2.Driver
		ec2 *ec2.Client
		id  string
	}{{eud, eu, cp.ID}, {e.d, e.ec2, img.ID}} {
		snap := interruptedDelete(t, e, c.d, c.ec2, c.id)
		if err := c.d.DeleteImage(ctx, c.id); err != nil {
			t.Fatalf("DeleteImage(%s) again: %v", c.id, err)
		}
		if _, err := c.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}}); err == nil {
			t.Errorf("snapshot %s of deregistered image %s survives the retried DeleteImage", snap, c.id)
			_, _ = c.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)})
		}
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean("us-east-1", "eu-west-1")
}

// An image deregistered behind crabbox's back leaves its crabbox-tagged
// snapshot: SweepOrphans deletes it once it is older than the grace, and
// never touches a crabbox snapshot an image still uses or an untagged one.
func TestSweepOrphansDeletesSnapshotsOfGoneImages(t *testing.T) {
	e, clk := sweepEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_5a0500000002")
	gone := madeImage(t, e, m, "openclaw-crabbox-gone-20260101-0000", "tok-gone")
	kept := madeImage(t, e, m, "openclaw-crabbox-kept-20260101-0000", "tok-kept")
	orphan := aws.ToString(snapshotOf(t, e.ec2, gone.ID).SnapshotId)
	// A snapshot crabbox did not make, used by no image.
	vol, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := e.ec2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: vol.VolumeId})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(gone.ID)}); err != nil {
		t.Fatal(err)
	}
	e.sweep(0) // the orphan snapshot is younger than the grace
	clk.advance(time.Hour)
	n, err := e.d.SweepOrphans(ctx)
	if err != nil || n != 1 {
		t.Fatalf("SweepOrphans past the grace = %d, %v; want 1 (snapshot %s)", n, err, orphan)
	}
	if _, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{orphan}}); err == nil {
		t.Errorf("orphan snapshot %s survives the sweep", orphan)
	}
	if snapshotOf(t, e.ec2, kept.ID).SnapshotId == nil {
		t.Error("snapshot of the live image gone")
	}
	if _, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{aws.ToString(foreign.SnapshotId)}}); err != nil {
		t.Errorf("untagged snapshot %s: %v, want it untouched", aws.ToString(foreign.SnapshotId), err)
	}
	_, _ = e.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: foreign.SnapshotId})
	_, _ = e.ec2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: vol.VolumeId})
	if err := e.d.DeleteImage(ctx, kept.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

// Protection enabled with cooldown and then lifted still refuses the
// deregistration for 24 hours: DeleteImage says so with a
// *provider.CooldownError (matching ErrConflict) carrying when it ends,
// cleanup reports the image kept for that reason (not failed), and once the
// cooldown is over the image is deleted.
func TestProtectionCooldownKeepsImage(t *testing.T) {
	ce := newCleanupEnv(t, awsec2.WithProtectionCooldown(true))
	e := ce.env
	// Past the failed image's inspection period (7 days).
	ce.planner = ce.client(t, ce.hooked, 8*24*time.Hour)
	ctx := t.Context()
	prev := ce.image(t)
	if err := e.d.UpdateImageLabels(ctx, prev.ID, map[string]string{crabbox.LabelStatus: crabbox.StatusKnownGood}); err != nil {
		t.Fatal(err)
	}
	old := ce.image(t)
	// Promote prev, then old, then roll back: old is retired (its
	// protection lifted, so its cooldown starts) and marked failed.
	for _, id := range []string{prev.ID, old.ID} {
		if _, err := ce.c.Promote(ctx, id, crabbox.Force("cooldown test")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ce.c.Rollback(ctx, crabbox.DefaultChannel, "cooldown test"); err != nil {
		t.Fatal(err)
	}
	lifted := time.Now()
	got, err := e.d.GetImage(ctx, old.ID)
	if err != nil || got.Protected {
		t.Fatalf("rolled-back image %s: %+v, %v; want its protection lifted", old.ID, got, err)
	}

	err = e.d.DeleteImage(ctx, old.ID)
	var ce2 *provider.CooldownError
	if !errors.As(err, &ce2) || !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("DeleteImage in the cooldown = %v, want a *provider.CooldownError matching ErrConflict", err)
	}
	if d := ce2.Until.Sub(lifted.Add(24 * time.Hour)); d < -time.Minute || d > time.Minute {
		t.Errorf("cooldown until %v, want about 24 h after the protection was lifted (%v)", ce2.Until, lifted)
	}

	plan := ce.plan(t)
	if it := item(t, plan, old.ID); it.Action != crabbox.ActionDelete {
		t.Fatalf("plan item of %s: %+v, want delete (failed by the rollback, inspection period over)", old.ID, it)
	}
	res, err := plan.Apply(ctx)
	if err != nil || len(res.Failed) != 0 {
		t.Fatalf("Apply = %+v, %v; want nothing failed", res, err)
	}
	found := false
	for _, o := range res.Outcomes {
		if o.ImageID != old.ID {
			continue
		}
		found = true
		if o.Result != crabbox.ResultKept || !strings.Contains(o.Reason, "deregistration protection in cooldown until "+ce2.Until.UTC().Format(time.RFC3339)) {
			t.Errorf("outcome of %s: %+v, want kept: deregistration protection in cooldown until %s", old.ID, o, ce2.Until.UTC().Format(time.RFC3339))
		}
	}
	if !found {
		t.Fatalf("Apply has no outcome for %s: %+v", old.ID, res)
	}

	// The cooldown passes: the image goes.
	cooldownOver := func(id string) {
		t.Helper()
		if _, err := e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id},
			Tags: []types.Tag{{Key: aws.String(tagCooldownOver), Value: aws.String("true")}}}); err != nil {
			t.Fatal(err)
		}
	}
	cooldownOver(old.ID)
	if err := e.d.DeleteImage(ctx, old.ID); err != nil {
		t.Fatalf("DeleteImage after the cooldown: %v", err)
	}
	if err := e.d.ProtectImage(ctx, prev.ID, false); err != nil {
		t.Fatal(err)
	}
	cooldownOver(prev.ID)
	if err := e.d.DeleteImage(ctx, prev.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(ctx, ce.m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

// DescribeImageReferences and the scan the driver falls back on when it is
// refused find the same uses: a launch template version among the 10 most
// recent (neither $Default nor $Latest) is a use, and a terminated
// instance (which AWS's default options report) is not. (SSM image
// parameters: TestCleanupKeepsImageParameterWithReferencesRefused.)
func TestImageUsageSameWithReferencesRefused(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_5a0500000003")
	img := madeImage(t, e, m, "openclaw-crabbox-refs-20260101-0000", "tok-refs")
	base, err := e.d.BaseImage(ctx, provider.ArchAMD64)
	if err != nil {
		t.Fatal(err)
	}
	user, err := e.d.CreateMachine(ctx, provider.CreateMachineRequest{Token: "cbx_5a0500000004", Image: img.ID, Type: "t3.small",
		Labels: map[string]string{"crabbox-lease": "cbx_5a0500000004"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(ctx, user.ID); err != nil {
		t.Fatal(err)
	}
	// Twelve versions: the image only in version 5.
	lt, err := e.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("middle-version"),
		LaunchTemplateData: &types.RequestLaunchTemplateData{ImageId: aws.String(base)}})
	if err != nil {
		t.Fatal(err)
	}
	ltID := aws.ToString(lt.LaunchTemplate.LaunchTemplateId)
	for v := 2; v <= 12; v++ {
		image := base
		if v == 5 {
			image = img.ID
		}
		if _, err := e.ec2.CreateLaunchTemplateVersion(ctx, &ec2.CreateLaunchTemplateVersionInput{LaunchTemplateId: aws.String(ltID),
			LaunchTemplateData: &types.RequestLaunchTemplateData{ImageId: aws.String(image)}}); err != nil {
			t.Fatal(err)
		}
	}
	want := "ec2:LaunchTemplate"
	check := func(how string) {
		t.Helper()
		refs, err := e.d.ImageUsage(ctx, img.ID)
		if err != nil {
			t.Fatalf("ImageUsage (%s): %v", how, err)
		}
		if len(refs) != 1 || !strings.HasPrefix(refs[0], want) || !strings.Contains(refs[0], ltID) {
			t.Errorf("ImageUsage (%s) = %q, want only launch template %s (version 5 of 12; the terminated instance %s is no use)", how, refs, ltID, user.ID)
		}
	}
	check("DescribeImageReferences")
	e.faults.Add(moto.Fault{Action: "DescribeImageReferences", Times: 1 << 20, Code: "UnauthorizedOperation", Status: 403})
	check("scan fallback")
	e.faults.Clear()
	if _, err := e.ec2.DeleteLaunchTemplate(ctx, &ec2.DeleteLaunchTemplateInput{LaunchTemplateId: aws.String(ltID)}); err != nil {
		t.Fatal(err)
	}
	if refs, err := e.d.ImageUsage(ctx, img.ID); err != nil || len(refs) != 0 {
		t.Errorf("ImageUsage without the template = %q, %v; want none", refs, err)
	}
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

// The orphan sweep deletes only what crabbox made: a snapshot or key pair
// tagged crabbox=true but made by another tool (created-by=other), or
// carrying crabbox=true alone, is foreign and stays, however old and
// unused (ownership needs both labels, as everywhere).
func TestSweepOrphansKeepsForeignWithOneOwnershipTag(t *testing.T) {
	e, clk := sweepEnv(t)
	ctx := t.Context()
	vol, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	var snaps []string
	for _, tags := range [][]types.Tag{
		{{Key: aws.String("crabbox"), Value: aws.String("true")}, {Key: aws.String("created-by"), Value: aws.String("other-tool")}},
		{{Key: aws.String("crabbox"), Value: aws.String("true")}},
	} {
		s, err := e.ec2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: vol.VolumeId,
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: tags}}})
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, aws.ToString(s.SnapshotId))
	}
	var keys []string
	for i, tags := range [][]types.Tag{
		{{Key: aws.String("crabbox"), Value: aws.String("true")}, {Key: aws.String("created-by"), Value: aws.String("other-tool")}},
		{{Key: aws.String("crabbox"), Value: aws.String("true")}},
	} {
		name := fmt.Sprintf("crabbox-foreign-%d", i)
		if _, err := e.ec2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String(name), PublicKeyMaterial: authorizedKey(t),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeKeyPair, Tags: tags}}}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, name)
	}
	clk.advance(24 * time.Hour)
	if n, err := e.d.SweepOrphans(ctx); err != nil || n != 0 {
		t.Errorf("SweepOrphans = %d, %v; want 0: nothing here is crabbox's", n, err)
	}
	for _, s := range snaps {
		if _, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{s}}); err != nil {
			t.Errorf("foreign snapshot %s: %v, want it kept", s, err)
		}
		_, _ = e.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(s)})
	}
	for _, k := range keys {
		if _, err := e.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{k}}); err != nil {
			t.Errorf("foreign key pair %s: %v, want it kept", k, err)
		}
		_, _ = e.ec2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(k)})
	}
	_, _ = e.ec2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: vol.VolumeId})
}
