// The channel mirrored onto image labels (current, previous).

package hetzner

import (
	"context"
	"errors"
	"sort"
	"strconv"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/provider"
)

// Values of a channel's image label (see ChannelLabelKey).
const (
	// ChannelCurrent marks the image a channel points at.
	ChannelCurrent = "current"
	// ChannelPrevious marks the image the channel pointed at before the
	// current one (the most recent earlier version with another image).
	ChannelPrevious = "previous"
)

// maxMirrorRounds bounds how often mirrorChannel starts over because the
// channel moved while it wrote the labels.
const maxMirrorRounds = 8

// ChannelLabelKey returns the image label key that mirrors a channel on
// Hetzner: "crabbox-channel-CHANNEL" (under the label prefix, if one is
// configured). The current image carries it with the value "current", the
// previous one with "previous"; no other image carries it. A label selector
// such as "crabbox-channel-default=current" finds the promoted image in the
// console or with any Hetzner tool.
func (d *Driver) ChannelLabelKey(channel string) (string, error) {
	if err := checkChannel(channel); err != nil {
		return "", err
	}
	k := d.rk("crabbox-channel-" + channel)
	if !ValidLabelKey(k) {
		return "", provider.Errorf(provider.ErrInvalidArgument, "hetzner: channel %q gives the label key %q, which Hetzner cannot store", channel, k)
	}
	return k, nil
}

// ChannelImagesFromLabels reads a channel's current and previous image from
// image labels alone (not from the channel records that CurrentChannel
// reads). previous is nil when no image is labelled previous. ErrNotFound
// when no image is labelled current (the channel was never set, points at a
// system image, which cannot carry labels, or its labels were removed);
// ErrConflict when several images are labelled alike, which happens only
// for the moment a promotion rewrites the labels.
func (d *Driver) ChannelImagesFromLabels(ctx context.Context, channel string) (current, previous *provider.Image, err error) {
	key, err := d.ChannelLabelKey(channel)
	if err != nil {
		return nil, nil, err
	}
	ims, err := d.c.Image.AllWithOpts(ctx, hcloud.ImageListOpts{ListOpts: hcloud.ListOpts{LabelSelector: key}})
	if err != nil {
		return nil, nil, mapErr("list channel images", err)
	}
	var cur, prev []*hcloud.Image
	for _, im := range ims {
		switch im.Labels[key] {
		case ChannelCurrent:
			cur = append(cur, im)
		case ChannelPrevious:
			prev = append(prev, im)
		}
	}
	if len(cur) > 1 || len(prev) > 1 {
		return nil, nil, provider.Errorf(provider.ErrConflict, "hetzner: channel %q: %d images labelled current and %d previous (a promotion is rewriting them)", channel, len(cur), len(prev))
	}
	if len(cur) == 0 {
		return nil, nil, provider.Errorf(provider.ErrNotFound, "hetzner: no image is labelled %s=%s", key, ChannelCurrent)
	}
	current = d.toImage(cur[0])
	if len(prev) == 1 {
		previous = d.toImage(prev[0])
	}
	return current, previous, nil
}

// SyncChannelLabels rewrites a channel's image labels from its records (see
// ChannelLabelKey). SetChannel does this itself; call it to repair the
// labels after a SetChannel that reported a failure to write them, or after
// labels were edited by hand.
func (d *Driver) SyncChannelLabels(ctx context.Context, channel string) error {
	if err := checkChannel(channel); err != nil {
		return err
	}
	return d.mirrorChannel(ctx, channel)
}

// channelHead is what the image labels of a channel mirror.
type channelHead struct {
	version           int64
	current, previous string // image ids; previous may be ""
}

func headOf(entries []provider.ChannelEntry) channelHead {
	if len(entries) == 0 {
		return channelHead{}
	}
	last := entries[len(entries)-1]
	h := channelHead{version: last.Version, current: last.ImageID}
	for i := len(entries) - 2; i >= 0; i-- {
		if entries[i].ImageID != last.ImageID {
			h.previous = entries[i].ImageID
			break
		}
	}
	return h
}

func (h channelHead) want() map[string]string {
	w := map[string]string{}
	if h.previous != "" {
		w[h.previous] = ChannelPrevious
	}
	if h.current != "" {
		w[h.current] = ChannelCurrent
	}
	return w
}

