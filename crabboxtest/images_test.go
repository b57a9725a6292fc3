// Tests of images.go.

package crabboxtest

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/provider"
)

func TestImageRoundTrip(t *testing.T) {
	c := Start(t, WithImagePendingPolls(2))
	ctx := ctxT(t)
	la := newLease(t, nil)
	a := boot(t, c, la)
	cla := dial(t, a.Machine, la)
	mustRun(t, cla, `mkdir -p "$CRABBOX_FS_ROOT/opt/app" && echo baked > "$CRABBOX_FS_ROOT/opt/app/marker" && ln -s marker "$CRABBOX_FS_ROOT/opt/app/link"`)

	img, err := c.CreateImage(ctx, provider.CreateImageRequest{
		MachineID: a.ID, Name: "owner-product-test-20260101-0000",
		Labels: map[string]string{"crabbox": "true"}, Token: "tok-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if img.State != provider.ImagePending || !strings.HasPrefix(img.ID, "img-") ||
		len(img.Snapshots) != 1 || !strings.HasPrefix(img.Snapshots[0].ID, "snap-") || img.SizeGiB <= 0 {
		t.Fatalf("new image: %+v", img)
	}
	again, err := c.CreateImage(ctx, provider.CreateImageRequest{MachineID: a.ID, Name: "other-name", Token: "tok-1"})
	if err != nil || again.ID != img.ID {
		t.Fatalf("retried CreateImage with the same token: %+v, %v: want image %s", again, err, img.ID)
	}
	if _, err := c.CreateImage(ctx, provider.CreateImageRequest{MachineID: a.ID, Name: img.Name}); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("CreateImage with a taken name: %v, want ErrConflict", err)
	}
	if _, err := c.CreateMachine(ctx, provider.CreateMachineRequest{Image: img.ID, Type: "local-small-a", UserData: la.ud}); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("CreateMachine from a pending image: %v, want ErrConflict", err)
	}
	var states []provider.ImageState
	for i := 0; i < 3; i++ {
		got, err := c.GetImage(ctx, img.ID)
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, got.State)
	}
	if want := []provider.ImageState{provider.ImagePending, provider.ImagePending, provider.ImageAvailable}; !slices.Equal(states, want) {
		t.Fatalf("image states over polls = %v, want %v", states, want)
	}
	if c.ImageCount() != 1 {
		t.Fatalf("ImageCount = %d, want 1", c.ImageCount())
	}

	lb := newLease(t, nil)
	req := lb.request(nil)
	req.Image = img.ID
	b, err := c.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if b.Image != img.ID {
		t.Errorf("machine B image = %q", b.Image)
	}
	clb := dial(t, b, lb)
	if out := mustRun(t, clb, `cat "$CRABBOX_FS_ROOT/opt/app/marker" "$CRABBOX_FS_ROOT/opt/app/link"`); out != "baked\nbaked\n" {
		t.Fatalf("machine B sees %q, want the file baked on machine A", out)
	}
	// B's boot wrote its own lease over A's.
	env, err := os.ReadFile(filepath.Join(running(t, c, b).FSRoot, cloudinit.LeaseEnvFile))
	if err != nil || !strings.Contains(string(env), lb.cfg.LeaseID) {
		t.Errorf("machine B lease env = %q, %v", env, err)
	}

	// Protected images refuse deletion; deletion removes the tree.
	if err := c.ProtectImage(ctx, img.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteImage(ctx, img.ID); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("delete protected: %v", err)
	}
	if err := c.ProtectImage(ctx, img.ID, false); err != nil {
		t.Fatal(err)
	}
	imgDir := filepath.Join(c.Dir(), "images", img.ID)
	if err := c.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(imgDir); !os.IsNotExist(err) {
		t.Errorf("image dir still there: %v", err)
	}
	if err := c.DeleteImage(ctx, img.ID); err != nil {
		t.Errorf("second delete: %v", err)
	}
	if _, err := c.GetImage(ctx, img.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("GetImage after delete: %v", err)
	}
	if c.ImageCount() != 0 {
		t.Errorf("ImageCount = %d after delete", c.ImageCount())
	}
}

func TestImageFailed(t *testing.T) {
	c := Start(t)
	ctx := ctxT(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	c.FailNextImage("disk on fire")
	img, err := c.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "failing"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetImage(ctx, img.ID)
	if err != nil || got.State != provider.ImagePending {
		t.Fatalf("first poll: %+v, %v", got, err)
	}
	got, err = c.GetImage(ctx, img.ID)
	if err != nil || got.State != provider.ImageFailed || got.StateReason != "disk on fire" {
		t.Fatalf("second poll: %+v, %v: want failed with the reason", got, err)
	}
	req := l.request(nil)
	req.Image = img.ID
	if _, err := c.CreateMachine(ctx, req); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Fatalf("CreateMachine from a failed image: %v", err)
	}
	// Only the next image fails.
	ok, err := c.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "fine"})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.GetImage(ctx, ok.ID)
	if got, err := c.GetImage(ctx, ok.ID); err != nil || got.State != provider.ImageAvailable {
		t.Fatalf("image after the failed one: %+v, %v", got, err)
	}
	if _, err := c.CreateImage(ctx, provider.CreateImageRequest{MachineID: "m-missing", Name: "x"}); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("CreateImage of a missing machine: %v", err)
	}
}

func TestBaseImage(t *testing.T) {
	c := Start(t)
	ctx := ctxT(t)
	id, err := c.BaseImage(ctx, "amd64")
	if err != nil || id != BaseImageID {
		t.Fatalf("BaseImage = %q, %v", id, err)
	}
	im, err := c.GetImage(ctx, id)
	if err != nil || im.State != provider.ImageAvailable {
		t.Fatalf("GetImage(base): %+v, %v", im, err)
	}
	if _, ok := im.Labels["crabbox"]; ok {
		t.Error("the base image carries crabbox ownership labels")
	}
	all, err := c.ListImages(ctx, nil)
	if err != nil || len(all) != 1 || all[0].ID != BaseImageID {
		t.Fatalf("ListImages(nil) = %v, %v", all, err)
	}
	if err := c.DeleteImage(ctx, id); !errors.Is(err, provider.ErrPermission) {
		t.Errorf("DeleteImage(base) = %v, want ErrPermission", err)
	}
	if err := c.UpdateImageLabels(ctx, id, map[string]string{"crabbox": "true"}); !errors.Is(err, provider.ErrPermission) {
		t.Errorf("UpdateImageLabels(base) = %v, want ErrPermission", err)
	}
	if c.ImageCount() != 0 {
		t.Errorf("ImageCount counts the base image")
	}
}
