// Images as file-system trees: BaseImage, CreateImage, GetImage, ListImages, DeleteImage; failure hook.

package crabboxtest

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

type image struct {
	img         provider.Image
	root        string // the image's file-system tree
	token       string
	pendingLeft int    // GetImage polls still reporting pending
	failReason  string // non-empty: the image ends failed
	base        bool
}

func (im *image) snapshot() *provider.Image {
	out := im.img
	out.Labels = cloneLabels(im.img.Labels)
	out.Snapshots = append([]provider.Snapshot(nil), im.img.Snapshots...)
	return &out
}

// CreateImage copies the machine's file-system tree (sockets, pipes and
// devices skipped) into a new image "img-<hex>" with one snapshot
// "snap-<hex>" sized from the tree. The image is pending for the configured
// number of GetImage polls, then available, or failed after FailNextImage. A
// request whose Token matches an existing image returns that image; a name
// already used by another image is an error wrapping ErrConflict.
func (c *Cloud) CreateImage(ctx context.Context, req provider.CreateImageRequest) (*provider.Image, error) {
	fault, lost := c.takeFault("CreateImage")
	if fault != nil && !lost {
		return nil, fault
	}
	im, err := c.createImage(ctx, req)
	if lost && err == nil {
		return nil, fault
	}
	return im, err
}

func (c *Cloud) createImage(ctx context.Context, req provider.CreateImageRequest) (*provider.Image, error) {
	m, existing, err := c.imageSource(ctx, req)
	if err != nil {
		return nil, err
	}
	if existing != nil {
		return existing, nil
	}
	id := newID("img-")
	dir := filepath.Join(c.o.dir, "images", id)
	root := filepath.Join(dir, "root")
	size, err := copyTree(ctx, m.root, root)
	if err != nil {
		_ = os.RemoveAll(dir)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, provider.Errorf(provider.ErrUnavailable, "crabboxtest: copying machine %s: %v", m.id, err)
	}
	sizeGiB := float64(size) / (1 << 30)
	im := &image{
		img: provider.Image{
			ID:          id,
			Name:        req.Name,
			Description: req.Description,
			State:       provider.ImagePending,
			Arch:        provider.DefaultArch,
			Labels:      cloneLabels(req.Labels),
			Created:     time.Now().UTC(),
			Snapshots:   []provider.Snapshot{{ID: newID("snap-"), SizeGiB: sizeGiB}},
			SizeGiB:     sizeGiB,
		},
		root:  root,
		token: req.Token,
	}
	return c.addImage(im, dir)
}

// imageSource returns the machine req images, after checking req's name;
// existing is the image already created with req.Token, if any.
func (c *Cloud) imageSource(ctx context.Context, req provider.CreateImageRequest) (m *machine, existing *provider.Image, err error) {
	if err := c.begin(ctx); err != nil {
		return nil, nil, err
	}
	if req.Token != "" {
		for _, im := range c.images {
			if im.token == req.Token {
				c.mu.Unlock()
				return nil, c.lockedSnapshot(im), nil
			}
		}
	}
	m, ok := c.machines[req.MachineID]
	var nameTaken bool
	for _, im := range c.images {
		if im.img.Name == req.Name {
			nameTaken = true
		}
	}
	c.mu.Unlock()
	switch {
	case req.Name == "":
		return nil, nil, provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: image name is empty")
	case !ok:
		return nil, nil, provider.Errorf(provider.ErrNotFound, "crabboxtest: machine %q not found", req.MachineID)
	case nameTaken:
		return nil, nil, provider.Errorf(provider.ErrConflict, "crabboxtest: an image named %q already exists", req.Name)
	}
	return m, nil, nil
}

// addImage registers the copied image im (its tree in dir) and returns it,
// unless the cloud closed, a concurrent create with the same token won (that
// image is returned) or took the name; dir is removed when im is not
// registered.
func (c *Cloud) addImage(im *image, dir string) (*provider.Image, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = os.RemoveAll(dir)
		return nil, errClosed()
	}
	for _, other := range c.images {
		if im.token != "" && other.token == im.token {
			_ = os.RemoveAll(dir)
			return other.snapshot(), nil
		}
		if other.img.Name == im.img.Name {
			_ = os.RemoveAll(dir)
			return nil, provider.Errorf(provider.ErrConflict, "crabboxtest: an image named %q already exists", im.img.Name)
		}
	}
	im.pendingLeft = c.o.pendingPolls
	if len(c.failNext) > 0 {
		im.failReason = c.failNext[0]
		c.failNext = c.failNext[1:]
	}
	c.images[im.img.ID] = im
	return im.snapshot(), nil
}

