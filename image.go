package crabbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
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
	Labels      map[string]string   `json:"labels,omitempty"`
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
	img.Owned = lb[LabelManaged] == "true"
	img.Status = lb[LabelStatus]
	img.SourceLease = lb[LabelSourceLease]
	img.Operator = lb[LabelOperator]
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

func (c *Client) images() (provider.Images, error) {
	im, ok := c.drv.(provider.Images)
	if !ok {
		return nil, fmt.Errorf("provider %s has no images: %w", c.info.Name, ErrUnsupported)
	}
	return im, nil
}

func (c *Client) channels() (provider.Channels, error) {
	ch, ok := c.drv.(provider.Channels)
	if !ok {
		return nil, fmt.Errorf("provider %s has no promotion channels: %w", c.info.Name, ErrUnsupported)
	}
	return ch, nil
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

// WithNoReboot images without rebooting the source (default true; pass
// false for a file-system-consistent image).
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

// WithImageLabels adds labels to the image (keys may not start with
// "crabbox").
func WithImageLabels(labels map[string]string) ImageOption {
	return func(o *imageOptions) error {
		for k, v := range labels {
			if strings.HasPrefix(k, "crabbox") || k == LabelCreatedBy || sanitizeLabelValue(k) != k {
				return fmt.Errorf("%w: image label key %q is reserved or invalid", ErrInvalidArgument, k)
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
const prepareScript = `set -eu
R="${CRABBOX_FS_ROOT:-}"
if [ ! -f "$R/var/lib/crabbox/bootstrap-done" ]; then echo "crabbox: not a crabbox box (no bootstrap marker); refusing to prepare" >&2; exit 2; fi
S=""
if [ -z "$R" ] && [ "$(id -u)" != 0 ]; then S="sudo -n"; fi
if [ -z "$R" ] && command -v cloud-init >/dev/null 2>&1; then $S cloud-init clean --logs || true; fi
$S rm -f "$R"/etc/ssh/ssh_host_*_key "$R"/etc/ssh/ssh_host_*_key.pub
$S rm -f "$R"/root/.bash_history "$R"/root/.zsh_history "$R"/root/.python_history "$R"/root/.lesshst "$R"/root/.viminfo
# The next box booted from the image must run its own bootstrap before it
# counts as ready.
$S rm -f "$R/var/lib/crabbox/bootstrap-done"
for h in "$R"/home/*; do
  [ -d "$h" ] || continue
  $S rm -f "$h/.bash_history" "$h/.zsh_history" "$h/.python_history" "$h/.lesshst" "$h/.viminfo" "$h/.ssh/authorized_keys"
done
sync`

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
	// The token is derived from the lease and the name, so calling
	// CreateImage again for the same lease and name (after a wait that gave
	// up, or an ambiguous error) adopts the image instead of making a
	// second one.
	sum := sha256.Sum256([]byte(l.ID + "\x00" + name))
	token := "cbi_" + hex.EncodeToString(sum[:6])
	now := c.o.now().UTC()
	labels := map[string]string{}
	for k, v := range o.labels {
		labels[k] = v
	}
	for k, v := range map[string]string{
		LabelManaged:     "true",
		LabelCreatedBy:   "crabbox",
		LabelSourceLease: l.ID,
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

// WithStatus lists images with a status (candidate, known-good, failed).
func WithStatus(s string) ImageFilter { return func(f *imageFilter) { f.status = s } }

// WithLabel lists images carrying a label.
func WithLabel(k, v string) ImageFilter {
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

// Promotion is the result of Promote or Rollback.
type Promotion struct {
	Channel  string    `json:"channel"`
	Image    *Image    `json:"image"`
	Previous string    `json:"previous,omitempty"` // image id the channel pointed to before
	Version  int64     `json:"version"`
	At       time.Time `json:"at"`
	Operator string    `json:"operator"`
	Forced   string    `json:"forced,omitempty"` // the reason, when promoted without proof
}

type promoteOptions struct {
	channel     string
	proof       *SmokeReport
	forceReason string
}

// PromoteOption configures Promote, Rollback and MarkKnownGood.
type PromoteOption func(*promoteOptions) error

// ToChannel picks the channel (default "default").
func ToChannel(ch string) PromoteOption {
	return func(o *promoteOptions) error {
		if err := validChannel(ch); err != nil {
			return err
		}
		o.channel = ch
		return nil
	}
}

// WithProof gives the passing smoke report of a lease booted from the image.
func WithProof(r *SmokeReport) PromoteOption {
	return func(o *promoteOptions) error { o.proof = r; return nil }
}

// Force promotes without proof; the reason is recorded in the result and
// the events. Use for break-glass rollbacks only.
func Force(reason string) PromoteOption {
	return func(o *promoteOptions) error {
		if strings.TrimSpace(reason) == "" {
			return fmt.Errorf("%w: Force needs a reason", ErrInvalidArgument)
		}
		o.forceReason = reason
		return nil
	}
}

func parsePromoteOptions(opts []PromoteOption) (promoteOptions, error) {
	o := promoteOptions{channel: DefaultChannel}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// checkProof verifies a smoke report proves the image.
func checkProof(r *SmokeReport, imageID string) error {
	if r == nil {
		return fmt.Errorf("%w: give WithProof(report) from a lease booted from %s, or Force(reason)", ErrNoProof, imageID)
	}
	if r.ImageID != imageID {
		return fmt.Errorf("%w: the report is from a lease booted from %q, not %s", ErrNoProof, r.ImageID, imageID)
	}
	if !r.OK() {
		return fmt.Errorf("%w: the report of lease %s did not pass (%d failed): %w", ErrNoProof, r.LeaseID, r.Failed, ErrSmokeFailed)
	}
	return nil
}

// Promote points a channel at an image. It requires proof: a passing smoke
// report from a lease booted from this very image (WithProof), unless
// Force is given. It refuses images that are not available or that crabbox
// did not create. The set is conditional on the channel being unchanged
// since it was read: a concurrent promotion returns ErrConflict.
func (c *Client) Promote(ctx context.Context, imageID string, opts ...PromoteOption) (*Promotion, error) {
	p, err := c.promote(ctx, imageID, opts)
	return p, c.opErr("promote", imageID, err)
}

func (c *Client) promote(ctx context.Context, imageID string, opts []PromoteOption) (*Promotion, error) {
	o, err := parsePromoteOptions(opts)
	if err != nil {
		return nil, err
	}
	im, err := c.images()
	if err != nil {
		return nil, err
	}
	chs, err := c.channels()
	if err != nil {
		return nil, err
	}
	p, err := c.getImage(ctx, im, imageID)
	if err != nil {
		return nil, err
	}
	img := c.imageFrom(p)
	if !img.Owned {
		return nil, fmt.Errorf("%w: image %s has no %s=true label", ErrNotOwned, imageID, LabelManaged)
	}
	if p.State != provider.ImageAvailable {
		return nil, fmt.Errorf("%w: image %s is %s, not available", ErrInvalidArgument, imageID, p.State)
	}
	if img.Status == StatusFailed && o.forceReason == "" {
		return nil, fmt.Errorf("%w: image %s is marked failed", ErrInvalidArgument, imageID)
	}
	if o.forceReason == "" {
		if err := checkProof(o.proof, imageID); err != nil {
			return nil, err
		}
	}
	return c.setChannel(ctx, im, chs, img, o, EventPromoted, nil)
}

// setChannel points the channel at img, conditionally on the channel's
// version: the one just read, or expect when non-nil (the version a caller
// based its decision on, as Rollback does).
func (c *Client) setChannel(ctx context.Context, im provider.Images, chs provider.Channels, img *Image, o promoteOptions, kind EventKind, expect *provider.ChannelEntry) (*Promotion, error) {
	cur, err := c.currentChannel(ctx, chs, o.channel)
	ifVersion := int64(-1)
	prev := ""
	if expect != nil && (err != nil || cur.Version != expect.Version || cur.ImageID != expect.ImageID) {
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: channel %s changed since version %d was read", ErrConflict, o.channel, expect.Version)
	}
	switch {
	case err == nil:
		ifVersion, prev = cur.Version, cur.ImageID
		if cur.ImageID == img.ID {
			return &Promotion{Channel: o.channel, Image: img, Previous: prev, Version: cur.Version, At: cur.At,
				Operator: cur.Operator, Forced: o.forceReason}, nil
		}
	case errors.Is(err, ErrNotFound):
	default:
		return nil, err
	}
	// A conditional set is not retried on conflict: someone else promoted.
	e, err := retry(ctx, c, "channel", func(ctx context.Context) (*provider.ChannelEntry, error) {
		e, err := chs.SetChannel(ctx, provider.SetChannelRequest{Channel: o.channel, ImageID: img.ID,
			Operator: sanitizeLabelValue(c.o.operator), IfVersion: ifVersion})
		if err != nil && e != nil {
			// The channel moved but the driver's follow-up work failed:
			// repeating the conditional set would only report a conflict.
			return e, &finalError{err}
		}
		return e, err
	})
	var setErr error
	if err != nil {
		if e == nil || e.ImageID != img.ID {
			return nil, err
		}
		setErr = fmt.Errorf("channel %s now points at %s, but the provider reported: %w", o.channel, img.ID, err)
	}
	now := formatLabelTime(c.o.now())
	lbl := map[string]string{LabelStatusAt: now}
	if o.proof != nil {
		lbl[LabelSmokeLease] = o.proof.LeaseID
	}
	if err := retryErr(ctx, c, "image", func(ctx context.Context) error { return im.UpdateImageLabels(ctx, img.ID, lbl) }); err != nil {
		return nil, fmt.Errorf("channel %s now points at %s, but labelling it failed: %w", o.channel, img.ID, err)
	}
	if pr, ok := c.drv.(provider.Protector); ok {
		if err := retryErr(ctx, c, "image", func(ctx context.Context) error { return pr.ProtectImage(ctx, img.ID, true) }); err != nil {
			return nil, fmt.Errorf("channel %s now points at %s, but protecting it failed: %w", o.channel, img.ID, err)
		}
		img.Protected = true
	}
	msg := fmt.Sprintf("channel %s -> %s (%s), previous %q", o.channel, img.ID, img.Name, prev)
	if o.forceReason != "" {
		msg += " FORCED: " + o.forceReason
	}
	c.emit(Event{Kind: kind, Resource: "channel", ID: o.channel, State: img.ID, Message: msg})
	return &Promotion{Channel: o.channel, Image: img, Previous: prev, Version: e.Version, At: e.At,
		Operator: c.o.operator, Forced: o.forceReason}, setErr
}

// Promoted returns the image a channel points at; ErrNotFound if the channel
// was never set.
func (c *Client) Promoted(ctx context.Context, channel string) (*Image, error) {
	if err := validChannel(channel); err != nil {
		return nil, c.opErr("promoted", channel, err)
	}
	chs, err := c.channels()
	if err != nil {
		return nil, c.opErr("promoted", channel, err)
	}
	e, err := c.currentChannel(ctx, chs, channel)
	if err != nil {
		return nil, c.opErr("promoted", channel, err)
	}
	return c.GetImage(ctx, e.ImageID)
}

// ChannelHistory returns the values a channel had, oldest first.
func (c *Client) ChannelHistory(ctx context.Context, channel string) ([]provider.ChannelEntry, error) {
	chs, err := c.channels()
	if err != nil {
		return nil, c.opErr("channel-history", channel, err)
	}
	h, err := c.channelHistory(ctx, chs, channel)
	return h, c.opErr("channel-history", channel, err)
}

// Rollback points the channel back at the most recent previously promoted
// image that is known-good, and marks the image rolled back from as failed
// (it is kept for inspection, not deleted). ErrNotFound when there is no
// previous known-good image.
func (c *Client) Rollback(ctx context.Context, channel string, reason string) (*Promotion, error) {
	p, err := c.rollback(ctx, channel, reason)
	return p, c.opErr("rollback", channel, err)
}

func (c *Client) rollback(ctx context.Context, channel, reason string) (*Promotion, error) {
	if err := validChannel(channel); err != nil {
		return nil, err
	}
	im, err := c.images()
	if err != nil {
		return nil, err
	}
	chs, err := c.channels()
	if err != nil {
		return nil, err
	}
	hist, err := c.channelHistory(ctx, chs, channel)
	if err != nil {
		return nil, err
	}
	if len(hist) == 0 {
		return nil, fmt.Errorf("channel %s was never set: %w", channel, ErrNotFound)
	}
	current := hist[len(hist)-1].ImageID
	var target *Image
	for i := len(hist) - 2; i >= 0 && target == nil; i-- {
		id := hist[i].ImageID
		if id == current {
			continue
		}
		p, err := c.getImage(ctx, im, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if p.State == provider.ImageAvailable && p.Labels[LabelStatus] == StatusKnownGood {
			target = c.imageFrom(p)
		}
	}
	if target == nil {
		return nil, fmt.Errorf("no earlier known-good image in channel %s: %w", channel, ErrNotFound)
	}
	if strings.TrimSpace(reason) == "" {
		reason = "rolled back"
	}
	o := promoteOptions{channel: channel, forceReason: "rollback: " + reason}
	last := hist[len(hist)-1]
	pr, setErr := c.setChannel(ctx, im, chs, target, o, EventRolledBack, &last)
	if pr == nil {
		return nil, setErr
	}
	pr.Forced = ""
	if err := c.markStatus(ctx, im, current, StatusFailed); err != nil {
		return pr, fmt.Errorf("rolled back to %s, but marking %s failed did not work: %w", target.ID, current, err)
	}
	// The failed image stays for inspection; cleanup deletes it after the
	// inspection period, so it must not keep promotion's protection.
	if err := c.retire(ctx, current); err != nil {
		return pr, fmt.Errorf("rolled back to %s: %w", target.ID, err)
	}
	return pr, setErr
}

func (c *Client) markStatus(ctx context.Context, im provider.Images, id, status string) error {
	return retryErr(ctx, c, "image", func(ctx context.Context) error {
		return im.UpdateImageLabels(ctx, id, map[string]string{LabelStatus: status, LabelStatusAt: formatLabelTime(c.o.now())})
	})
}

// MarkKnownGood records that an image passed on a normal lease (for
// example the smoke of a lease booted from the promoted channel). The report
// must pass and come from a lease booted from the image. Once the promoted
// image is known-good, older images of the channel lose the deletion
// protection promotion gave them, and are deprecated where supported.
func (c *Client) MarkKnownGood(ctx context.Context, imageID string, proof *SmokeReport, opts ...PromoteOption) (*Image, error) {
	img, err := c.markKnownGood(ctx, imageID, proof, opts)
	return img, c.opErr("mark-known-good", imageID, err)
}

func (c *Client) markKnownGood(ctx context.Context, imageID string, proof *SmokeReport, opts []PromoteOption) (*Image, error) {
	o, err := parsePromoteOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := checkProof(proof, imageID); err != nil {
		return nil, err
	}
	if proof.ImageSource != ImagePromoted {
		return nil, fmt.Errorf("%w: known-good needs a pass on a normal lease that booted %s from its channel, not a lease with image source %q",
			ErrNoProof, imageID, proof.ImageSource)
	}
	im, err := c.images()
	if err != nil {
		return nil, err
	}
	p, err := c.getImage(ctx, im, imageID)
	if err != nil {
		return nil, err
	}
	if p.Labels[LabelManaged] != "true" {
		return nil, fmt.Errorf("%w: image %s", ErrNotOwned, imageID)
	}
	if err := c.markStatus(ctx, im, imageID, StatusKnownGood); err != nil {
		return nil, err
	}
	// Lift protection from superseded images of the channel.
	if chs, ok := c.drv.(provider.Channels); ok {
		cur, err := c.currentChannel(ctx, chs, o.channel)
		if err == nil && cur.ImageID == imageID {
			if mk, ok := c.drv.(provider.ChannelVersionMarker); ok {
				if err := retryErr(ctx, c, "channel", func(ctx context.Context) error {
					return mk.MarkKnownGood(ctx, o.channel, cur.Version)
				}); err != nil {
					return nil, fmt.Errorf("labelling channel %s version %d known-good: %w", o.channel, cur.Version, err)
				}
			}
			hist, err := c.channelHistory(ctx, chs, o.channel)
			if err != nil {
				return nil, err
			}
			seen := map[string]bool{imageID: true}
			for _, e := range hist {
				if seen[e.ImageID] {
					continue
				}
				seen[e.ImageID] = true
				if err := c.retire(ctx, e.ImageID); err != nil {
					return nil, err
				}
			}
		}
	}
	return c.GetImage(ctx, imageID)
}

// retire lifts promotion protection from a superseded image and deprecates
// it where the provider supports that.
func (c *Client) retire(ctx context.Context, id string) error {
	if pr, ok := c.drv.(provider.Protector); ok {
		err := retryErr(ctx, c, "image", func(ctx context.Context) error { return pr.ProtectImage(ctx, id, false) })
		if err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("lifting protection of superseded image %s: %w", id, err)
		}
	}
	if dp, ok := c.drv.(provider.Deprecator); ok {
		err := retryErr(ctx, c, "image", func(ctx context.Context) error { return dp.DeprecateImage(ctx, id, c.o.now()) })
		if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrUnsupported) {
			return fmt.Errorf("deprecating superseded image %s: %w", id, err)
		}
	}
	return nil
}

// MarkFailed records that an image failed (it is kept for inspection and
// deleted by cleanup after the inspection period).
func (c *Client) MarkFailed(ctx context.Context, imageID string) error {
	im, err := c.images()
	if err != nil {
		return c.opErr("mark-failed", imageID, err)
	}
	return c.opErr("mark-failed", imageID, c.markStatus(ctx, im, imageID, StatusFailed))
}

// CopyImage copies an image to another region where the provider supports
// it (ErrUnsupported otherwise).
func (c *Client) CopyImage(ctx context.Context, imageID, region string) (*Image, error) {
	rc, ok := c.drv.(provider.RegionCopier)
	if !ok {
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

func (c *Client) currentChannel(ctx context.Context, chs provider.Channels, ch string) (*provider.ChannelEntry, error) {
	return retry(ctx, c, "channel", func(ctx context.Context) (*provider.ChannelEntry, error) {
		return chs.CurrentChannel(ctx, ch)
	})
}

func (c *Client) channelHistory(ctx context.Context, chs provider.Channels, ch string) ([]provider.ChannelEntry, error) {
	return retry(ctx, c, "channel", func(ctx context.Context) ([]provider.ChannelEntry, error) {
		return chs.ChannelHistory(ctx, ch)
	})
}
