// Channels and promotion: Promote (only with proof), Promoted, ChannelHistory,
// Rollback, MarkKnownGood, MarkFailed, and setChannel, the one conditional
// channel write they share.

package crabbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

// Promotion is the result of Promote or Rollback.
type Promotion struct {
	Channel  string    `json:"channel"`
	Image    *Image    `json:"image"`
	Previous string    `json:"previous,omitempty"` // image id the channel pointed to before
	Version  int64     `json:"version"`
	At       time.Time `json:"at"`
	Operator string    `json:"operator"`
	Forced   string    `json:"forced,omitempty"` // the reason, when promoted without proof
	// Proof names what the promotion was based on, as the channel history
	// records it: "proof-<report digest>" or "forced-<reason>".
	Proof string `json:"proof,omitempty"`
}

type promoteOptions struct {
	channel     string
	proof       *SmokeReport
	forceReason string
	policy      ProofPolicy
	// record is the proof record the report matched (set by promote).
	record *ProofRecord
}

// PromoteOption configures Promote, Rollback and MarkKnownGood.
type PromoteOption func(*promoteOptions) error

// ToChannel picks the channel.
//
// Deprecated: use WithPromoteChannel.
func ToChannel(ch string) PromoteOption { return WithPromoteChannel(ch) }

// WithPromoteChannel picks the channel Promote and MarkKnownGood work on
// (default "default"), as WithChannel does for Warmup.
func WithPromoteChannel(ch string) PromoteOption {
	return func(o *promoteOptions) error {
		if err := validChannel(ch); err != nil {
			return err
		}
		o.channel = ch
		return nil
	}
}

// WithProof gives the passing smoke report of a lease booted from the
// image: a report Smoke returned (here or in another process, through its
// JSON), unedited, whose outcome Smoke recorded on the image. Hand-built,
// edited or foreign reports are refused with ErrNoProof; so are reports
// lacking checks the proof policy requires (see DefaultProofPolicy and
// WithProofPolicy).
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

// Promote points a channel at an image. It requires proof: the passing
// smoke report of a lease that booted this very image explicitly, whose
// outcome Smoke recorded on the image, including the checks the proof
// policy requires (WithProof, WithProofPolicy), unless Force is given. The
// promotion is recorded on the image (Client.Evidence) and in the
// channel's history entry (ChannelEntry.Proof). It refuses images that are not available or that crabbox
// did not create. The set is conditional on the channel being unchanged
// since it was read: a concurrent promotion returns ErrConflict naming the
// image the channel points at, a nil Promotion, and no label or event for
// this image (it keeps the protection the call turned on: see setChannel).
// The image is protected before the channel points at it.
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
		return nil, fmt.Errorf("%w: image %s lacks %s=true or %s=%s", ErrNotOwned, imageID, LabelManaged, LabelCreatedBy, provider.CreatedByValue)
	}
	if p.State != provider.ImageAvailable {
		return nil, fmt.Errorf("%w: image %s is %s, not available", ErrInvalidArgument, imageID, p.State)
	}
	if img.Status == StatusFailed && o.forceReason == "" {
		return nil, fmt.Errorf("%w: image %s is marked failed", ErrInvalidArgument, imageID)
	}
	if o.forceReason == "" {
		rec, err := verifyProof(img, o.proof, ProofCandidate, o.channel, o.policy)
		if err != nil {
			return nil, err
		}
		o.record = rec
	}
	return c.setChannel(ctx, im, chs, img, o, EventPromoted, nil)
}

// undoBound bounds the read setChannel does after a channel write did not
// land, detached from the caller's cancellation.
const undoBound = 30 * time.Second

