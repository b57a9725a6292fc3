// End-to-end cleanup tests on moto through the crabbox client: Promote
// racing Apply (forced and free-running rounds), and in-use detection when
// DescribeImageReferences is refused (SSM image parameters, and an image
// whose use cannot be read at all).

package awsec2_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

// hookedDriver is the AWS driver with a hook run before (and after) chosen
// calls, to force an interleaving there.
type hookedDriver struct {
	*awsec2.Driver
	mu   sync.Mutex
	hook map[string]func(id string) // "get", "usage", "delete", "deleted"
}

func (h *hookedDriver) set(call string, f func(string)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hook == nil {
		h.hook = map[string]func(string){}
	}
	h.hook[call] = f
}

func (h *hookedDriver) run(call, id string) {
	h.mu.Lock()
	f := h.hook[call]
	h.mu.Unlock()
	if f != nil {
		f(id)
	}
}

func (h *hookedDriver) GetImage(ctx context.Context, id string) (*provider.Image, error) {
	h.run("get", id)
	return h.Driver.GetImage(ctx, id)
}

func (h *hookedDriver) ImageUsage(ctx context.Context, id string) ([]string, error) {
	h.run("usage", id)
	return h.Driver.ImageUsage(ctx, id)
}

func (h *hookedDriver) DeleteImage(ctx context.Context, id string) error {
	h.run("delete", id)
	err := h.Driver.DeleteImage(ctx, id)
	h.run("deleted", id)
	return err
}

// cleanupEnv has a machine to image, an operator client and a planner a
// week later on the hooked driver.
type cleanupEnv struct {
	*env
	m       *provider.Machine
	hooked  *hookedDriver
	c       *crabbox.Client
	planner *crabbox.Client
	n       int
}

func newCleanupEnv(t *testing.T, opts ...awsec2.Option) *cleanupEnv {
	e := &cleanupEnv{env: newEnv(t, opts...)}
	e.m = newMachine(t, e.env, "cbx_c1ea00000001")
	e.hooked = &hookedDriver{Driver: e.d}
	e.c = e.client(t, e.d, 0)
	e.planner = e.client(t, e.hooked, 7*24*time.Hour)
	return e
}