// lockedSnapshot snapshots im under c.mu.
func (c *Cloud) lockedSnapshot(im *image) *provider.Image {
	c.mu.Lock()
	defer c.mu.Unlock()
	return im.snapshot()
}

// GetImage returns the image, or an error wrapping ErrNotFound. Each call on
// a pending image counts as one poll (see WithImagePendingPolls).
func (c *Cloud) GetImage(ctx context.Context, id string) (*provider.Image, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	im, ok := c.images[id]
	if !ok {
		return nil, provider.Errorf(provider.ErrNotFound, "crabboxtest: image %q not found", id)
	}
	if im.img.State == provider.ImagePending {
		if im.pendingLeft > 0 {
			im.pendingLeft--
		} else if im.failReason != "" {
			im.img.State = provider.ImageFailed
			im.img.StateReason = im.failReason
		} else {
			im.img.State = provider.ImageAvailable
		}
	}
	return im.snapshot(), nil
}

// ListImages returns the images having all the given labels (with no
// labels: every image, the base image included), oldest first.
func (c *Cloud) ListImages(ctx context.Context, labels map[string]string) ([]*provider.Image, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	var out []*provider.Image
	for _, im := range c.images {
		if matchLabels(im.img.Labels, labels) {
			out = append(out, im.snapshot())
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// DeleteImage deletes the image and its snapshot. Deleting an image that
// does not exist returns nil; a protected image is refused with
// ErrConflict, the base image with ErrPermission.
func (c *Cloud) DeleteImage(ctx context.Context, id string) error {
	if err := c.begin(ctx); err != nil {
		return err
	}
	im, ok := c.images[id]
	switch {
	case !ok:
		c.mu.Unlock()
		return nil
	case im.base:
		c.mu.Unlock()
		return provider.Errorf(provider.ErrPermission, "crabboxtest: image %q is not owned by this account", id)
	case im.img.Protected:
		c.mu.Unlock()
		return provider.Errorf(provider.ErrConflict, "crabboxtest: image %q is protected from deletion", id)
	}
	delete(c.images, id)
	c.mu.Unlock()
	if err := os.RemoveAll(filepath.Dir(im.root)); err != nil {
		return provider.Errorf(provider.ErrUnavailable, "crabboxtest: removing image %s: %v", id, err)
	}
	return nil
}

// UpdateImageLabels merges labels into the image's labels; an empty value
// removes the label.
func (c *Cloud) UpdateImageLabels(ctx context.Context, id string, labels map[string]string) error {
	return c.updateImage(ctx, id, func(im *image) {
		if im.img.Labels == nil {
			im.img.Labels = map[string]string{}
		}
		for k, v := range labels {
			if v == "" {
				delete(im.img.Labels, k)
			} else {
				im.img.Labels[k] = v
			}
		}
	})
}

// ProtectImage toggles deletion protection.
func (c *Cloud) ProtectImage(ctx context.Context, id string, protect bool) error {
	return c.updateImage(ctx, id, func(im *image) { im.img.Protected = protect })
}

// DeprecateImage records the deprecation time (zero clears it).
func (c *Cloud) DeprecateImage(ctx context.Context, id string, at time.Time) error {
	return c.updateImage(ctx, id, func(im *image) { im.img.Deprecated = at })
}

func (c *Cloud) updateImage(ctx context.Context, id string, f func(*image)) error {
	if err := c.begin(ctx); err != nil {
		return err
	}
	defer c.mu.Unlock()
	im, ok := c.images[id]
	switch {
	case !ok:
		return provider.Errorf(provider.ErrNotFound, "crabboxtest: image %q not found", id)
	case im.base:
		return provider.Errorf(provider.ErrPermission, "crabboxtest: image %q is not owned by this account", id)
	}
	f(im)
	return nil
}

// BaseImage returns BaseImageID for amd64 and arm64.
func (c *Cloud) BaseImage(ctx context.Context, arch string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if !provider.ValidArch(arch) {
		return "", provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: unknown architecture %q", arch)
	}
	return BaseImageID, nil
}

// FailNextImage makes the next CreateImage produce an image that ends in
// the failed state with reason (after the usual pending polls). Calls
// queue up.
func (c *Cloud) FailNextImage(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if reason == "" {
		reason = "image creation failed (injected by crabboxtest)"
	}
	c.failNext = append(c.failNext, reason)
}

// ImageCount returns the number of images that exist, not counting the
// base image.
func (c *Cloud) ImageCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, im := range c.images {
		if !im.base {
			n++
		}
	}
	return n
}