// setChannel points the channel at img, conditionally on the channel's
// version: the one just read, or expect when non-nil (the version a caller
// based its decision on, as Rollback does).
//
// The image is protected before the write, so that from the moment the
// channel points at it a concurrent cleanup cannot delete it, and checked
// again after the write (a concurrent retire may have lifted it). A write
// that does not land (lost to a concurrent promotion, or failed) leaves no
// label and no event: the caller gets a nil Promotion and an error that,
// for a lost race, names the image the channel points at now. It keeps the
// protection it turned on: protection has no owner, and lifting it opens a
// window in which cleanup may delete the image while a concurrent
// promotion of it to another channel has just landed (an independent
// review forced exactly that); a leftover protection only costs storage.
func (c *Client) setChannel(ctx context.Context, im provider.Images, chs provider.Channels, img *Image, o promoteOptions, kind EventKind, expect *provider.ChannelEntry) (*Promotion, error) {
	cur, err := c.currentChannel(ctx, chs, o.channel)
	ifVersion := int64(-1)
	prev := ""
	if expect != nil && (err != nil || cur.Version != expect.Version || cur.ImageID != expect.ImageID) {
		switch {
		case err == nil:
			return nil, fmt.Errorf("%w: channel %s changed since version %d was read: it now points at %s (version %d)",
				ErrConflict, o.channel, expect.Version, cur.ImageID, cur.Version)
		case !errors.Is(err, ErrNotFound):
			return nil, err
		}
		return nil, fmt.Errorf("%w: channel %s changed since version %d was read: it is no longer set", ErrConflict, o.channel, expect.Version)
	}
	switch {
	case err == nil:
		ifVersion, prev = cur.Version, cur.ImageID
		if cur.ImageID == img.ID {
			// Already current: make sure it is protected (repairs an image
			// a retire elsewhere unprotected), then report the promotion.
			if err := c.protectForChannel(ctx, img, o.channel); err != nil {
				return nil, err
			}
			// And labelled: a promotion whose write landed after its call
			// gave up (a slow provider) has no promoted label yet.
			if v := img.Labels[labelPromotedPrefix+o.channel]; !strings.HasPrefix(v, strconv.FormatInt(cur.Version, 10)+".") {
				now := formatLabelTime(c.o.now())
				lbl := map[string]string{labelPromotedPrefix + o.channel: sanitizeLabelValue(fmt.Sprintf("%d.%s.%s", cur.Version, now, cur.Proof))}
				if err := retryErr(ctx, c, "image", func(ctx context.Context) error { return im.UpdateImageLabels(ctx, img.ID, lbl) }); err != nil {
					return nil, fmt.Errorf("channel %s points at %s, but labelling it failed: %w", o.channel, img.ID, err)
				}
			}
			return &Promotion{Channel: o.channel, Image: img, Previous: prev, Version: cur.Version, At: cur.At,
				Operator: cur.Operator, Forced: o.forceReason, Proof: cur.Proof}, nil
		}
	case errors.Is(err, ErrNotFound):
	default:
		return nil, err
	}
	if err := c.protectForChannel(ctx, img, o.channel); err != nil {
		return nil, err
	}
	// A conditional set is not retried on conflict: someone else promoted.
	e, err := retry(ctx, c, "channel", func(ctx context.Context) (*provider.ChannelEntry, error) {
		e, err := chs.SetChannel(ctx, provider.SetChannelRequest{Channel: o.channel, ImageID: img.ID,
			Operator: sanitizeLabelValue(c.o.operator), IfVersion: ifVersion, Proof: o.proofName()})
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
			return nil, c.lostChannel(ctx, chs, img, o.channel, err)
		}
		setErr = fmt.Errorf("channel %s now points at %s, but the provider reported: %w", o.channel, img.ID, err)
	}
	// The channel points at img now: what follows is the promotion's own
	// bookkeeping and must happen even when the caller gives up now, so it
	// runs detached from ctx's cancellation, bounded.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoBound)
	defer cancel()
	if err := c.stillProtected(ctx, img, o.channel); err != nil {
		return nil, err
	}
	now := formatLabelTime(c.o.now())
	lbl := map[string]string{LabelStatusAt: now,
		labelPromotedPrefix + o.channel: sanitizeLabelValue(fmt.Sprintf("%d.%s.%s", e.Version, now, o.proofName()))}
	if o.record != nil {
		lbl[LabelSmokeLease] = o.record.LeaseID
	} else if o.forceReason != "" && kind != EventRolledBack {
		lbl[labelForced] = sanitizeLabelValue(now + "." + o.forceReason)
	}
	if err := retryErr(ctx, c, "image", func(ctx context.Context) error { return im.UpdateImageLabels(ctx, img.ID, lbl) }); err != nil {
		return nil, fmt.Errorf("channel %s now points at %s, but labelling it failed: %w", o.channel, img.ID, err)
	}
	msg := fmt.Sprintf("channel %s -> %s (%s), previous %q", o.channel, img.ID, img.Name, prev)
	if o.forceReason != "" {
		msg += " FORCED: " + o.forceReason
	}
	c.emit(Event{Kind: kind, Resource: "channel", ID: o.channel, State: img.ID, Message: msg})
	return &Promotion{Channel: o.channel, Image: img, Previous: prev, Version: e.Version, At: e.At,
		Operator: c.o.operator, Forced: o.forceReason, Proof: o.proofName()}, setErr
}