// client is a crabbox client on d whose clock runs ahead by ahead.
func (e *cleanupEnv) client(t *testing.T, d provider.Driver, ahead time.Duration) *crabbox.Client {
	t.Helper()
	c, err := crabbox.New(d, crabbox.WithStateDir(t.TempDir()), crabbox.WithOperator("tester"),
		crabbox.WithClock(func() time.Time { return time.Now().Add(ahead) }),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// image makes an available candidate image carrying crabbox's labels.
func (e *cleanupEnv) image(t *testing.T) *provider.Image {
	t.Helper()
	e.n++
	req := imageReq(e.m, imageName(t, fmt.Sprintf("race%d", e.n), time.Now()), fmt.Sprintf("tok-race-%d", e.n))
	req.Labels[crabbox.LabelCreatedBy] = "crabbox"
	img, err := e.d.CreateImage(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	return waitImage(t, e.env, img.ID)
}

func (e *cleanupEnv) plan(t *testing.T) *crabbox.CleanupPlan {
	t.Helper()
	plan, err := e.planner.PlanCleanup(t.Context(), crabbox.CleanupPolicy{})
	if err != nil {
		t.Fatalf("PlanCleanup: %v", err)
	}
	return plan
}

func item(t *testing.T, plan *crabbox.CleanupPlan, id string) crabbox.CleanupItem {
	t.Helper()
	for _, it := range plan.Items {
		if it.Image.ID == id {
			return it
		}
	}
	t.Fatalf("plan has no item for %s", id)
	return crabbox.CleanupItem{}
}

// serving returns the image the default channel points at, failing when
// that image no longer exists.
func (e *cleanupEnv) serving(t *testing.T, round int) string {
	t.Helper()
	cur, err := e.d.CurrentChannel(t.Context(), crabbox.DefaultChannel)
	if err != nil {
		t.Fatalf("round %d: CurrentChannel: %v", round, err)
	}
	if _, err := e.d.GetImage(t.Context(), cur.ImageID); err != nil {
		t.Fatalf("round %d: the channel points at %s, which is gone: %v", round, cur.ImageID, err)
	}
	return cur.ImageID
}

// drop deletes an image a round left behind (lifting its protection).
func (e *cleanupEnv) drop(t *testing.T, id string) {
	t.Helper()
	if err := e.d.ProtectImage(t.Context(), id, false); err != nil && !strings.Contains(err.Error(), "not found") {
		t.Fatal(err)
	}
	if err := e.d.DeleteImage(t.Context(), id); err != nil {
		t.Fatal(err)
	}
}

// TestPromoteRacingApplyOnMoto: Promote of the image Apply is about to
// delete, forced at each point of Apply's re-check and right after the
// deletion (52 rounds), then both free-running (50 rounds). The channel
// never points at a deregistered AMI; a promotion that protected the image
// before the deletion makes Apply report it kept, not failed.
func TestPromoteRacingApplyOnMoto(t *testing.T) {
	e := newCleanupEnv(t)
	ctx := t.Context()
	first := e.image(t)
	if _, err := e.c.Promote(ctx, first.ID, crabbox.Force("race fixture")); err != nil {
		t.Fatal(err)
	}
	points := []string{"get", "usage", "delete", "deleted"}
	const forced, free = 52, 50
	for round := 0; round < forced+free; round++ {
		img := e.image(t)
		plan := e.plan(t)
		if it := item(t, plan, img.ID); it.Action != crabbox.ActionDelete {
			t.Fatalf("round %d: %s planned %s (%s), want delete", round, img.ID, it.Action, it.Reason)
		}
		before := e.serving(t, round)
		var res *crabbox.CleanupResult
		var applyErr, promoteErr error
		if round < forced {
			point := points[round%len(points)]
			var once sync.Once
			e.hooked.set(point, func(id string) {
				if id == img.ID {
					once.Do(func() { _, promoteErr = e.c.Promote(ctx, img.ID, crabbox.Force("race")) })
				}
			})
			res, applyErr = plan.Apply(ctx)
			e.hooked.set(point, nil)
			if point == "deleted" && promoteErr == nil {
				t.Errorf("round %d: promoting a deregistered image succeeded", round)
			}
			if point != "deleted" && promoteErr != nil {
				t.Errorf("round %d (%s): Promote: %v", round, point, promoteErr)
			}
		} else {
			start := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); <-start; res, applyErr = plan.Apply(ctx) }()
			go func() { defer wg.Done(); <-start; _, promoteErr = e.c.Promote(ctx, img.ID, crabbox.Force("race")) }()
			close(start)
			wg.Wait()
		}
		if applyErr != nil || len(res.Failed) > 0 {
			t.Fatalf("round %d: Apply: %v, %+v", round, applyErr, res)
		}
		now := e.serving(t, round)
		switch {
		case promoteErr == nil:
			if now != img.ID || len(res.Skipped) != 1 || res.Outcomes[0].Result != crabbox.ResultKept {
				t.Fatalf("round %d: promoted %s, channel at %s, Apply %+v: want it kept and served", round, img.ID, now, res)
			}
			e.drop(t, before)
		case len(res.Deleted) != 1:
			t.Fatalf("round %d: Promote failed (%v) but Apply did not delete: %+v", round, promoteErr, res)
		}
	}
}

// An image referenced only by an SSM parameter of data type aws:ec2:image
// is found in use when DescribeImageReferences is refused, and cleanup keeps
// it; when neither DescribeImageReferences nor the scan can answer, the
// image is kept with that reason, never deleted.
func TestCleanupKeepsImageParameterWithReferencesRefused(t *testing.T) {
	e := newCleanupEnv(t)
	ctx := t.Context()
	img := e.image(t)
	if _, err := e.ssm.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/app/golden-ami"), Value: aws.String(img.ID),
		Type: ssmtypes.ParameterTypeString, DataType: aws.String("aws:ec2:image")}); err != nil {
		t.Fatal(err)
	}
	refuse := func(action string) {
		e.faults.Add(moto.Fault{Action: action, Times: 1 << 20, Code: "UnauthorizedOperation", Status: 403})
	}
	refuse("DescribeImageReferences")
	refs, err := e.d.ImageUsage(ctx, img.ID)
	if err != nil || len(refs) != 1 || refs[0] != "ssm:Parameter /app/golden-ami" {
		t.Fatalf("ImageUsage with references refused = %q, %v; want the SSM parameter", refs, err)
	}
	if it := item(t, e.plan(t), img.ID); it.Action != crabbox.ActionKeep || !strings.Contains(it.Reason, "ssm:Parameter /app/golden-ami") {
		t.Errorf("image named by an SSM parameter: %+v, want keep because the parameter uses it", it)
	}

	// Neither path can answer (the scan cannot read parameter values):
	// kept, with the reason.
	refuse("GetParameters")
	plan := e.plan(t)
	if it := item(t, plan, img.ID); it.Action != crabbox.ActionKeep || !strings.Contains(it.Reason, "use unknown") {
		t.Errorf("image of unknown use: %+v, want keep because its use is unknown", it)
	}
	if plan.Deletes != 0 {
		t.Errorf("plan deletes %d images while no use can be read", plan.Deletes)
	}
	e.faults.Clear()
	if _, err := e.ssm.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String("/app/golden-ami")}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
}