// mirrorChannel makes the channel's image labels match its records: the
// current image labelled current, the previous one previous, every other
// image unlabelled.
//
// Hetzner cannot update labels conditionally, so racing promotions may
// write labels from views that are already stale. Each writer therefore
// checks after writing that the channel's head is still the one it
// mirrored and that the labels read back as it wrote them, and starts over
// otherwise. The writer whose check comes last saw the final head, and any
// writer whose stale writes land later sees the moved head in its own check
// and rewrites: when the racing promotions have returned, the labels match
// the winner.
func (d *Driver) mirrorChannel(ctx context.Context, channel string) error {
	key, err := d.ChannelLabelKey(channel)
	if err != nil {
		return err
	}
	entries, _, err := d.channelRecords(ctx, channel)
	if err != nil {
		return err
	}
	head := headOf(entries)
	for round := 0; round < maxMirrorRounds; round++ {
		if err := d.writeChannelLabels(ctx, key, head); err != nil {
			return err
		}
		entries, _, err := d.channelRecords(ctx, channel)
		if err != nil {
			return err
		}
		now := headOf(entries)
		if now != head {
			head = now
			continue
		}
		ok, err := d.channelLabelsMatch(ctx, key, head)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return provider.Errorf(provider.ErrUnavailable, "hetzner: channel %q kept changing while its image labels were written", channel)
}

// labelledImages lists the images carrying key.
func (d *Driver) labelledImages(ctx context.Context, key string) ([]*hcloud.Image, error) {
	ims, err := d.c.Image.AllWithOpts(ctx, hcloud.ImageListOpts{ListOpts: hcloud.ListOpts{LabelSelector: key}})
	if err != nil {
		return nil, mapErr("list channel images", err)
	}
	sort.Slice(ims, func(i, j int) bool { return ims[i].ID < ims[j].ID })
	return ims, nil
}

func (d *Driver) channelLabelsMatch(ctx context.Context, key string, head channelHead) (bool, error) {
	ims, err := d.labelledImages(ctx, key)
	if err != nil {
		return false, err
	}
	want := head.want()
	seen := map[string]bool{}
	for _, im := range ims {
		id := strconv.FormatInt(im.ID, 10)
		if im.Labels[key] != want[id] {
			return false, nil
		}
		seen[id] = true
	}
	for id := range want {
		if !seen[id] && d.labelable(ctx, id) {
			return false, nil
		}
	}
	return true, nil
}

// labelable reports whether an image exists and can carry labels (system
// and app images cannot).
func (d *Driver) labelable(ctx context.Context, id string) bool {
	im, err := d.getImage(ctx, id)
	return err == nil && im.Type != hcloud.ImageTypeSystem && im.Type != hcloud.ImageTypeApp
}

// writeChannelLabels demotes images that no longer hold their label, then
// labels the previous and the current image.
func (d *Driver) writeChannelLabels(ctx context.Context, key string, head channelHead) error {
	ims, err := d.labelledImages(ctx, key)
	if err != nil {
		return err
	}
	want := head.want()
	have := map[string]string{}
	var errs []error
	for _, im := range ims {
		id := strconv.FormatInt(im.ID, 10)
		have[id] = im.Labels[key]
		if want[id] == "" {
			errs = append(errs, d.setImageLabel(ctx, id, key, ""))
		}
	}
	for _, id := range []string{head.previous, head.current} {
		if id == "" || have[id] == want[id] {
			continue
		}
		errs = append(errs, d.setImageLabel(ctx, id, key, want[id]))
	}
	return errors.Join(errs...)
}

// setImageLabel sets (or with "" removes) one label on an image, reading
// the image right before writing so that other labels written meanwhile are
// kept as far as Hetzner allows (label updates replace the whole set). A
// missing image and a system or app image are skipped: they cannot carry
// the mirror.
func (d *Driver) setImageLabel(ctx context.Context, id, key, value string) error {
	im, err := d.getImage(ctx, id)
	if errors.Is(err, provider.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if im.Type == hcloud.ImageTypeSystem || im.Type == hcloud.ImageTypeApp || im.Labels[key] == value {
		return nil
	}
	_, _, err = d.c.Image.Update(ctx, im, hcloud.ImageUpdateOpts{Labels: mergeLabels(im.Labels, map[string]string{key: value})})
	if err != nil && !hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
		return mapErr("label channel image", err)
	}
	return nil
}
