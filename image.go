// Images: CreateImage (with the bake prep and a wait that never loses the
// image id), WaitImage, GetImage, Images with filters, CopyImage.

package crabbox

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

// Image is a machine image crabbox knows about. It marshals to the JSON
// record the runbook asks operators to keep.
type Image struct {
	ID          string              `json:"id"`
	Name        string              `json:"name"`
	Provider    string              `json:"provider"`
	Region      string              `json:"region,omitempty"`
	State       string              `json:"state"`
	StateReason string              `json:"state_reason,omitempty"`
	Status      string              `json:"status,omitempty"` // candidate, known-good, failed
	SourceLease string              `json:"source_lease,omitempty"`
	Operator    string              `json:"operator,omitempty"`
	Created     time.Time           `json:"created"`
	Arch        string              `json:"arch,omitempty"`
	Snapshots   []provider.Snapshot `json:"snapshots"`
	SizeGiB     float64             `json:"size_gib,omitempty"`
	Protected   bool                `json:"protected,omitempty"`
	Deprecated  *time.Time          `json:"deprecated,omitempty"`
	Owned       bool                `json:"owned"`
	// Desktop and Browser say the image was made from a lease with a
	// desktop (and a browser): the default proof policy then asks for the
	// desktop proof.
	Desktop bool              `json:"desktop,omitempty"`
	Browser bool              `json:"browser,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
}

func (c *Client) imageFrom(p *provider.Image) *Image {
	img := &Image{
		ID: p.ID, Name: p.Name, Provider: c.info.Name, Region: c.info.Region, State: string(p.State),
		StateReason: p.StateReason, Arch: p.Arch, Snapshots: p.Snapshots, SizeGiB: p.SizeGiB,
		Protected: p.Protected, Labels: copyLabels(p.Labels), Created: p.Created,
	}
	if img.Snapshots == nil {
		img.Snapshots = []provider.Snapshot{}
	}
	lb := p.Labels
	img.Owned = ownedLabels(lb)
	img.Status = lb[LabelStatus]
	img.SourceLease = lb[LabelSourceLease]
	img.Operator = lb[LabelOperator]
	img.Desktop, img.Browser = lb[LabelDesktop] == "true", lb[LabelBrowser] == "true"
	if img.Name == "" {
		img.Name = lb[LabelImageName]
	}
	if t, ok := parseLabelTime(lb[LabelCreated]); ok && img.Created.IsZero() {
		img.Created = t
	}
	if !p.Deprecated.IsZero() {
		t := p.Deprecated
		img.Deprecated = &t
	}
	return img
}

type imageOptions struct {
	prepare     bool
	wait        bool
	waitTimeout time.Duration
	noReboot    bool
	anyName     bool
	description string
	labels      map[string]string
}

// ImageOption configures CreateImage.
type ImageOption func(*imageOptions) error

// WithPrepare cleans the source box before imaging: cloud-init state and
// logs, the lease's authorized key, the box's host keys and shell
// histories. After it, new SSH connections to the source lease fail; release
// it once the image exists.
func WithPrepare() ImageOption { return func(o *imageOptions) error { o.prepare = true; return nil } }

// WithWait waits until the image is available, failed, or timeout passes
// (0 means the default of 45 minutes).
func WithWait(timeout time.Duration) ImageOption {
	return func(o *imageOptions) error {
		if timeout < 0 {
			return fmt.Errorf("%w: wait timeout %v", ErrInvalidArgument, timeout)
		}
		o.wait = true
		if timeout > 0 {
			o.waitTimeout = timeout
		}
		return nil
	}
}

// WithReboot reboots the source while imaging it, for a
// file-system-consistent image (by default the source keeps running).
func WithReboot() ImageOption { return func(o *imageOptions) error { o.noReboot = false; return nil } }

// WithNoReboot images without rebooting the source (default true; pass
// false for a file-system-consistent image).
//
// Deprecated: use WithReboot to reboot; not rebooting is the default.
func WithNoReboot(b bool) ImageOption {
	return func(o *imageOptions) error { o.noReboot = b; return nil }
}

// WithAnyName accepts names outside the runbook convention (still within
// provider limits).
func WithAnyName() ImageOption { return func(o *imageOptions) error { o.anyName = true; return nil } }

// WithDescription sets the image description.
func WithDescription(d string) ImageOption {
	return func(o *imageOptions) error { o.description = d; return nil }
}

// WithImageLabels adds labels to the image. Values are sanitized; keys are
// checked as WithLabels checks them (empty, invalid or reserved keys are
// refused with ErrInvalidArgument).
func WithImageLabels(labels map[string]string) ImageOption {
	return func(o *imageOptions) error {
		for k, v := range labels {
			if err := checkLabelKey(k); err != nil {
				return fmt.Errorf("image label: %w", err)
			}
			if o.labels == nil {
				o.labels = map[string]string{}
			}
			o.labels[k] = sanitizeLabelValue(v)
		}
		return nil
	}
}

var anyNameOK = func(s string) bool {
	if len(s) < 3 || len(s) > MaxImageNameLen {
		return false
	}
	return sanitizeLabelValue(s) == s
}

// prepareScript cleans a box for imaging. It refuses to run anywhere but a
// crabbox box (the bootstrap marker must exist under the FS root), so a
// mistake can never clean the machine the SDK runs on.
//
//go:embed image_prepare.sh
var prepareScript string

// CreateImage images a lease's machine. name must follow the runbook's
// convention (see ImageName) unless WithAnyName is given. The image carries
// ownership labels (crabbox, created-by, source lease, operator, creation
// time, name parts) and the candidate status.
//
// With WithWait, a failed state or timeout returns the image together with
// a *WaitError naming the last state: the image id is never lost.
func (c *Client) CreateImage(ctx context.Context, lease, name string, opts ...ImageOption) (*Image, error) {
	img, err := c.createImage(ctx, lease, name, opts)
	if err != nil {
		id := lease
		if img != nil {
			id = img.ID
		}
		return img, c.opErr("create-image", id, err)
	}
	return img, nil
}

func (c *Client) createImage(ctx context.Context, leaseRef, name string, opts []ImageOption) (*Image, error) {
	o := imageOptions{noReboot: true, waitTimeout: 45 * time.Minute}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	im, err := c.images()
	if err != nil {
		return nil, err
	}
	var parts ImageName
	if o.anyName {
		if !anyNameOK(name) {
			return nil, fmt.Errorf("%w: image name %q must be 3-%d characters of [A-Za-z0-9_.-]", ErrInvalidArgument, name, MaxImageNameLen)
		}
	} else if parts, err = ParseImageName(name); err != nil {
		return nil, err
	}
	l, err := c.Lease(ctx, leaseRef)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	if o.prepare {
		c.emit(Event{Kind: EventImagePreparing, Resource: "lease", ID: l.ID, State: "preparing",
			Message: "cleaning cloud-init state, keys and histories"})
		if _, err := l.Run(ctx, prepareScript); err != nil {
			return nil, fmt.Errorf("preparing source: %w", err)
		}
	}
	token := imageToken(l.ID, name)
	labels := c.imageLabels(l, name, parts, token, o)
	desc := o.description
	if desc == "" {
		desc = name
	}
	c.emit(Event{Kind: EventImageCreating, Resource: "image", ID: name, State: "creating",
		Message: fmt.Sprintf("imaging machine %s of lease %s", l.MachineID, l.ID)})
	req := provider.CreateImageRequest{MachineID: l.MachineID, Name: name, Description: desc, Labels: labels,
		NoReboot: o.noReboot, Token: token}
	p, err := retry(ctx, c, "image", func(ctx context.Context) (*provider.Image, error) {
		return im.CreateImage(ctx, req)
	})
	if err != nil {
		if p != nil {
			return c.imageFrom(p), err
		}
		return nil, err
	}
	img := c.imageFrom(p)
	if !o.wait {
		return img, nil
	}
	return c.WaitImage(ctx, img.ID, o.waitTimeout)
}

// imageToken is the idempotency token of an image made from a lease under
// a name: derived from both, so calling CreateImage again for the same
// lease and name (after a wait that gave up, or an ambiguous error) adopts
// the image instead of making a second one.
func imageToken(leaseID, name string) string {
	sum := sha256.Sum256([]byte(leaseID + "\x00" + name))
	return "cbi_" + hex.EncodeToString(sum[:6])
}

// imageLabels are the labels of a new image: the caller's, then the
// ownership and status labels (empty values left out).
func (c *Client) imageLabels(l *Lease, name string, parts ImageName, token string, o imageOptions) map[string]string {
	now := c.o.now().UTC()
	labels := map[string]string{}
	for k, v := range o.labels {
		labels[k] = v
	}
	for k, v := range map[string]string{
		LabelManaged:     "true",
		LabelCreatedBy:   "crabbox",
		LabelSourceLease: l.ID,
		LabelDesktop:     strconv.FormatBool(l.Desktop),
		LabelBrowser:     strconv.FormatBool(l.Browser),
		LabelOperator:    sanitizeLabelValue(c.o.operator),
		LabelCreated:     formatLabelTime(now),
		LabelImageName:   name,
		LabelOwner:       parts.Owner,
		LabelProduct:     parts.Product,
		LabelPurpose:     sanitizeLabelValue(parts.Purpose),
		LabelStatus:      StatusCandidate,
		LabelStatusAt:    formatLabelTime(now),
		labelImageToken:  token,
	} {
		if v != "" {
			labels[k] = v
		}
	}
	return labels
}

const labelImageToken = "crabbox-image-token"

// WaitImage waits until an image is available. A failed image returns a
// *WaitError matching ErrImageFailed with the provider's reason; a timeout
// or cancellation returns a *WaitError matching the context error. Either
// way the last seen image is returned with the error.
func (c *Client) WaitImage(ctx context.Context, id string, timeout time.Duration) (*Image, error) {
	im, err := c.images()
	if err != nil {
		return nil, c.opErr("wait-image", id, err)
	}
	if timeout <= 0 {
		timeout = 45 * time.Minute
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := c.o.now()
	last := &Image{ID: id, Provider: c.info.Name, Region: c.info.Region, State: string(provider.ImageUnknown), Snapshots: []provider.Snapshot{}}
	for attempt := 1; ; attempt++ {
		p, err := im.GetImage(wctx, id)
		switch {
		case err == nil:
			last = c.imageFrom(p)
			switch p.State {
			case provider.ImageAvailable:
				c.emit(Event{Kind: EventImageReady, Resource: "image", ID: id, State: last.State, Attempt: attempt,
					Message: fmt.Sprintf("image %s available", last.Name)})
				return last, nil
			case provider.ImageFailed:
				reason := p.StateReason
				if reason == "" {
					reason = "no reason given"
				}
				return last, c.opErr("wait-image", id, &WaitError{Resource: "image", ID: id, LastState: last.State,
					Attempts: attempt, Waited: c.o.now().Sub(start), Err: fmt.Errorf("%w: %s", ErrImageFailed, reason)})
			}
		case provider.Retryable(err) || errors.Is(err, ErrNotFound) && attempt <= 3:
			// Transient, or eventual consistency right after create.
		default:
			if wctx.Err() == nil {
				return last, c.opErr("wait-image", id, err)
			}
		}
		c.emit(Event{Kind: EventImageWaiting, Resource: "image", ID: id, State: last.State, Attempt: attempt})
		if serr := sleep(wctx, c.o.imageBackoff(attempt)); serr != nil {
			return last, c.opErr("wait-image", id, &WaitError{Resource: "image", ID: id, LastState: last.State,
				Attempts: attempt, Waited: c.o.now().Sub(start), Err: serr})
		}
	}
}

// GetImage returns one image.
func (c *Client) GetImage(ctx context.Context, id string) (*Image, error) {
	im, err := c.images()
	if err != nil {
		return nil, c.opErr("get-image", id, err)
	}
	p, err := c.getImage(ctx, im, id)
	if err != nil {
		return nil, c.opErr("get-image", id, err)
	}
	return c.imageFrom(p), nil
}

// ImageFilter narrows Images.
type ImageFilter func(*imageFilter)

type imageFilter struct {
	labels  map[string]string
	status  string
	ownedBy bool
	all     bool
}

// OwnedImages lists only images crabbox created (the default).
func OwnedImages() ImageFilter { return func(f *imageFilter) { f.all = false } }

// AllImages lists every image the account owns, including foreign ones.
func AllImages() ImageFilter { return func(f *imageFilter) { f.all = true } }

// HasStatus lists images with a status (candidate, known-good, failed).
func HasStatus(s string) ImageFilter { return func(f *imageFilter) { f.status = s } }

// WithStatus lists images with a status.
//
// Deprecated: use HasStatus.
func WithStatus(s string) ImageFilter { return HasStatus(s) }

// WithLabel lists images carrying a label.
//
// Deprecated: use HasLabel.
func WithLabel(k, v string) ImageFilter { return HasLabel(k, v) }

// HasLabel lists images carrying the label k=v.
func HasLabel(k, v string) ImageFilter {
	return func(f *imageFilter) {
		if f.labels == nil {
			f.labels = map[string]string{}
		}
		f.labels[k] = v
	}
}

// Images lists images, newest first. By default only those crabbox created.
func (c *Client) Images(ctx context.Context, filters ...ImageFilter) ([]*Image, error) {
	var f imageFilter
	for _, fn := range filters {
		if fn != nil {
			fn(&f)
		}
	}
	im, err := c.images()
	if err != nil {
		return nil, c.opErr("images", "", err)
	}
	sel := map[string]string{}
	for k, v := range f.labels {
		sel[k] = v
	}
	if !f.all {
		sel[LabelManaged] = "true"
	}
	if f.status != "" {
		sel[LabelStatus] = f.status
	}
	ps, err := retry(ctx, c, "image", func(ctx context.Context) ([]*provider.Image, error) { return im.ListImages(ctx, sel) })
	if err != nil {
		return nil, c.opErr("images", "", err)
	}
	out := make([]*Image, 0, len(ps))
	for _, p := range ps {
		if p.State == provider.ImageDeleted {
			continue
		}
		out = append(out, c.imageFrom(p))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID > out[j].ID
	})
	return out, nil
}

// CopyImage copies an image to another region where the provider supports
// it (ErrUnsupported otherwise).
func (c *Client) CopyImage(ctx context.Context, imageID, region string) (*Image, error) {
	rc := c.caps.regionCopier
	if rc == nil {
		return nil, c.opErr("copy-image", imageID, fmt.Errorf("provider %s cannot copy images: %w", c.info.Name, ErrUnsupported))
	}
	src, err := c.GetImage(ctx, imageID)
	if err != nil {
		return nil, err
	}
	p, err := retry(ctx, c, "image", func(ctx context.Context) (*provider.Image, error) {
		return rc.CopyImage(ctx, imageID, region, src.Name)
	})
	if err != nil {
		if p != nil && p.ID != "" {
			// The copy was made although the call failed (a lost reply, a
			// cancellation): hand it back with the error, never lose it.
			img := c.imageFrom(p)
			img.Region = region
			return img, c.opErr("copy-image", imageID, err)
		}
		return nil, c.opErr("copy-image", imageID, err)
	}
	img := c.imageFrom(p)
	img.Region = region
	return img, nil
}

// getImage, currentChannel and channelHistory are the driver reads with the
// client's retry of transient errors.
func (c *Client) getImage(ctx context.Context, im provider.Images, id string) (*provider.Image, error) {
	return retry(ctx, c, "image", func(ctx context.Context) (*provider.Image, error) { return im.GetImage(ctx, id) })
}
