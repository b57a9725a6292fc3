// Snapshots: BaseImage, CreateImage, GetImage, ListImages, DeleteImage, labels, protection.

package hetzner

import (
	"context"
	"errors"
	"sort"
	"strconv"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/provider"
)

// CreateImage snapshots the machine and waits for the create_image action
// through hcloud-go's action waiting (the poll backoff of the hcloud
// client), returning the snapshot available with its size. The description
// is req.Name (Hetzner snapshots have no name of their own); req.Description
// is not stored. A retried call with the same token, or an ambiguous
// failure, adopts the snapshot carrying the token instead of creating a
// second one (a failed one too: it is returned failed, never replaced
// behind the caller's back).
//
// When ctx ends during the wait, the pending snapshot is returned with the
// error, so the caller can keep or delete it. When the action fails, the
// snapshot is returned in state failed with the action's error message as
// StateReason, and no error: the image exists, it is just unusable (the
// SDK's WaitImage reports it as ErrImageFailed with that reason).
func (d *Driver) CreateImage(ctx context.Context, req provider.CreateImageRequest) (*provider.Image, error) {
	sid, err := parseID("server", req.MachineID)
	if err != nil {
		return nil, err
	}
	if req.Name == "" {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "hetzner: create image: a name is required")
	}
	labels, token, err := d.ownedLabels(req.Labels, req.Token)
	if err != nil {
		return nil, err
	}
	if token != "" {
		im, err := d.adoptImage(ctx, token)
		if err != nil {
			if im != nil {
				return d.toImage(im), err
			}
			return nil, err
		}
		if im != nil {
			// Also a failed one: it is returned as it is (failed, with its
			// reason) and kept for inspection, as on other providers.
			return d.settleImage(ctx, im, nil)
		}
	}
	desc := req.Name
	res, _, err := d.c.Server.CreateImage(ctx, &hcloud.Server{ID: sid}, &hcloud.ServerCreateImageOpts{
		Type: hcloud.ImageTypeSnapshot, Description: &desc, Labels: labels,
	})
	if err == nil {
		return d.settleImage(ctx, res.Image, []*hcloud.Action{res.Action})
	}
	merr := mapErr("create image", err)
	// Any failure may hide a created snapshot: hcloud-go retries some
	// errors itself, and a retry after a landed first attempt fails
	// "definitely" (locked). The token decides.
	// When the failure is ambiguous the snapshot may still land (the API
	// applies a request the client gave up on a moment later): keep
	// looking for the adopt wait.
	if token != "" {
		find := func(ctx context.Context) (*hcloud.Image, bool) {
			im, ferr := d.adoptImage(ctx, token)
			return im, ferr == nil && im != nil
		}
		cctx, cancel := d.detached(ctx)
		im, found := find(cctx)
		cancel()
		if !found && ambiguous(merr) {
			im, found = adopt(ctx, d, find)
		}
		if found {
			if ctx.Err() != nil {
				return d.toImage(im), merr // the caller gave up: hand it back for deletion
			}
			return d.settleImage(ctx, im, nil)
		}
	}
	return nil, merr
}

// adoptImage finds the snapshot made with token. Several (a request retried
// inside hcloud-go after a lost response) are reduced to the oldest; the
// others are deleted.
func (d *Driver) adoptImage(ctx context.Context, token string) (*hcloud.Image, error) {
	ims, err := d.c.Image.AllWithOpts(ctx, hcloud.ImageListOpts{
		Type:     []hcloud.ImageType{hcloud.ImageTypeSnapshot},
		ListOpts: hcloud.ListOpts{LabelSelector: d.rk(LabelToken) + "=" + token},
	})
	if err != nil {
		return nil, mapErr("find image by token", err)
	}
	if len(ims) == 0 {
		return nil, nil
	}
	sort.Slice(ims, func(i, j int) bool { return ims[i].ID < ims[j].ID })
	for _, dup := range ims[1:] {
		if err := d.deleteImage(ctx, dup.ID, "delete duplicate image"); err != nil {
			return ims[0], err
		}
	}
	return ims[0], nil
}

// GetImage returns a snapshot, backup or system image by id. A failed
// snapshot's StateReason is the message of the action that failed it.
func (d *Driver) GetImage(ctx context.Context, id string) (*provider.Image, error) {
	im, err := d.getImage(ctx, id)
	if err != nil {
		return nil, err
	}
	return d.imageView(ctx, im), nil
}

func (d *Driver) getImage(ctx context.Context, id string) (*hcloud.Image, error) {
	n, err := parseID("image", id)
	if err != nil {
		return nil, err
	}
	im, _, err := d.c.Image.GetByID(ctx, n)
	if err != nil {
		return nil, mapErr("get image", err)
	}
	if im == nil || !im.Deleted.IsZero() {
		return nil, provider.Errorf(provider.ErrNotFound, "hetzner: image %s not found", id)
	}
	return im, nil
}

// ListImages returns the project's snapshots having all the labels.
func (d *Driver) ListImages(ctx context.Context, labels map[string]string) ([]*provider.Image, error) {
	sel, err := d.selector(labels)
	if err != nil {
		return nil, err
	}
	ims, err := d.c.Image.AllWithOpts(ctx, hcloud.ImageListOpts{
		Type:     []hcloud.ImageType{hcloud.ImageTypeSnapshot},
		ListOpts: hcloud.ListOpts{LabelSelector: sel},
	})
	if err != nil {
		return nil, mapErr("list images", err)
	}
	out := make([]*provider.Image, 0, len(ims))
	for _, im := range ims {
		out = append(out, d.toImage(im))
	}
	return out, nil
}