// protectForChannel turns on img's deletion protection before a channel
// write points at it, where the provider has protection.
func (c *Client) protectForChannel(ctx context.Context, img *Image, channel string) error {
	pr := c.caps.protector
	if pr == nil {
		return nil
	}
	if err := c.protect(ctx, pr, img.ID, true); err != nil {
		return fmt.Errorf("protecting %s before pointing channel %s at it: %w", img.ID, channel, err)
	}
	img.Protected = true
	return nil
}

// stillProtected re-reads img after the channel write landed and protects
// it again when a concurrent retire (MarkKnownGood or Rollback superseding
// it, reading the channel before this write) lifted the protection since
// protectForChannel. The retire re-reads the channel after lifting, so one
// of the two always sees the other.
func (c *Client) stillProtected(ctx context.Context, img *Image, channel string) error {
	pr := c.caps.protector
	if pr == nil {
		return nil
	}
	cur, err := c.GetImage(ctx, img.ID)
	if err == nil && cur.Protected {
		return nil
	}
	if err := c.protect(ctx, pr, img.ID, true); err != nil {
		return fmt.Errorf("channel %s now points at %s, but re-protecting it failed: %w", channel, img.ID, err)
	}
	return nil
}

// lostChannel says, after a channel write that did not land (setErr), where
// the channel points now, read with a detached, bounded context.
func (c *Client) lostChannel(ctx context.Context, chs provider.Channels, img *Image, channel string, setErr error) error {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoBound)
	defer cancel()
	now, err := c.currentChannel(uctx, chs, channel)
	switch {
	case err != nil:
		return setErr
	case now.ImageID == img.ID:
		return fmt.Errorf("channel %s points at %s (version %d) although its write reported a failure; the image stays protected: %w",
			channel, img.ID, now.Version, setErr)
	case errors.Is(setErr, ErrConflict):
		return fmt.Errorf("channel %s was promoted concurrently: it now points at %s (version %d), not %s: %w",
			channel, now.ImageID, now.Version, img.ID, setErr)
	}
	return fmt.Errorf("channel %s still points at %s (version %d): %w", channel, now.ImageID, now.Version, setErr)
}

// Promoted returns the image a channel points at ("" means DefaultChannel);
// ErrNotFound if the channel was never set.
func (c *Client) Promoted(ctx context.Context, channel string) (*Image, error) {
	if channel == "" {
		channel = DefaultChannel
	}
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
// previous known-good image. Like Promote, a Rollback that loses to a
// concurrent promotion returns ErrConflict and a nil Promotion and changes
// nothing.
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
	if err := c.retire(ctx, chs, channel, current); err != nil {
		return pr, fmt.Errorf("rolled back to %s: %w", target.ID, err)
	}
	return pr, setErr
}

func (c *Client) markStatus(ctx context.Context, im provider.Images, id, status string) error {
	return retryErr(ctx, c, "image", func(ctx context.Context) error {
		return im.UpdateImageLabels(ctx, id, map[string]string{LabelStatus: status, LabelStatusAt: formatLabelTime(c.o.now())})
	})
}

