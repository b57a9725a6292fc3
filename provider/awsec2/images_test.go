// Tests of images.go: AMIs and their snapshots.

package awsec2_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

// waitImage polls GetImage until the image leaves pending (bounded by
// polls, not time).
func waitImage(t *testing.T, e *env, id string) *provider.Image {
	t.Helper()
	for i := 0; i < 20; i++ {
		img, err := e.d.GetImage(t.Context(), id)
		if err != nil {
			t.Fatalf("GetImage(%s): %v", id, err)
		}
		if img.State != provider.ImagePending {
			return img
		}
	}
	t.Fatalf("image %s still pending after 20 polls", id)
	return nil
}

func newMachine(t *testing.T, e *env, token string) *provider.Machine {
	t.Helper()
	m, err := e.d.CreateMachine(t.Context(), createReq(t, e, token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.d.DeleteMachine(context.Background(), m.ID) })
	return m
}

func imageReq(m *provider.Machine, name, token string) provider.CreateImageRequest {
	return provider.CreateImageRequest{
		MachineID: m.ID, Name: name, Description: "crabbox test image", Token: token, NoReboot: true,
		Labels: map[string]string{"created-by": "crabbox", "crabbox-source-lease": "cbx_0123456789ab", "crabbox-owner": "openclaw", "crabbox-status": "candidate"},
	}
}

func TestImageLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_111111111111")
	img, err := e.d.CreateImage(ctx, imageReq(m, "openclaw-crabbox-linux-20260101-0000", "tok-1"))
	if err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	if img.State != provider.ImagePending {
		t.Errorf("new image state = %s, want pending (AWS images start pending)", img.State)
	}
	img = waitImage(t, e, img.ID)
	if img.State != provider.ImageAvailable || img.Arch != "amd64" || img.Name != "openclaw-crabbox-linux-20260101-0000" {
		t.Errorf("image = %+v", img)
	}
	if img.Labels[awsec2.TagManaged] != "true" || img.Labels["crabbox-source-lease"] != "cbx_0123456789ab" || img.Labels[awsec2.TagCreateToken] != "tok-1" {
		t.Errorf("image labels = %v", img.Labels)
	}
	if len(img.Snapshots) != 1 || img.SizeGiB <= 0 || img.Created.IsZero() {
		t.Fatalf("snapshots = %+v size %v created %v", img.Snapshots, img.SizeGiB, img.Created)
	}
	snap := img.Snapshots[0].ID
	so, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
	if err != nil {
		t.Fatal(err)
	}
	if st := tags(so.Snapshots[0].Tags); st[awsec2.TagManaged] != "true" || st["crabbox-owner"] != "openclaw" {
		t.Errorf("snapshot tags = %v, want the image's labels (tagged at creation)", st)
	}

	list, err := e.d.ListImages(ctx, map[string]string{"crabbox-owner": "openclaw"})
	if err != nil || len(list) != 1 || list[0].ID != img.ID {
		t.Errorf("ListImages = %v, %v", list, err)
	}
	if err := e.d.UpdateImageLabels(ctx, img.ID, map[string]string{"crabbox-status": "known-good", "crabbox-owner": ""}); err != nil {
		t.Fatal(err)
	}
	got, _ := e.d.GetImage(ctx, img.ID)
	if got.Labels["crabbox-status"] != "known-good" || got.Labels["crabbox-owner"] != "" {
		t.Errorf("labels after update = %v", got.Labels)
	}

	// Protection blocks deletion until lifted.
	if err := e.d.ProtectImage(ctx, img.ID, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.d.GetImage(ctx, img.ID); !got.Protected {
		t.Error("image not reported protected")
	}
	if err := e.d.DeleteImage(ctx, img.ID); !errors.Is(err, provider.ErrConflict) {
		t.Errorf("DeleteImage(protected) = %v, want ErrConflict", err)
	}
	if _, err := e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(img.ID)}); err == nil {
		t.Error("moto deregistered a protected image: the launcher extension is broken")
	}
	if err := e.d.ProtectImage(ctx, img.ID, false); err != nil {
		t.Fatal(err)
	}

	// Deprecation "now" becomes the next whole minute AWS accepts.
	now := time.Now()
	if err := e.d.DeprecateImage(ctx, img.ID, now); err != nil {
		t.Fatalf("DeprecateImage: %v", err)
	}
	got, _ = e.d.GetImage(ctx, img.ID)
	if got.Deprecated.Before(now) || got.Deprecated.After(now.Add(3*time.Minute)) {
		t.Errorf("Deprecated = %v, want within minutes after %v", got.Deprecated, now)
	}

	// Delete: deregister, then the snapshot (moto reports it in use once
	// right after deregistration, as AWS can).
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatalf("DeleteImage: %v", err)
	}
	if _, err := e.d.GetImage(ctx, img.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("GetImage after delete = %v", err)
	}
	if e.faults.Calls("DeleteSnapshot") < 2 {
		t.Errorf("DeleteSnapshot called %d times: the InvalidSnapshot.InUse retry did not run", e.faults.Calls("DeleteSnapshot"))
	}
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Errorf("second DeleteImage = %v, want nil", err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

func TestCreateImageIsIdempotentAndAdoptsAfterLostResponse(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_222222222222")
	req := imageReq(m, "openclaw-crabbox-idem-20260101-0000", "tok-2")
	e.faults.Add(moto.Fault{Action: "CreateImage", Times: 1, After: true, Code: "InternalError", Status: 500})
	img, err := e.d.CreateImage(ctx, req)
	if !errors.Is(err, provider.ErrUnavailable) {
		t.Fatalf("CreateImage err = %v, want ErrUnavailable", err)
	}
	if img == nil || !strings.HasPrefix(img.ID, "ami-") {
		t.Fatalf("CreateImage returned %v with the error: want the image the call made", img)
	}
	again, err := e.d.CreateImage(ctx, req)
	if err != nil || again.ID != img.ID {
		t.Fatalf("retry = %v, %v; want %s adopted", again, err, img.ID)
	}
	all, _ := e.d.ListImages(ctx, nil)
	if len(all) != 1 {
		t.Errorf("%d images, want 1", len(all))
	}
	// Same name, other token: AWS refuses the duplicate name.
	if _, err := e.d.CreateImage(ctx, imageReq(m, req.Name, "tok-other")); !errors.Is(err, provider.ErrConflict) {
		t.Errorf("duplicate name = %v, want ErrConflict", err)
	}
	waitImage(t, e, img.ID)
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

func TestFailedImageReportsReason(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_333333333333")
	if _, err := e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{m.ID}, Tags: []types.Tag{
		{Key: aws.String(moto.TagImageState), Value: aws.String("failed")},
		{Key: aws.String(moto.TagImageReason), Value: aws.String("snapshot copy ran out of space")},
	}}); err != nil {
		t.Fatal(err)
	}
	img, err := e.d.CreateImage(ctx, imageReq(m, "openclaw-crabbox-fail-20260101-0000", "tok-3"))
	if err != nil {
		t.Fatal(err)
	}
	img = waitImage(t, e, img.ID)
	if img.State != provider.ImageFailed || !strings.Contains(img.StateReason, "snapshot copy ran out of space") {
		t.Errorf("failed image = state %s reason %q", img.State, img.StateReason)
	}
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

func TestDeleteImageNeverTouchesUnownedImagesOrSnapshots(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_444444444444")
	// An image made outside crabbox (no ownership tag).
	out, err := e.ec2.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(m.ID), Name: aws.String("someone-elses-image")})
	if err != nil {
		t.Fatal(err)
	}
	foreign := aws.ToString(out.ImageId)
	if err := e.d.DeleteImage(ctx, foreign); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("DeleteImage(unowned) = %v, want refusal", err)
	}
	if _, err := e.d.GetImage(ctx, foreign); err != nil {
		t.Errorf("unowned image gone: %v", err)
	}
	// An owned image whose snapshot someone untagged: image goes, snapshot stays.
	img, err := e.d.CreateImage(ctx, imageReq(m, "openclaw-crabbox-own-20260101-0000", "tok-4"))
	if err != nil {
		t.Fatal(err)
	}
	img = waitImage(t, e, img.ID)
	snap := img.Snapshots[0].ID
	if _, err := e.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{snap}, Tags: []types.Tag{{Key: aws.String(awsec2.TagManaged)}}}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}}); err != nil {
		t.Errorf("untagged snapshot was deleted: %v", err)
	}
	// Clean up what this test made outside the driver.
	_, _ = e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(foreign)})
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

