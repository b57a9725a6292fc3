// The Images subtest and the capabilities it runs on the available test
// image (Protector, Deprecator, RegionCopier): images are made from a
// running machine, list and merge labels like machines, and go away when
// deleted.

package providertest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

func (s *suite) imageLabels() map[string]string {
	return map[string]string{LabelRun: s.runID, LabelRole: "image"}
}

// createImage creates an image from a fresh running machine and registers a
// cleanup that deletes it (and anything else carrying its labels), lifting
// protection first where the driver can.
func (s *suite) createImage(t *testing.T, imgs provider.Images) *provider.Image {
	t.Helper()
	labels := s.imageLabels()
	var created string
	t.Cleanup(func() {
		ctx, cancel := s.cleanupCtx()
		defer cancel()
		ids := map[string]bool{}
		if created != "" {
			ids[created] = true
		}
		list, err := imgs.ListImages(ctx, labels)
		if err != nil {
			t.Errorf("cleanup: ListImages(%v): %v", labels, err)
		}
		for _, img := range list {
			if img != nil && img.ID != "" {
				ids[img.ID] = true
			}
		}
		for id := range ids {
			if p, ok := imgs.(provider.Protector); ok {
				_ = p.ProtectImage(ctx, id, false) // best effort; the delete reports failure
			}
			if err := imgs.DeleteImage(ctx, id); err != nil {
				t.Errorf("cleanup: DeleteImage(%s): %v", id, err)
			}
		}
	})

	m := s.createMachine(t, "image-source")
	s.waitRunning(t, m.ID)

	name := "crabbox-conformance-" + s.runID
	req := provider.CreateImageRequest{
		MachineID:   m.ID,
		Name:        name,
		Description: "crabbox driver conformance test image",
		Labels:      maps.Clone(labels),
		NoReboot:    true,
		Token:       "img-" + s.runID,
	}
	img, err := imgs.CreateImage(t.Context(), req)
	if img != nil {
		created = img.ID
	}
	if err != nil {
		t.Fatalf("CreateImage(from machine %s): %v", m.ID, err)
	}
	if img == nil || img.ID == "" {
		t.Fatalf("CreateImage returned image %+v and no error: want an image with an id", img)
	}
	checkImageToken(t, imgs, req, img.ID)
	s.checkImageLostReply(t, imgs, req)

	var got *provider.Image
	s.poll(t, fmt.Sprintf("image %s to become available", img.ID), func(ctx context.Context) (bool, string, error) {
		im, err := imgs.GetImage(ctx, img.ID)
		if err != nil {
			return false, "", err
		}
		if im == nil {
			return false, "", errors.New("GetImage returned nil, nil")
		}
		seen := fmt.Sprintf("state %q", im.State)
		switch im.State {
		case provider.ImageFailed:
			return false, seen, fmt.Errorf("image %s failed: %q", img.ID, im.StateReason)
		case provider.ImageDeleted:
			return false, seen, fmt.Errorf("image %s was deleted while pending", img.ID)
		}
		got = im
		return im.State == provider.ImageAvailable, seen, nil
	})
	if got.ID != img.ID {
		t.Errorf("GetImage(%s).ID = %q", img.ID, got.ID)
	}
	if got.Name != name {
		t.Errorf("GetImage(%s).Name = %q: want %q", img.ID, got.Name, name)
	}
	return got
}

// testImages creates an image from a running machine, checks its labels,
// listing and label updates, runs the optional capabilities on it while it
// is available, then deletes it and checks the not-found contract.
func (s *suite) testImages(t *testing.T) {
	imgs, ok := s.h.Driver.(provider.Images)
	if !ok {
		t.Skip("driver does not implement provider.Images: the SDK reports image calls as unsupported")
	}
	labels := s.imageLabels()

	img := s.createImage(t, imgs)
	id := img.ID
	checkCreatedImage(t, img, labels)
	s.checkImageListing(t, imgs, id, labels)
	s.checkImageLabelUpdates(t, imgs, id, labels)

	// Optional capabilities, on the available image.
	s.run(t, SubtestProtector, func(t *testing.T) { s.testProtector(t, imgs, id) })
	s.run(t, SubtestDeprecator, func(t *testing.T) { s.testDeprecator(t, imgs, id) })
	s.run(t, SubtestRegionCopier, func(t *testing.T) { s.testRegionCopier(t, imgs, id) })

	s.checkImageDelete(t, imgs, id, labels)
	checkMissingImage(t, imgs, missingID(id))
}

