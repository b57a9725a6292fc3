// Images: provider.Images with the optional Protector, Deprecator,
// RegionCopier and UsageFinder.

package refdriver

import (
	"context"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

func cloneImage(im provider.Image) *provider.Image {
	im.Labels = maps.Clone(im.Labels)
	im.Snapshots = slices.Clone(im.Snapshots)
	return &im
}

// CreateImage implements provider.Images. The image is pending until the
// next GetImage. A request with the Token of an image that still exists
// returns that image instead of a second one.
func (d *Driver) CreateImage(ctx context.Context, req provider.CreateImageRequest) (*provider.Image, error) {
	var out *provider.Image
	err := d.be.callFault(ctx, "CreateImage", func(s *state) error {
		if id, ok := s.imgByToken[req.Token]; ok && req.Token != "" {
			out = cloneImage(s.images[id].im)
			return nil
		}
		if _, ok := s.machines[req.MachineID]; !ok {
			return notFound("machine", req.MachineID)
		}
		id := s.newID("img")
		out = d.putImage(s, req.Token, provider.Image{
			ID:          id,
			Name:        sanitizeName(req.Name, id),
			Description: req.Description,
			Arch:        provider.ArchAMD64,
			Labels:      managedLabels(req.Labels),
			Snapshots:   []provider.Snapshot{{ID: "snap-" + id, SizeGiB: 1}},
			SizeGiB:     1,
		})
		return nil
	})
	return out, mapErr(err)
}

// putImage stores im, pending and created now, under token.
func (d *Driver) putImage(s *state, token string, im provider.Image) *provider.Image {
	im.State, im.Created = provider.ImagePending, d.o.now()
	s.images[im.ID] = &image{im: im}
	if token != "" {
		s.imgByToken[token] = im.ID
	}
	return cloneImage(im)
}

// GetImage implements provider.Images.
func (d *Driver) GetImage(ctx context.Context, id string) (*provider.Image, error) {
	var out *provider.Image
	err := d.be.call(ctx, func(s *state) error {
		im, ok := s.images[id]
		if !ok {
			return notFound("image", id)
		}
		if im.im.State == provider.ImagePending {
			im.polls++
			if im.polls > 1 {
				im.im.State = provider.ImageAvailable
			}
		}
		out = cloneImage(im.im)
		return nil
	})
	return out, mapErr(err)
}

// ListImages implements provider.Images (the base images are the
// backend's, not the account's, and are not listed).
func (d *Driver) ListImages(ctx context.Context, labels map[string]string) ([]*provider.Image, error) {
	var out []*provider.Image
	err := d.be.call(ctx, func(s *state) error {
		for _, im := range s.images {
			if hasLabels(im.im.Labels, labels) {
				out = append(out, cloneImage(im.im))
			}
		}
		return nil
	})
	return out, mapErr(err)
}

// DeleteImage implements provider.Images: the image and its snapshots go; a
// protected image is refused with ErrConflict; one already gone is not an
// error.
func (d *Driver) DeleteImage(ctx context.Context, id string) error {
	return mapErr(d.be.call(ctx, func(s *state) error {
		im, ok := s.images[id]
		if !ok {
			return nil
		}
		if im.im.Protected {
			return apiErrorf(409, "image %q is protected", id)
		}
		delete(s.images, id)
		for tok, iid := range s.imgByToken {
			if iid == id {
				delete(s.imgByToken, tok)
			}
		}
		return nil
	}))
}

// UpdateImageLabels implements provider.Images.
func (d *Driver) UpdateImageLabels(ctx context.Context, id string, labels map[string]string) error {
	return d.updateImage(ctx, id, func(im *provider.Image) { im.Labels = mergeLabels(im.Labels, labels) })
}

// ProtectImage implements provider.Protector.
func (d *Driver) ProtectImage(ctx context.Context, id string, protect bool) error {
	return d.updateImage(ctx, id, func(im *provider.Image) { im.Protected = protect })
}

// DeprecateImage implements provider.Deprecator.
func (d *Driver) DeprecateImage(ctx context.Context, id string, at time.Time) error {
	return d.updateImage(ctx, id, func(im *provider.Image) { im.Deprecated = at.UTC() })
}

func (d *Driver) updateImage(ctx context.Context, id string, f func(*provider.Image)) error {
	return mapErr(d.be.call(ctx, func(s *state) error {
		im, ok := s.images[id]
		if !ok {
			return notFound("image", id)
		}
		f(&im.im)
		return nil
	}))
}

// CopyImage implements provider.RegionCopier: the copy, with the source's
// labels, is created in the driver of region (WithRegionPeer). A retried
// copy of the same image under the same name returns the same copy.
func (d *Driver) CopyImage(ctx context.Context, id, region, name string) (*provider.Image, error) {
	peer, ok := d.o.peers[region]
	if !ok {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "refdriver: no driver for region %q (WithRegionPeer)", region)
	}
	src, err := d.GetImage(ctx, id)
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = src.Name
	}
	token := "copy:" + d.o.region + "/" + id + "/" + name
	var out *provider.Image
	err = peer.be.call(ctx, func(s *state) error {
		if cid, ok := s.imgByToken[token]; ok {
			out = cloneImage(s.images[cid].im)
			return nil
		}
		cid := s.newID("img")
		cp := *cloneImage(*src)
		cp.ID, cp.Name, cp.Protected, cp.Deprecated = cid, sanitizeName(name, cid), false, time.Time{}
		cp.Snapshots = []provider.Snapshot{{ID: "snap-" + cid, SizeGiB: src.SizeGiB}}
		out = peer.putImage(s, token, cp)
		return nil
	})
	return out, mapErr(err)
}

// ImageUsage implements provider.UsageFinder: the live machines booted from
// the image, as "machine <id>". An image the backend does not know is
// ErrNotFound.
func (d *Driver) ImageUsage(ctx context.Context, id string) ([]string, error) {
	var refs []string
	err := d.be.call(ctx, func(s *state) error {
		if _, ok := s.images[id]; !ok && !isBaseImage(id) {
			return notFound("image", id)
		}
		for _, m := range s.machines {
			if m.m.Image == id {
				refs = append(refs, "machine "+m.m.ID)
			}
		}
		return nil
	})
	sort.Strings(refs)
	return refs, mapErr(err)
}

// isBaseImage reports whether id is the base image of an architecture.
func isBaseImage(id string) bool {
	return slices.ContainsFunc(provider.Arches(), func(a string) bool { return BaseImageID(a) == id })
}

// BaseImage implements provider.Driver.
func (d *Driver) BaseImage(ctx context.Context, arch string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if !provider.ValidArch(arch) {
		return "", provider.Errorf(provider.ErrInvalidArgument, "refdriver: unknown architecture %q", arch)
	}
	return BaseImageID(arch), nil
}