func TestDeleteImageRetriesThrottledSnapshotDeletes(t *testing.T) {
	e, clk := sweepEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_555555555555")
	img, err := e.d.CreateImage(ctx, imageReq(m, "openclaw-crabbox-thr-20260101-0000", "tok-5"))
	if err != nil {
		t.Fatal(err)
	}
	waitImage(t, e, img.ID)
	e.faults.Add(moto.Fault{Action: "DeleteSnapshot", Times: 2})
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatalf("DeleteImage: %v", err)
	}
	if e.faults.Injected("DeleteSnapshot") != 2 {
		t.Errorf("injected %d throttles", e.faults.Injected("DeleteSnapshot"))
	}
	// Interrupted delete: image gone, snapshot left; a second DeleteImage
	// finds the orphan by the tag the first one wrote on it before
	// deregistering (not by its AWS description) and deletes it.
	img2, err := e.d.CreateImage(ctx, imageReq(m, "openclaw-crabbox-orph-20260101-0000", "tok-6"))
	if err != nil {
		t.Fatal(err)
	}
	img2 = waitImage(t, e, img2.ID)
	interruptedDelete(t, e, e.d, e.ec2, img2.ID)
	if err := e.d.DeleteImage(ctx, img2.ID); err != nil {
		t.Fatalf("DeleteImage(deregistered): %v", err)
	}
	// Deregistered behind the driver's back: nothing names the image on
	// its snapshot, so DeleteImage succeeds without finding it, and
	// SweepOrphans deletes it once it is older than the grace.
	img3, err := e.d.CreateImage(ctx, imageReq(m, "openclaw-crabbox-gone-20260101-0000", "tok-6b"))
	if err != nil {
		t.Fatal(err)
	}
	img3 = waitImage(t, e, img3.ID)
	if _, err := e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(img3.ID)}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteImage(ctx, img3.ID); err != nil {
		t.Fatalf("DeleteImage(deregistered elsewhere): %v", err)
	}
	clk.advance(time.Hour)
	e.sweep(1)
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

func TestCopyImageToRegionWithTags(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_666666666666")
	img, err := e.d.CreateImage(ctx, imageReq(m, "openclaw-crabbox-copy-20260101-0000", "tok-7"))
	if err != nil {
		t.Fatal(err)
	}
	waitImage(t, e, img.ID)
	cp, err := e.d.CopyImage(ctx, img.ID, "eu-west-1", "")
	if err != nil {
		t.Fatalf("CopyImage: %v", err)
	}
	if cp.ID == img.ID || cp.Labels["crabbox-source-lease"] != "cbx_0123456789ab" || cp.Labels[awsec2.TagManaged] != "true" {
		t.Errorf("copy = %+v", cp)
	}
	eu := e.ec2In("eu-west-1")
	out, err := eu.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{cp.ID}})
	if err != nil || len(out.Images) != 1 {
		t.Fatalf("copy not in eu-west-1: %v", err)
	}
	snap := aws.ToString(out.Images[0].BlockDeviceMappings[0].Ebs.SnapshotId)
	so, err := eu.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
	if err != nil || tags(so.Snapshots[0].Tags)["crabbox-owner"] != "openclaw" {
		t.Errorf("copy snapshot tags = %v, %v", so, err)
	}
	// Clean up in eu-west-1 with a driver for that region.
	eud, err := newRecordedDriver(e.cfg, awsec2.WithEndpoint(motoSrv.Endpoint), awsec2.WithRegion("eu-west-1"),
		awsec2.WithCleanupBackoff(time.Millisecond, 5*time.Millisecond, 6))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		_, _ = eud.GetImage(ctx, cp.ID) // let it leave pending
	}
	if err := eud.DeleteImage(ctx, cp.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean("us-east-1", "eu-west-1")
}