// checkCreatedImage checks the image CreateImage made: it carries the
// labels it was created with and lists its backing snapshots.
func checkCreatedImage(t *testing.T, img *provider.Image, labels map[string]string) {
	id := img.ID
	if miss := missingLabels(img.Labels, labels); len(miss) > 0 {
		t.Errorf("image %s lacks the labels it was created with: %v", id, miss)
	}
	if len(img.Snapshots) == 0 {
		t.Errorf("image %s lists no backing snapshots", id)
	}
	for i, sn := range img.Snapshots {
		if sn.ID == "" {
			t.Errorf("image %s: snapshot %d has an empty id", id, i)
		}
	}
}

// checkImageListing checks that listing by labels finds exactly the image
// and that other labels find nothing.
func (s *suite) checkImageListing(t *testing.T, imgs provider.Images, id string, labels map[string]string) {
	ctx := t.Context()
	var listed []*provider.Image
	s.poll(t, fmt.Sprintf("ListImages(%v) to return image %s", labels, id), func(ctx context.Context) (bool, string, error) {
		list, err := imgs.ListImages(ctx, labels)
		if err != nil {
			return false, "", err
		}
		listed = list
		return containsImage(list, id), fmt.Sprintf("%d images: %v", len(list), imageIDs(list)), nil
	})
	if len(listed) != 1 {
		t.Errorf("ListImages(%v) = %v: want exactly image %s", labels, imageIDs(listed), id)
	}
	other := map[string]string{LabelRun: s.runID + "-other"}
	if list, err := imgs.ListImages(ctx, other); err != nil {
		t.Errorf("ListImages(%v): %v", other, err)
	} else if len(list) != 0 {
		t.Errorf("ListImages(%v) = %v: want none (the driver ignores the label filter?)", other, imageIDs(list))
	}
	partial := merged(labels, map[string]string{LabelExtra: "absent"})
	if list, err := imgs.ListImages(ctx, partial); err != nil {
		t.Errorf("ListImages(%v): %v", partial, err)
	} else if containsImage(list, id) {
		t.Errorf("ListImages(%v) returned image %s, which lacks %s: every label must match", partial, id, LabelExtra)
	}
}

// checkImageLabelUpdates checks that UpdateImageLabels merges, that an
// empty value removes, and that an image that never existed is not found.
func (s *suite) checkImageLabelUpdates(t *testing.T, imgs provider.Images, id string, labels map[string]string) {
	ctx := t.Context()
	add := map[string]string{LabelExtra: "one"}
	if err := imgs.UpdateImageLabels(ctx, id, add); err != nil {
		t.Fatalf("UpdateImageLabels(%s, %v): %v", id, add, err)
	}
	got := s.getImage(t, imgs, id)
	if miss := missingLabels(got.Labels, merged(labels, add)); len(miss) > 0 {
		t.Errorf("after UpdateImageLabels(%v), image %s labels %v lack %v (labels must merge)", add, id, got.Labels, miss)
	}
	remove := map[string]string{LabelExtra: ""}
	if err := imgs.UpdateImageLabels(ctx, id, remove); err != nil {
		t.Fatalf("UpdateImageLabels(%s, %v): %v", id, remove, err)
	}
	got = s.getImage(t, imgs, id)
	if v, ok := got.Labels[LabelExtra]; ok {
		t.Errorf("after UpdateImageLabels(%s=\"\"), image %s still has %s=%q: an empty value must remove the label", LabelExtra, id, LabelExtra, v)
	}
	if miss := missingLabels(got.Labels, labels); len(miss) > 0 {
		t.Errorf("after removing %s, image %s lost other labels: %v", LabelExtra, id, miss)
	}
	if err := imgs.UpdateImageLabels(ctx, missingID(id), add); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("UpdateImageLabels(%s) of an image that never existed: %v: want ErrNotFound", missingID(id), err)
	}
}

