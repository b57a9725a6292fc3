// The UsageFinder subtest: ImageUsage reports a live machine booted from an
// image, and stops reporting it once the machine is deleted; a
// BatchUsageFinder's ImagesUsage answers as ImageUsage does for each id.

package providertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/crabbox/crabbox-go/provider"
)

func (s *suite) testUsageFinder(t *testing.T) {
	uf, ok := s.h.Driver.(provider.UsageFinder)
	if !ok {
		t.Skip("driver does not implement provider.UsageFinder")
	}
	ctx := t.Context()
	m := s.createMachine(t, "usage")
	running := s.waitRunning(t, m.ID)
	image := running.Image
	if image == "" {
		image = s.image(t)
	}
	refers := func(refs []string) bool {
		for _, r := range refs {
			if strings.Contains(r, m.ID) {
				return true
			}
		}
		return false
	}

	// A live machine booted from the image is a reference naming it.
	s.poll(t, fmt.Sprintf("ImageUsage(%s) to name machine %s, which booted from it", image, m.ID), func(ctx context.Context) (bool, string, error) {
		refs, err := uf.ImageUsage(ctx, image)
		if err != nil {
			return false, "", err
		}
		for _, r := range refs {
			if r == "" {
				return false, "", fmt.Errorf("ImageUsage(%s) = %q contains an empty reference", image, refs)
			}
		}
		return refers(refs), fmt.Sprintf("references %q", refs), nil
	})

	s.checkBatchUsage(t, uf, []string{image, missingID(image), image})

	// Once the machine is deleted, no reference names it.
	if err := s.h.Driver.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatalf("DeleteMachine(%s): %v", m.ID, err)
	}
	s.waitMachineGone(t, m.ID)
	s.poll(t, fmt.Sprintf("ImageUsage(%s) to stop naming deleted machine %s", image, m.ID), func(ctx context.Context) (bool, string, error) {
		refs, err := uf.ImageUsage(ctx, image)
		if err != nil {
			return false, "", err
		}
		return !refers(refs), fmt.Sprintf("references %q", refs), nil
	})

	// An image that never existed: ErrNotFound or no references, never an
	// error of another kind.
	missing := missingID(image)
	if refs, err := uf.ImageUsage(ctx, missing); err != nil && !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("ImageUsage(%q) of an image that never existed: %v: want ErrNotFound or no references", missing, err)
	} else if err == nil && len(refs) != 0 {
		t.Errorf("ImageUsage(%q) of an image that never existed = %q: want ErrNotFound or no references", missing, refs)
	}
	_, err := uf.ImageUsage(cancelledCtx(), image)
	checkCancelled(t, "ImageUsage", err)
}

// checkBatchUsage: where the driver is a provider.BatchUsageFinder, its
// answer for ids has an entry for every id, each equal to ImageUsage's
// (an error entry where ImageUsage errs, of the same code for not-found).
func (s *suite) checkBatchUsage(t *testing.T, uf provider.UsageFinder, ids []string) {
	t.Helper()
	bu, ok := uf.(provider.BatchUsageFinder)
	if !ok {
		return
	}
	ctx := t.Context()
	got, err := bu.ImagesUsage(ctx, ids)
	if err != nil {
		t.Errorf("ImagesUsage(%q): %v", ids, err)
		return
	}
	for _, id := range ids {
		u, ok := got[id]
		if !ok {
			t.Errorf("ImagesUsage(%q) has no entry for %s", ids, id)
			continue
		}
		refs, err := uf.ImageUsage(ctx, id)
		switch {
		case (err == nil) != (u.Err == nil) || errors.Is(err, provider.ErrNotFound) != errors.Is(u.Err, provider.ErrNotFound):
			t.Errorf("ImagesUsage entry of %s has error %v; ImageUsage returned %v", id, u.Err, err)
		case !slices.Equal(refs, u.Refs):
			t.Errorf("ImagesUsage entry of %s = %q; ImageUsage = %q", id, u.Refs, refs)
		}
	}
	_, err = bu.ImagesUsage(cancelledCtx(), ids)
	checkCancelled(t, "ImagesUsage", err)
}