// MarkKnownGood records that an image passed on a normal lease: proof is
// the passing smoke report of a lease that booted the image from the
// channel (WithPromoteChannel, default "default"), recorded by Smoke as for
// Promote, with the checks the proof policy requires for known-good. Once the promoted
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
	im, err := c.images()
	if err != nil {
		return nil, err
	}
	p, err := c.getImage(ctx, im, imageID)
	if err != nil {
		return nil, err
	}
	if !ownedLabels(p.Labels) {
		return nil, fmt.Errorf("%w: image %s", ErrNotOwned, imageID)
	}
	if p.Labels[LabelStatus] == StatusFailed {
		return nil, fmt.Errorf("%w: image %s is marked failed (rolled back or MarkFailed): promote it again first", ErrInvalidArgument, imageID)
	}
	if _, err := verifyProof(c.imageFrom(p), proof, ProofKnownGood, o.channel, o.policy); err != nil {
		return nil, err
	}
	chs, err := c.channels()
	if err != nil {
		return nil, err
	}
	// Known-good is about the image the channel serves: a report of a
	// lease that booted it before it was superseded or rolled back proves
	// nothing about it now.
	cur, err := c.currentChannel(ctx, chs, o.channel)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("%w: channel %s was never set, so it does not serve %s", ErrConflict, o.channel, imageID)
	case err != nil:
		return nil, err
	case cur.ImageID != imageID:
		return nil, fmt.Errorf("%w: channel %s serves %s (version %d), not %s", ErrConflict, o.channel, cur.ImageID, cur.Version, imageID)
	}
	if err := c.markStatus(ctx, im, imageID, StatusKnownGood); err != nil {
		return nil, err
	}
	// Lift protection from superseded images of the channel.
	if mk := c.caps.versionMarker; mk != nil {
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
	// Only images this one superseded: a promotion that landed
	// after the channel was read (a later version) is not
	// retired, whichever image it points at.
	keep := map[string]bool{imageID: true}
	for _, e := range hist {
		if e.Version >= cur.Version {
			keep[e.ImageID] = true
		}
	}
	for _, e := range hist {
		if e.Version >= cur.Version || keep[e.ImageID] {
			continue
		}
		keep[e.ImageID] = true
		if err := c.retire(ctx, chs, o.channel, e.ImageID); err != nil {
			return nil, err
		}
	}
	return c.GetImage(ctx, imageID)
}

// protect turns an image's deletion protection on or off, retried like every
// image call.
func (c *Client) protect(ctx context.Context, pr provider.Protector, id string, on bool) error {
	return retryErr(ctx, c, "image", func(ctx context.Context) error { return pr.ProtectImage(ctx, id, on) })
}

// retire lifts promotion protection from an image the channel no longer
// points at and deprecates it where the provider supports that, unless a
// channel serves it: the one retired from and every channel the store
// lists (provider.ChannelLister), read before lifting and again after.
// When a concurrent Promote or Rollback made the image current meanwhile,
// the protection goes back on and the image is not deprecated (that writer
// also re-checks protection after its write, so one of the two always sees
// the other).
func (c *Client) retire(ctx context.Context, chs provider.Channels, channel, id string) error {
	// An image another channel serves is not retired at all.
	if by, err := c.servedBy(ctx, chs, id, channel); err != nil || by != "" {
		if err != nil {
			return fmt.Errorf("reading the channels before retiring %s (kept as it is): %w", id, err)
		}
		return nil
	}
	if pr := c.caps.protector; pr != nil {
		err := c.protect(ctx, pr, id, false)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("lifting protection of superseded image %s: %w", id, err)
		}
		by, err := c.servedBy(ctx, chs, id, channel)
		if err != nil {
			// Unsure whether a channel serves it: keep it protected.
			if perr := c.protect(ctx, pr, id, true); perr != nil {
				return fmt.Errorf("re-reading the channels after unprotecting %s failed (%v), and so did protecting it again: %w", id, err, perr)
			}
			return fmt.Errorf("re-reading the channels after unprotecting %s (protected again): %w", id, err)
		}
		if by != "" {
			if err := c.protect(ctx, pr, id, true); err != nil {
				return fmt.Errorf("channel %s points at %s, but protecting it again failed: %w", by, id, err)
			}
			return nil
		}
	}
	if dp := c.caps.deprecator; dp != nil {
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

// servedBy returns a channel that points at id: channel itself or one the
// store lists; "" when none does.
func (c *Client) servedBy(ctx context.Context, chs provider.Channels, id, channel string) (string, error) {
	names := []string{channel}
	if cl := c.caps.lister; cl != nil {
		listed, err := retry(ctx, c, "channel", cl.ListChannels)
		if err != nil {
			return "", err
		}
		names = append(names, listed...)
	}
	for _, ch := range names {
		cur, err := c.currentChannel(ctx, chs, ch)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return "", err
		case cur.ImageID == id:
			return ch, nil
		}
	}
	return "", nil
}