// checkImageDelete deletes the image and checks that it goes away, from
// GetImage and from ListImages, and that deleting again is fine.
func (s *suite) checkImageDelete(t *testing.T, imgs provider.Images, id string, labels map[string]string) {
	ctx := t.Context()
	if err := imgs.DeleteImage(ctx, id); err != nil {
		t.Fatalf("DeleteImage(%s): %v", id, err)
	}
	s.poll(t, fmt.Sprintf("GetImage(%s) to return ErrNotFound after DeleteImage", id), func(ctx context.Context) (bool, string, error) {
		im, err := imgs.GetImage(ctx, id)
		switch {
		case errors.Is(err, provider.ErrNotFound):
			return true, "ErrNotFound", nil
		case err != nil:
			return false, "", err
		case im == nil:
			return false, "", errors.New("GetImage returned nil, nil: want ErrNotFound")
		}
		return false, fmt.Sprintf("state %q", im.State), nil
	})
	if err := imgs.DeleteImage(ctx, id); err != nil {
		t.Errorf("DeleteImage(%s) a second time: %v: want nil (idempotent)", id, err)
	}
	s.poll(t, fmt.Sprintf("ListImages(%v) to drop deleted image %s", labels, id), func(ctx context.Context) (bool, string, error) {
		list, err := imgs.ListImages(ctx, labels)
		if err != nil {
			return false, "", err
		}
		return !containsImage(list, id), fmt.Sprintf("%d images: %v", len(list), imageIDs(list)), nil
	})
}

// checkMissingImage checks the not-found contract for an image id that
// never existed, and for "".
func checkMissingImage(t *testing.T, imgs provider.Images, missing string) {
	ctx := t.Context()
	if im, err := imgs.GetImage(ctx, missing); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("GetImage(%q) of an image that never existed = %+v, %v: want ErrNotFound", missing, im, err)
	}
	if err := imgs.DeleteImage(ctx, missing); err != nil {
		t.Errorf("DeleteImage(%q) of an image that never existed: %v: want nil", missing, err)
	}
	if im, err := imgs.GetImage(ctx, ""); !errors.Is(err, provider.ErrNotFound) && !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("GetImage(\"\") = %+v, %v: want ErrNotFound or ErrInvalidArgument", im, err)
	}
}

func (s *suite) getImage(t *testing.T, imgs provider.Images, id string) *provider.Image {
	t.Helper()
	im, err := imgs.GetImage(t.Context(), id)
	if err != nil {
		t.Fatalf("GetImage(%s): %v", id, err)
	}
	if im == nil {
		t.Fatalf("GetImage(%s) = nil, nil", id)
	}
	return im
}

func (s *suite) testProtector(t *testing.T, imgs provider.Images, id string) {
	p, ok := imgs.(provider.Protector)
	if !ok {
		t.Skip("driver does not implement provider.Protector")
	}
	ctx := t.Context()
	if err := p.ProtectImage(ctx, id, true); err != nil {
		t.Fatalf("ProtectImage(%s, true): %v", id, err)
	}
	// Whatever happens below, leave the image deletable.
	t.Cleanup(func() {
		ctx, cancel := s.cleanupCtx()
		defer cancel()
		_ = p.ProtectImage(ctx, id, false)
	})
	if im := s.getImage(t, imgs, id); !im.Protected {
		t.Errorf("after ProtectImage(%s, true), GetImage reports Protected=false", id)
	}
	if err := imgs.DeleteImage(ctx, id); !errors.Is(err, provider.ErrConflict) || provider.Retryable(err) {
		t.Errorf("DeleteImage(%s) of a protected image: %v: want it refused with ErrConflict (and nothing retryable)", id, err)
	}
	im, err := imgs.GetImage(ctx, id)
	switch {
	case err != nil:
		t.Fatalf("GetImage(%s) after a refused delete of the protected image: %v: it must still exist", id, err)
	case im == nil:
		t.Fatalf("GetImage(%s) = nil, nil", id)
	case im.State != provider.ImageAvailable:
		t.Errorf("protected image %s is %q after a refused delete: want available", id, im.State)
	}
	if err := p.ProtectImage(ctx, id, false); err != nil {
		t.Fatalf("ProtectImage(%s, false): %v", id, err)
	}
	if im := s.getImage(t, imgs, id); im.Protected {
		t.Errorf("after ProtectImage(%s, false), GetImage reports Protected=true", id)
	}
	if err := p.ProtectImage(ctx, missingID(id), true); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("ProtectImage(%s) of an image that never existed: %v: want ErrNotFound", missingID(id), err)
	}
}

