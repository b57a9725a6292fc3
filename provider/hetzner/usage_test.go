package hetzner_test

// Tests of usage.go: ImagesUsage answers as ImageUsage does for each id,
// from one snapshot listing and one server listing.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
)

func TestImagesUsageEqualsImageUsage(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	src := e.runningMachine(t, "cbx_0123456789ab")
	var ids []string
	for i := range 3 {
		im, err := e.d.CreateImage(ctx, provider.CreateImageRequest{
			MachineID: src.ID, Name: fmt.Sprintf("openclaw-crabbox-linux-20260506-023%d", i), Token: fmt.Sprintf("img_%d", i),
			Labels: map[string]string{"crabbox-status": "candidate"},
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, im.ID)
	}
	req := e.createReq(t, "cbx_0123456789ac", "cx22")
	req.Image = ids[1]
	user, err := e.d.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	e.waitRunning(t, user.ID)
	ids = append(ids, "999999", "not-a-number")

	before := e.fake.Requests()
	got, err := e.d.ImagesUsage(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	// One snapshot listing, one server listing, and a lookup of each of
	// the two ids the listing lacks (the non-number needs no request).
	if n := e.fake.Requests() - before; n > 3 {
		t.Errorf("ImagesUsage over %d ids made %d requests, want at most 3", len(ids), n)
	}
	for _, id := range ids {
		refs, err := e.d.ImageUsage(ctx, id)
		u, ok := got[id]
		switch {
		case !ok:
			t.Errorf("ImagesUsage has no entry for %s", id)
		case errors.Is(err, provider.ErrNotFound) != errors.Is(u.Err, provider.ErrNotFound) || (err == nil) != (u.Err == nil):
			t.Errorf("ImagesUsage[%s].Err = %v, ImageUsage error %v", id, u.Err, err)
		case !slices.Equal(refs, u.Refs):
			t.Errorf("ImagesUsage[%s] = %q, ImageUsage = %q", id, u.Refs, refs)
		}
	}
	if len(got[ids[1]].Refs) != 1 {
		t.Errorf("ImagesUsage[%s] = %q, want the server booted from it", ids[1], got[ids[1]].Refs)
	}
}
