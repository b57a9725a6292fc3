package awsec2_test

// Tests of usage.go: ImagesUsage answers as ImageUsage does for each id,
// with DescribeImageReferences (10 ids a call, a vanished id reported, not
// fatal) and, when that is refused, with one scan for the whole batch.

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider"
)

func TestImagesUsageEqualsImageUsage(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_5a0500000013")
	var ids []string
	for i := range 12 {
		img := madeImage(t, e, m, fmt.Sprintf("openclaw-crabbox-batch-20260101-%04d", i), fmt.Sprintf("tok-batch-%d", i))
		ids = append(ids, img.ID)
	}
	// ids[3] in a launch template, ids[11] (in the second batch of 10)
	// booted by a live instance, ids[5] deregistered.
	if _, err := e.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("batch-user"),
		LaunchTemplateData: &types.RequestLaunchTemplateData{ImageId: aws.String(ids[3])}}); err != nil {
		t.Fatal(err)
	}
	user, err := e.d.CreateMachine(ctx, provider.CreateMachineRequest{Token: "cbx_5a0500000014", Image: ids[11], Type: "t3.small",
		Labels: map[string]string{"crabbox-lease": "cbx_5a0500000014"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.d.DeleteMachine(t.Context(), user.ID) })
	if _, err := e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(ids[5])}); err != nil {
		t.Fatal(err)
	}
	check := func(how string, maxRefCalls int) {
		t.Helper()
		before := e.faults.Calls("DescribeImageReferences")
		got, err := e.d.ImagesUsage(ctx, ids)
		if err != nil {
			t.Fatalf("ImagesUsage (%s): %v", how, err)
		}
		if n := e.faults.Calls("DescribeImageReferences") - before; n > maxRefCalls {
			t.Errorf("ImagesUsage (%s) over %d ids made %d DescribeImageReferences calls, want at most %d", how, len(ids), n, maxRefCalls)
		}
		for _, id := range ids {
			refs, err := e.d.ImageUsage(ctx, id)
			u, ok := got[id]
			switch {
			case !ok:
				t.Errorf("ImagesUsage (%s) has no entry for %s", how, id)
			case (err == nil) != (u.Err == nil) || errors.Is(err, provider.ErrNotFound) != errors.Is(u.Err, provider.ErrNotFound):
				t.Errorf("ImagesUsage (%s) entry of %s has error %v; ImageUsage: %v", how, id, u.Err, err)
			case !slices.Equal(refs, u.Refs):
				t.Errorf("ImagesUsage (%s) entry of %s = %q; ImageUsage = %q", how, id, u.Refs, refs)
			}
		}
		if len(got[ids[3]].Refs) != 1 || len(got[ids[11]].Refs) != 1 {
			t.Errorf("ImagesUsage (%s): template user %q, instance user %q; want one reference each", how, got[ids[3]].Refs, got[ids[11]].Refs)
		}
	}
	// Two batches; the first names the deregistered image: refused, then
	// asked again without it.
	check("DescribeImageReferences", 3)
	e.faults.Add(moto.Fault{Action: "DescribeImageReferences", Times: 1 << 20, Code: "UnauthorizedOperation", Status: 403})
	before := e.faults.Calls("DescribeLaunchTemplates")
	check("scan fallback", 1<<20)
	// One scan for the 12 images (the single lookups after it scan once
	// each).
	if n := e.faults.Calls("DescribeLaunchTemplates") - before; n != 1+len(ids) {
		t.Errorf("DescribeLaunchTemplates calls = %d, want 1 for the batch + %d single lookups", n, len(ids))
	}
	e.faults.Clear()
}