func TestImageUsage(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_777777777777")
	img, err := e.d.CreateImage(ctx, imageReq(m, "openclaw-crabbox-use-20260101-0000", "tok-8"))
	if err != nil {
		t.Fatal(err)
	}
	waitImage(t, e, img.ID)
	if refs, err := e.d.ImageUsage(ctx, img.ID); err != nil || len(refs) != 0 {
		t.Errorf("ImageUsage(unused) = %v, %v", refs, err)
	}
	// A box and a launch template using the image.
	user, err := e.d.CreateMachine(ctx, provider.CreateMachineRequest{Token: "cbx_777777777778", Image: img.ID, Type: "t3.small",
		Labels: map[string]string{"crabbox-lease": "cbx_777777777778"}})
	if err != nil {
		t.Fatal(err)
	}
	lt, err := e.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("uses-image"),
		LaunchTemplateData: &types.RequestLaunchTemplateData{ImageId: aws.String(img.ID)}})
	if err != nil {
		t.Fatal(err)
	}
	check := func(how string) {
		t.Helper()
		refs, err := e.d.ImageUsage(ctx, img.ID)
		if err != nil {
			t.Fatalf("ImageUsage (%s): %v", how, err)
		}
		joined := strings.Join(refs, "\n")
		if !strings.Contains(joined, user.ID) || !strings.Contains(joined, aws.ToString(lt.LaunchTemplate.LaunchTemplateId)) {
			t.Errorf("ImageUsage (%s) = %v, want instance %s and template %s", how, refs, user.ID, aws.ToString(lt.LaunchTemplate.LaunchTemplateId))
		}
	}
	check("DescribeImageReferences")
	e.faults.Add(moto.Fault{Action: "DescribeImageReferences", Times: 1, Code: "InvalidAction", Status: 400})
	check("scan fallback")
	if e.faults.Injected("DescribeImageReferences") != 1 {
		t.Error("fallback not exercised")
	}
	_, _ = e.ec2.DeleteLaunchTemplate(ctx, &ec2.DeleteLaunchTemplateInput{LaunchTemplateId: lt.LaunchTemplate.LaunchTemplateId})
	for _, id := range []string{user.ID, m.ID} {
		if err := e.d.DeleteMachine(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

func tagFailed(t *testing.T, e *env, instanceID, reason string) {
	t.Helper()
	if _, err := e.ec2.CreateTags(t.Context(), &ec2.CreateTagsInput{Resources: []string{instanceID}, Tags: []types.Tag{
		{Key: aws.String(moto.TagImageState), Value: aws.String("failed")},
		{Key: aws.String(moto.TagImageReason), Value: aws.String(reason)},
	}}); err != nil {
		t.Fatal(err)
	}
}

// EC2 is eventually consistent: right after CreateImage succeeds,
// DescribeImages may not know the new image yet. CreateImage then reports it
// pending (id, name, labels) with no error, and the image turns up later.
func TestCreateImageNotYetDescribableIsPending(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_888888888888")
	armed := false
	e.build(&hookTransport{base: e.faults, after: func(action string) error {
		if action == "CreateImage" && !armed {
			armed = true
			// The next DescribeImages (the driver's read-back) does not
			// see the image yet.
			e.faults.Add(moto.Fault{Action: "DescribeImages", Times: 1, Code: "InvalidAMIID.NotFound", Status: 400})
		}
		return nil
	}})
	req := imageReq(m, "openclaw-crabbox-ec-20260101-0000", "tok-ec")
	img, err := e.d.CreateImage(ctx, req)
	if !armed || e.faults.Injected("DescribeImages") != 1 {
		t.Fatalf("read-back NotFound not staged (armed %v, injected %d)", armed, e.faults.Injected("DescribeImages"))
	}
	if err != nil {
		t.Fatalf("CreateImage = %v, %v; want the pending image and no error", img, err)
	}
	if img == nil || !strings.HasPrefix(img.ID, "ami-") || img.Name != req.Name || img.State != provider.ImagePending {
		t.Fatalf("CreateImage = %+v; want the new image, pending, with its name", img)
	}
	if img.Labels["crabbox-source-lease"] != "cbx_0123456789ab" || img.Labels[awsec2.TagManaged] != "true" || img.Labels[awsec2.TagCreateToken] != "tok-ec" {
		t.Errorf("pending image labels = %v", img.Labels)
	}
	got := waitImage(t, e, img.ID)
	if got.State != provider.ImageAvailable {
		t.Errorf("image later = %+v", got)
	}
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

// cancelAt cancels at the n-th call (1-based) of action: the call reaches
// moto, then the client sees context.Canceled. It reports whether it fired.
func cancelAt(e *env, action string, n int, cancel context.CancelFunc) *bool {
	fired, seen := false, 0
	e.build(&hookTransport{base: e.faults, after: func(a string) error {
		if a != action || fired {
			return nil
		}
		if seen++; seen == n {
			fired = true
			cancel()
			return context.Canceled
		}
		return nil
	}})
	return &fired
}

// ownedImages lists the AMIs and crabbox-owned snapshots in moto.
func ownedImages(t *testing.T, e *env) (images, snaps []string) {
	t.Helper()
	for _, l := range e.leftovers("us-east-1") {
		switch {
		case strings.HasPrefix(l, "image "):
			images = append(images, strings.TrimPrefix(l, "image "))
		case strings.HasPrefix(l, "snapshot "):
			snaps = append(snaps, strings.TrimPrefix(l, "snapshot "))
		}
	}
	return images, snaps
}

// Cancelling CreateImage at each of its API calls (the call reaches moto,
// then the context ends) leaves nothing that was not returned: an image that
// exists was handed back with the error, a retry with the same token adopts
// it, and deleting it leaves no snapshot behind. The image and its snapshots
// are tagged at creation: no CreateTags call, so no untagged window.
func TestCreateImageCancelledAtEveryStep(t *testing.T) {
	steps := []struct {
		action string
		n      int
	}{
		{"DescribeImages", 1},    // token lookup
		{"DescribeInstances", 1}, // source machine
		{"CreateImage", 1},
		{"DescribeImages", 2}, // read-back of the new image
	}
	for _, st := range steps {
		t.Run(fmt.Sprintf("%s#%d", st.action, st.n), func(t *testing.T) {
			e := newEnv(t)
			m := newMachine(t, e, "cbx_abcabcabcabc")
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			fired := cancelAt(e, st.action, st.n, cancel)
			req := imageReq(m, "openclaw-crabbox-cancel-20260101-0000", "tok-cancel")
			img, err := e.d.CreateImage(ctx, req)
			if !*fired {
				t.Fatalf("CreateImage made no call %s #%d", st.action, st.n)
			}
			if err == nil {
				t.Fatalf("CreateImage succeeded after cancellation: %+v", img)
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
			if n := e.faults.Calls("CreateTags"); n != 0 {
				t.Errorf("CreateImage made %d CreateTags calls: tags must be set at creation", n)
			}
			images, _ := ownedImages(t, e)
			switch {
			case len(images) > 1:
				t.Fatalf("images in moto = %v: a cancelled create made more than one", images)
			case len(images) == 1 && (img == nil || img.ID != images[0]):
				t.Fatalf("image %s exists but CreateImage returned %+v with %v: it would leak", images[0], img, err)
			case len(images) == 0 && img != nil:
				t.Errorf("CreateImage returned %+v, which does not exist", img)
			}
			if img != nil && (img.Name != req.Name || img.Labels[awsec2.TagCreateToken] != req.Token) {
				t.Errorf("returned image = %+v; want its name and token label", img)
			}
			// The caller retries with the same token: the image is adopted,
			// not made twice.
			again, err := e.d.CreateImage(t.Context(), req)
			if err != nil {
				t.Fatalf("retry: %v", err)
			}
			if img != nil && again.ID != img.ID {
				t.Errorf("retry made %s, want %s adopted", again.ID, img.ID)
			}
			if images, _ := ownedImages(t, e); len(images) != 1 {
				t.Errorf("images after the retry = %v, want 1", images)
			}
			waitImage(t, e, again.ID)
			if err := e.d.DeleteImage(t.Context(), again.ID); err != nil {
				t.Fatal(err)
			}
			if err := e.d.DeleteMachine(t.Context(), m.ID); err != nil {
				t.Fatal(err)
			}
			if images, snaps := ownedImages(t, e); len(images)+len(snaps) != 0 {
				t.Errorf("after deleting the returned image: images %v, snapshots %v", images, snaps)
			}
			e.expectClean()
		})
	}
}
