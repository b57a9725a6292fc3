// Channels: provider.Channels with atomic conditional sets, and
// provider.ChannelVersionMarker.

package refdriver

import (
	"context"
	"fmt"
	"slices"

	"github.com/crabbox/crabbox-go/provider"
)

// CurrentChannel implements provider.Channels.
func (d *Driver) CurrentChannel(ctx context.Context, channel string) (*provider.ChannelEntry, error) {
	var out *provider.ChannelEntry
	err := d.be.call(ctx, func(s *state) error {
		h := s.channels[channel]
		if len(h) == 0 {
			return notFound("channel", channel)
		}
		e := h[len(h)-1]
		out = &e
		return nil
	})
	return out, mapErr(err)
}

// SetChannel implements provider.Channels. The version check and the write
// are one backend call, so of two racing conditional sets exactly one wins.
func (d *Driver) SetChannel(ctx context.Context, req provider.SetChannelRequest) (*provider.ChannelEntry, error) {
	if req.Channel == "" || req.ImageID == "" {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "refdriver: SetChannel needs a channel and an image")
	}
	var out *provider.ChannelEntry
	err := d.be.call(ctx, func(s *state) error {
		h := s.channels[req.Channel]
		cur := int64(len(h))
		if want := req.IfVersion; want != 0 {
			if want == -1 {
				want = 0
			}
			if cur != want {
				return apiErrorf(409, "channel %q is at version %d, not %d", req.Channel, cur, want)
			}
		}
		e := provider.ChannelEntry{
			Channel: req.Channel, ImageID: req.ImageID, Version: cur + 1, At: d.o.now().UTC(), Operator: req.Operator,
			Proof: req.Proof,
		}
		s.channels[req.Channel] = append(h, e)
		out = &e
		return nil
	})
	return out, mapErr(err)
}

// ChannelHistory implements provider.Channels: oldest first; a channel never
// set has an empty history.
func (d *Driver) ChannelHistory(ctx context.Context, channel string) ([]provider.ChannelEntry, error) {
	var out []provider.ChannelEntry
	err := d.be.call(ctx, func(s *state) error {
		out = slices.Clone(s.channels[channel])
		return nil
	})
	return out, mapErr(err)
}

// DeleteChannel deletes a channel with its history and its known-good mark
// (providertest.ChannelDeleter). A channel never set is not an error.
func (d *Driver) DeleteChannel(ctx context.Context, channel string) error {
	return mapErr(d.be.call(ctx, func(s *state) error {
		delete(s.channels, channel)
		delete(s.knownGood, channel)
		return nil
	}))
}

// MarkKnownGood implements provider.ChannelVersionMarker: it records version
// as the channel's known-good one (moving the mark from the version that
// had it). An unknown channel or version is ErrNotFound.
func (d *Driver) MarkKnownGood(ctx context.Context, channel string, version int64) error {
	return mapErr(d.be.call(ctx, func(s *state) error {
		h := s.channels[channel]
		if version < 1 || version > int64(len(h)) {
			return notFound("channel version", fmt.Sprintf("%s@%d", channel, version))
		}
		s.knownGood[channel] = version
		return nil
	}))
}

// KnownGoodVersion returns the entry MarkKnownGood marked last
// (providertest.KnownGoodReader); ErrNotFound when none is marked.
func (d *Driver) KnownGoodVersion(ctx context.Context, channel string) (*provider.ChannelEntry, error) {
	var out *provider.ChannelEntry
	err := d.be.call(ctx, func(s *state) error {
		v, ok := s.knownGood[channel]
		if !ok {
			return notFound("known-good version of channel", channel)
		}
		e := s.channels[channel][v-1]
		out = &e
		return nil
	})
	return out, mapErr(err)
}