func (s *suite) testDeprecator(t *testing.T, imgs provider.Images, id string) {
	dep, ok := imgs.(provider.Deprecator)
	if !ok {
		t.Skip("driver does not implement provider.Deprecator")
	}
	// Backends round deprecation times (AWS to the minute): use a whole minute.
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Minute)
	if err := dep.DeprecateImage(t.Context(), id, at); err != nil {
		t.Fatalf("DeprecateImage(%s, %s): %v", id, at, err)
	}
	im := s.getImage(t, imgs, id)
	switch {
	case im.Deprecated.IsZero():
		t.Errorf("after DeprecateImage(%s, %s), GetImage reports no deprecation time", id, at)
	case !im.Deprecated.Equal(at):
		t.Errorf("after DeprecateImage(%s, %s), GetImage reports Deprecated=%s", id, at, im.Deprecated)
	}
	if err := dep.DeprecateImage(t.Context(), missingID(id), at); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("DeprecateImage(%s) of an image that never existed: %v: want ErrNotFound", missingID(id), err)
	}
}

// testRegionCopier copies the available test image to Harness.CopyRegion
// and checks the copy there: a new image with the name asked for and every
// label of the source, that becomes available.
func (s *suite) testRegionCopier(t *testing.T, imgs provider.Images, id string) {
	rc, ok := imgs.(provider.RegionCopier)
	if !ok {
		t.Skip("driver does not implement provider.RegionCopier")
	}
	region, dst := s.h.CopyRegion, s.h.CopyRegionImages
	if region == "" || dst == nil {
		t.Skip("Harness.CopyRegion or Harness.CopyRegionImages is unset: no region to copy to")
	}
	c := &copyCheck{
		s: s, t: t, rc: rc, dst: dst, region: region, id: id,
		src:  s.getImage(t, imgs, id),
		name: "crabbox-conformance-copy-" + s.runID,
	}
	c.deleteCopiesOnCleanup()

	cp := c.copyImage()
	got := c.waitAvailable(cp.ID)
	if got.Name != c.name {
		t.Errorf("copy %s in %s is named %q: want %q", cp.ID, region, got.Name, c.name)
	}
	if miss := missingLabels(got.Labels, c.src.Labels); len(miss) > 0 {
		t.Errorf("copy %s in %s lacks the source's labels: %v", cp.ID, region, miss)
	}
	c.refusals()
}

// copyCheck is the state of one RegionCopier subtest: it copies image id
// (src, as GetImage returned it) to region under name, and sees the copy
// through dst, the driver's images in region.
type copyCheck struct {
	s      *suite
	t      *testing.T
	rc     provider.RegionCopier
	dst    provider.Images
	region string
	id     string
	src    *provider.Image
	name   string
	// created is the id of the copy CopyImage returned, "" before.
	created string
}