// ListChannels lists the channel parameters directly under the prefix, and
// nothing else.
func TestListChannels(t *testing.T) {
	e := newCleanupEnv(t)
	ctx := t.Context()
	img := e.image(t)
	for _, ch := range []string{"beta", "default"} {
		if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: ch, ImageID: img.ID, IfVersion: -1}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"/crabbox/other", "/crabbox/images/nested/x"} {
		if _, err := e.ssm.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String("x"),
			Type: ssmtypes.ParameterTypeString}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.d.ListChannels(ctx)
	if err != nil || strings.Join(got, ",") != "beta,default" {
		t.Errorf("ListChannels = %q, %v; want [beta default]", got, err)
	}
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
}

// Two images share a snapshot; one of them stays promoted. The plan counts
// the shared snapshot as not freed; Apply deletes the other image, reports
// the snapshot kept because shared, and never retries deleting it.
func TestCleanupSharedSnapshots(t *testing.T) {
	e := newCleanupEnv(t)
	ctx := t.Context()
	old := e.image(t)
	setTag := func(v string) {
		t.Helper()
		tag := []types.Tag{{Key: aws.String(moto.TagImageShareSnapshot), Value: aws.String(v)}}
		var err error
		if v == "" {
			_, err = e.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{e.m.ID}, Tags: []types.Tag{{Key: tag[0].Key}}})
		} else {
			_, err = e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{e.m.ID}, Tags: tag})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	setTag(old.ID)
	sibling := e.image(t)
	setTag("")
	alone := e.image(t)
	if len(old.Snapshots) != 1 || len(sibling.Snapshots) != 1 || old.Snapshots[0].ID != sibling.Snapshots[0].ID {
		t.Fatalf("snapshots not shared: %v, %v", old.Snapshots, sibling.Snapshots)
	}
	shared := old.Snapshots[0].ID
	if _, err := e.c.Promote(ctx, sibling.ID, crabbox.Force("keeps the shared snapshot")); err != nil {
		t.Fatal(err)
	}
	plan := e.plan(t)
	if plan.Deletes != 2 || plan.SnapshotsFreed != 1 {
		t.Errorf("plan deletes %d images freeing %d snapshots, want 2 freeing 1 (the shared one stays)", plan.Deletes, plan.SnapshotsFreed)
	}
	if it := item(t, plan, old.ID); len(it.SharedSnapshots) != 1 || it.SharedSnapshots[0] != shared || !strings.Contains(it.Reason, "shared with "+sibling.ID) {
		t.Errorf("plan item of %s: %+v, want its snapshot %s shared with %s", old.ID, it, shared, sibling.ID)
	}
	before := e.faults.Calls("DeleteSnapshot")
	listings := &listingCounter{}
	e.faults.Base = listings
	res, err := plan.Apply(ctx)
	e.faults.Base = nil
	if err != nil || len(res.Deleted) != 2 || len(res.Failed) != 0 {
		t.Fatalf("Apply = %+v, %v; want both deleted", res, err)
	}
	// Which images share a snapshot is asked of the snapshots themselves
	// (DescribeImages' block-device-mapping.snapshot-id filter): at most one
	// listing of the whole account per Apply, never one per deletion.
	if n := listings.full.Load(); n > 1 {
		t.Errorf("Apply of 2 images listed every image of the account %d times, want at most once", n)
	}
	for _, o := range res.Outcomes {
		want := []string(nil)
		if o.ImageID == old.ID {
			want = []string{shared}
		}
		if o.Result != crabbox.ResultDeleted || strings.Join(o.SnapshotsKept, ",") != strings.Join(want, ",") {
			t.Errorf("outcome %+v, want deleted keeping snapshots %v", o, want)
		}
	}
	// Only alone's own snapshot is deleted: refused once as in use right
	// after its image's deregistration (moto's default, as on AWS), then
	// deleted. The shared one is never attempted.
	if n := e.faults.Calls("DeleteSnapshot") - before; n != 2 {
		t.Errorf("DeleteSnapshot called %d times, want 2 (%s's own snapshot, one retry; the shared one never)", n, alone.ID)
	}
	if _, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{shared}}); err != nil {
		t.Errorf("shared snapshot %s: %v", shared, err)
	}
	e.drop(t, sibling.ID)
}

