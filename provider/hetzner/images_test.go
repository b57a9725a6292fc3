// Tests of images.go: snapshots.

package hetzner_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

func TestImages(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{ImageSizeGB: 3.25}, 0)
	ctx := context.Background()
	m := e.runningMachine(t, "cbx_0123456789ab")
	req := provider.CreateImageRequest{
		MachineID: m.ID, Name: "openclaw-crabbox-linux-desktop-20260506-0235", Token: "img_1",
		Labels: map[string]string{"crabbox-source-lease": "cbx_0123456789ab", "crabbox-status": "candidate"},
	}
	im, err := e.d.CreateImage(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// CreateImage waited for the create_image action.
	if im.State != provider.ImageAvailable || im.Name != req.Name || im.SizeGiB != 3.25 {
		t.Fatalf("new image = %+v", im)
	}
	// A retried create with the same token adopts the first image.
	again, err := e.d.CreateImage(ctx, req)
	if err != nil || again.ID != im.ID || e.fake.State().Images != 1 {
		t.Fatalf("retried CreateImage = %+v, %v (images %d)", again, err, e.fake.State().Images)
	}
	got := e.waitImage(t, im.ID)
	if got.SizeGiB != 3.25 || len(got.Snapshots) != 1 || got.Snapshots[0].SizeGiB != 3.25 || got.Arch != "amd64" {
		t.Fatalf("available image = %+v", got)
	}
	if got.Labels["crabbox-status"] != "candidate" || got.Labels["created-by"] != "crabbox" || got.Labels[hetzner.LabelToken] != "img_1" {
		t.Fatalf("labels = %v", got.Labels)
	}
	// ListImages: snapshots only, by label.
	list, err := e.d.ListImages(ctx, nil)
	if err != nil || len(list) != 1 || list[0].ID != im.ID {
		t.Fatalf("ListImages(nil) = %v, %v; want only the snapshot (no system images)", list, err)
	}
	list, err = e.d.ListImages(ctx, map[string]string{"crabbox-status": "known-good"})
	if err != nil || len(list) != 0 {
		t.Fatalf("ListImages(known-good) = %v, %v", list, err)
	}
	// Protection makes delete fail with ErrConflict.
	if err := e.d.ProtectImage(ctx, im.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteImage(ctx, im.ID); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("delete protected: %v", err)
	}
	if err := e.d.ProtectImage(ctx, im.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteImage(ctx, im.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.GetImage(ctx, im.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("get deleted image: %v", err)
	}
	if _, ok := any(e.d).(provider.Deprecator); ok {
		t.Fatal("the driver claims Deprecator, but Hetzner cannot deprecate snapshots")
	}
}

func TestAmbiguousCreateImageAdoptsOnce(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	m := e.runningMachine(t, "cbx_0123456789ab")
	e.fake.InjectFault(hcloudfake.Fault{Path: "/servers/*/actions/create_image", Code: "service_error", After: true})
	im, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-0000", Token: "tok1"})
	if err != nil || im == nil {
		t.Fatalf("CreateImage after an ambiguous 503 = %v, %v; want the adopted image", im, err)
	}
	if n := len(e.fake.Images()); n != 1 {
		t.Fatalf("%d images, want exactly 1", n)
	}
	// A definite failure is returned as is, and creates nothing.
	e.fake.InjectFault(hcloudfake.Fault{Path: "/servers/*/actions/create_image", Code: "forbidden"})
	if _, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-0001", Token: "tok2"}); !errors.Is(err, provider.ErrPermission) {
		t.Fatalf("forbidden create: %v", err)
	}
	if n := len(e.fake.Images()); n != 1 {
		t.Fatalf("%d images after a refused create, want 1", n)
	}
}

func TestCreateImageRetriedInsideHcloudGo(t *testing.T) {
	// hcloud-go retries a request that failed with "timeout". When the first
	// attempt landed, the retry is refused as locked (the snapshot runs):
	// a definite-looking error that hides a created image. The driver looks
	// the image up by its token on every failure and adopts it.
	e := newEnv(t, hcloudfake.Options{}, 3)
	ctx := context.Background()
	m := e.runningMachine(t, "cbx_0123456789ab")
	e.fake.InjectFault(hcloudfake.Fault{Path: "/servers/*/actions/create_image", Code: "timeout", After: true})
	im, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-0000", Token: "tok1"})
	if err != nil || im == nil {
		t.Fatalf("CreateImage = %+v, %v; want the image the first attempt made", im, err)
	}
	if ims := e.fake.Images(); len(ims) != 1 || ims[0].ID != mustID(t, im.ID) {
		t.Fatalf("fake images = %+v", ims)
	}
}

func TestCreateImageAdoptsOldestAndDropsDuplicates(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	var ids []int64
	for _, tok := range []string{"cbx_00000000000a", "cbx_00000000000b"} {
		m := e.runningMachine(t, tok)
		res, _, err := e.client.Server.CreateImage(ctx, &hcloud.Server{ID: mustID(t, m.ID)}, &hcloud.ServerCreateImageOpts{
			Type: hcloud.ImageTypeSnapshot, Labels: map[string]string{hetzner.LabelToken: "dup"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.Image.ID)
	}
	m := e.runningMachine(t, "cbx_00000000000c")
	im, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "x-y-z-20260101-0000", Token: "dup"})
	if err != nil || mustID(t, im.ID) != ids[0] {
		t.Fatalf("CreateImage = %+v, %v; want the oldest image %d", im, err, ids[0])
	}
	if ims := e.fake.Images(); len(ims) != 1 || ims[0].ID != ids[0] {
		t.Fatalf("images = %+v, want only %d", ims, ids[0])
	}
}

func TestCancelDuringCreateImageHandsImageBack(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fo hcloudfake.Options
	fo.AfterRequest = func(r *http.Request, status int) {
		if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/actions/create_image") {
			cancel()
			select { // let the client see the cancellation before answering
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
	e := newEnv(t, fo, 0)
	m := e.runningMachine(t, "cbx_0123456789ab")
	im, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-0000", Token: "tok1"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if im == nil {
		t.Fatalf("the snapshot created before the cancellation was not handed back (fake holds %d images)", len(e.fake.Images()))
	}
	// The caller cleans up with what it got: nothing is left.
	if err := e.d.DeleteImage(context.Background(), im.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(context.Background(), m.ID); err != nil {
		t.Fatal(err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.Images != 0 || st.SSHKeys != 0 {
		t.Fatalf("left %+v", st)
	}
}