// deleteCopiesOnCleanup deletes in the region, when t ends, the copy
// CopyImage returned and every image carrying the suite's image labels.
func (c *copyCheck) deleteCopiesOnCleanup() {
	s, t, dst := c.s, c.t, c.dst
	t.Cleanup(func() {
		ctx, cancel := s.cleanupCtx()
		defer cancel()
		ids := map[string]bool{}
		if c.created != "" {
			ids[c.created] = true
		}
		list, err := dst.ListImages(ctx, s.imageLabels())
		if err != nil {
			t.Errorf("cleanup: ListImages(%v) in %s: %v", s.imageLabels(), c.region, err)
		}
		for _, im := range list {
			if im != nil && im.ID != "" {
				ids[im.ID] = true
			}
		}
		for cid := range ids {
			c.waitNotPending(ctx, cid)
			if err := dst.DeleteImage(ctx, cid); err != nil {
				t.Errorf("cleanup: DeleteImage(%s) in %s: %v", cid, c.region, err)
			}
		}
	})
}

// waitNotPending waits a little while copy cid is pending: a backend may
// refuse to delete a pending copy.
func (c *copyCheck) waitNotPending(ctx context.Context, cid string) {
	for i := 0; i < 50; i++ {
		im, err := c.dst.GetImage(ctx, cid)
		if err != nil || im == nil || im.State != provider.ImagePending {
			break
		}
		time.Sleep(c.s.h.PollInterval)
	}
}

// copyImage copies the image, recording the copy's id for the cleanup even
// when CopyImage fails, and checks what CopyImage returned: a new image
// with the source's labels.
func (c *copyCheck) copyImage() *provider.Image {
	t, id, region, name := c.t, c.id, c.region, c.name
	cp, err := c.rc.CopyImage(t.Context(), id, region, name)
	if cp != nil {
		c.created = cp.ID
	}
	if err != nil {
		t.Fatalf("CopyImage(%s, %s, %s): %v", id, region, name, err)
	}
	if cp == nil || cp.ID == "" {
		t.Fatalf("CopyImage(%s, %s, %s) = %+v and no error: want an image with an id", id, region, name, cp)
	}
	if cp.ID == id {
		t.Errorf("CopyImage(%s, %s) returned the source id: want the copy's id", id, region)
	}
	if miss := missingLabels(cp.Labels, c.src.Labels); len(miss) > 0 {
		t.Errorf("CopyImage(%s, %s) returned a copy without the source's labels: %v", id, region, miss)
	}
	return cp
}

// waitAvailable polls GetImage in the region until copy cid is available.
func (c *copyCheck) waitAvailable(cid string) *provider.Image {
	var got *provider.Image
	c.s.poll(c.t, fmt.Sprintf("copy %s in %s to become available", cid, c.region), func(ctx context.Context) (bool, string, error) {
		im, err := c.dst.GetImage(ctx, cid)
		if err != nil {
			return false, "", err
		}
		if im == nil {
			return false, "", errors.New("GetImage returned nil, nil")
		}
		if im.State == provider.ImageFailed {
			return false, "", fmt.Errorf("copy %s failed: %q", cid, im.StateReason)
		}
		got = im
		return im.State == provider.ImageAvailable, fmt.Sprintf("state %q", im.State), nil
	})
	return got
}

// refusals checks that CopyImage refuses an image that never existed with
// ErrNotFound (deleting a copy it made anyway) and passes a cancelled
// context through.
func (c *copyCheck) refusals() {
	t, id, region, name := c.t, c.id, c.region, c.name
	if im, err := c.rc.CopyImage(t.Context(), missingID(id), region, name+"-missing"); !errors.Is(err, provider.ErrNotFound) {
		if im != nil && im.ID != "" {
			created2 := im.ID
			t.Cleanup(func() { _ = c.dst.DeleteImage(context.Background(), created2) })
		}
		t.Errorf("CopyImage(%s) of an image that never existed = %+v, %v: want ErrNotFound", missingID(id), im, err)
	}
	_, err := c.rc.CopyImage(cancelledCtx(), id, region, name)
	checkCancelled(t, "CopyImage", err)
}

func containsImage(list []*provider.Image, id string) bool {
	for _, im := range list {
		if im != nil && im.ID == id {
			return true
		}
	}
	return false
}

func imageIDs(list []*provider.Image) []string {
	out := make([]string, 0, len(list))
	for _, im := range list {
		if im == nil {
			out = append(out, "<nil>")
			continue
		}
		out = append(out, im.ID)
	}
	return out
}