// listingCounter is a transport counting the DescribeImages calls that
// list the whole account (no image id, no filter).
type listingCounter struct{ full atomic.Int64 }

func (l *listingCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Header.Get("X-Amz-Target") == "" {
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		if form, err := url.ParseQuery(string(body)); err == nil && form.Get("Action") == "DescribeImages" {
			narrowed := false
			for k := range form {
				if strings.HasPrefix(k, "ImageId.") || strings.HasPrefix(k, "Filter.") {
					narrowed = true
				}
			}
			if !narrowed {
				l.full.Add(1)
			}
		}
	}
	return http.DefaultTransport.RoundTrip(req)
}

// The launcher's DescribeImages filter block-device-mapping.snapshot-id, on
// which DeleteImage relies to find the images sharing a snapshot, follows
// AWS: an image matches when any of its snapshots is any of the values.
func TestDescribeImagesSnapshotFilter(t *testing.T) {
	e := newCleanupEnv(t)
	ctx := t.Context()
	old := e.image(t)
	tag := types.Tag{Key: aws.String(moto.TagImageShareSnapshot), Value: aws.String(old.ID)}
	if _, err := e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{e.m.ID}, Tags: []types.Tag{tag}}); err != nil {
		t.Fatal(err)
	}
	sibling := e.image(t)
	if _, err := e.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{e.m.ID}, Tags: []types.Tag{{Key: tag.Key}}}); err != nil {
		t.Fatal(err)
	}
	alone := e.image(t)
	shared, own := old.Snapshots[0].ID, alone.Snapshots[0].ID
	for _, tc := range []struct {
		values []string
		want   []string
	}{
		{[]string{shared}, []string{old.ID, sibling.ID}},
		{[]string{own}, []string{alone.ID}},
		{[]string{shared, own}, []string{old.ID, sibling.ID, alone.ID}},
		{[]string{"snap-0000000000000000f"}, nil},
	} {
		out, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"},
			Filters: []types.Filter{{Name: aws.String("block-device-mapping.snapshot-id"), Values: tc.values}}})
		if err != nil {
			t.Fatalf("DescribeImages %v: %v", tc.values, err)
		}
		var got []string
		for _, im := range out.Images {
			got = append(got, aws.ToString(im.ImageId))
		}
		sort.Strings(got)
		want := append([]string(nil), tc.want...)
		sort.Strings(want)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("images with snapshots %v = %v, want %v", tc.values, got, want)
		}
	}
}

// An image none of whose snapshots crabbox owns (here: the snapshot lost
// its ownership tag) is deregistered without asking which images share
// snapshots at all: no listing of the account, and the snapshot stays.
func TestDeleteImageWithoutOwnedSnapshotsListsNothing(t *testing.T) {
	e := newCleanupEnv(t)
	ctx := t.Context()
	img := e.image(t)
	snap := img.Snapshots[0].ID
	if _, err := e.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{snap},
		Tags: []types.Tag{{Key: aws.String(awsec2.TagManaged)}}}); err != nil {
		t.Fatal(err)
	}
	listings := &listingCounter{}
	e.faults.Base = listings
	err := e.d.DeleteImage(ctx, img.ID)
	e.faults.Base = nil
	if err != nil {
		t.Fatalf("DeleteImage: %v", err)
	}
	if n := listings.full.Load(); n != 0 {
		t.Errorf("DeleteImage listed every image of the account %d times, want 0", n)
	}
	if _, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}}); err != nil {
		t.Errorf("the unowned snapshot %s: %v", snap, err)
	}
}