// DeleteImage deletes a snapshot. An image that is already gone is not an
// error; a delete-protected image fails with ErrConflict.
func (d *Driver) DeleteImage(ctx context.Context, id string) error {
	n, err := parseID("image", id)
	if err != nil {
		return nil
	}
	return d.deleteImage(ctx, n, "delete image")
}

// deleteImage deletes image id, waiting out a running action that locks it
// (see unlocked); an image already gone is not an error.
func (d *Driver) deleteImage(ctx context.Context, id int64, what string) error {
	err := d.unlocked(ctx, "image", id, what, func(ctx context.Context) error {
		_, err := d.c.Image.Delete(ctx, &hcloud.Image{ID: id})
		return err
	})
	if err != nil && !hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
		return mapErr(what, err)
	}
	return nil
}

// UpdateImageLabels merges labels into the image's labels; an empty value
// removes a label.
func (d *Driver) UpdateImageLabels(ctx context.Context, id string, labels map[string]string) error {
	upd, err := d.toLabels(labels)
	if err != nil {
		return err
	}
	im, err := d.getImage(ctx, id)
	if err != nil {
		return err
	}
	if _, _, err := d.c.Image.Update(ctx, im, hcloud.ImageUpdateOpts{Labels: mergeLabels(im.Labels, upd)}); err != nil {
		return mapErr("update image labels", err)
	}
	return nil
}

// ProtectImage sets or lifts delete protection, waiting for the action
// (and first for an action that locks the image, such as its creation).
func (d *Driver) ProtectImage(ctx context.Context, id string, protect bool) error {
	n, err := parseID("image", id)
	if err != nil {
		return err
	}
	var a *hcloud.Action
	err = d.unlocked(ctx, "image", n, "change image protection", func(ctx context.Context) error {
		var err error
		a, _, err = d.c.Image.ChangeProtection(ctx, &hcloud.Image{ID: n}, hcloud.ImageChangeProtectionOpts{Delete: hcloud.Ptr(protect)})
		return err
	})
	if err != nil {
		return mapErr("change image protection", err)
	}
	if err := d.waitActions(ctx, "protection change of image "+id, a); err != nil {
		return err
	}
	return nil
}

func (d *Driver) toImage(im *hcloud.Image) *provider.Image {
	out := &provider.Image{
		ID:          strconv.FormatInt(im.ID, 10),
		Name:        im.Description,
		Description: im.Description,
		State:       imageState(im.Status),
		Arch:        sdkArch(im.Architecture),
		Labels:      d.fromLabels(im.Labels),
		Created:     im.Created,
		SizeGiB:     float64(im.ImageSize),
		Protected:   im.Protection.Delete,
		Deprecated:  im.Deprecated,
	}
	if im.Type == hcloud.ImageTypeSystem || im.Type == hcloud.ImageTypeApp {
		out.Name = im.Name
	}
	if im.Type == hcloud.ImageTypeSnapshot || im.Type == hcloud.ImageTypeBackup {
		// A Hetzner snapshot is its own backing storage.
		out.Snapshots = []provider.Snapshot{{ID: out.ID, SizeGiB: out.SizeGiB}}
	}
	if out.State == provider.ImageFailed {
		out.StateReason = "Hetzner reports the image unavailable"
	}
	return out
}

func imageState(s hcloud.ImageStatus) provider.ImageState {
	switch s {
	case hcloud.ImageStatusCreating:
		return provider.ImagePending
	case hcloud.ImageStatusAvailable:
		return provider.ImageAvailable
	case hcloud.ImageStatus("unavailable"):
		return provider.ImageFailed
	}
	return provider.ImageUnknown
}

// fingerprint is Hetzner's SSH key fingerprint (MD5, colon-separated hex).
func fingerprint(authorized string) (string, error) {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(authorized))
	if err != nil {
		return "", provider.Wrap(provider.ErrInvalidArgument, errors.New("hetzner: authorized key does not parse"))
	}
	fp := ssh.FingerprintLegacyMD5(k)
	return fp, nil
}

// BaseImage returns the id of the configured system image (default
// ubuntu-24.04) for an architecture.
func (d *Driver) BaseImage(ctx context.Context, arch string) (string, error) {
	a, err := hcloudArch(arch)
	if err != nil {
		return "", err
	}
	im, _, err := d.c.Image.GetByNameAndArchitecture(ctx, d.o.baseImage, a)
	if err != nil {
		return "", mapErr("get base image", err)
	}
	if im == nil {
		return "", provider.Errorf(provider.ErrNotFound, "hetzner: no image %q for architecture %s", d.o.baseImage, a)
	}
	return strconv.FormatInt(im.ID, 10), nil
}

func hcloudArch(arch string) (hcloud.Architecture, error) {
	switch arch {
	case provider.ArchAMD64, "x86", "x86_64":
		return hcloud.ArchitectureX86, nil
	case provider.ArchARM64, "arm", "aarch64":
		return hcloud.ArchitectureARM, nil
	}
	return "", provider.Errorf(provider.ErrInvalidArgument, "hetzner: unknown architecture %q", arch)
}

func sdkArch(a hcloud.Architecture) string {
	switch a {
	case hcloud.ArchitectureX86:
		return provider.ArchAMD64
	case hcloud.ArchitectureARM:
		return provider.ArchARM64
	}
	return string(a)
}
