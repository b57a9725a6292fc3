// Promotion channels, kept in memory.

package crabboxtest

import (
	"context"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

// CurrentChannel returns the channel's current entry, or an error wrapping
// ErrNotFound when it was never set.
func (c *Cloud) CurrentChannel(ctx context.Context, channel string) (*provider.ChannelEntry, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	h := c.channels[channel]
	if len(h) == 0 {
		return nil, provider.Errorf(provider.ErrNotFound, "crabboxtest: channel %q was never set", channel)
	}
	e := h[len(h)-1]
	return &e, nil
}

// SetChannel points the channel at an existing image. Versions count 1, 2,
// 3, ...; IfVersion makes the set conditional (-1: only if never set), a
// mismatch is an error wrapping ErrConflict.
func (c *Cloud) SetChannel(ctx context.Context, req provider.SetChannelRequest) (*provider.ChannelEntry, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	if req.Channel == "" {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: empty channel name")
	}
	if _, ok := c.images[req.ImageID]; !ok {
		return nil, provider.Errorf(provider.ErrNotFound, "crabboxtest: image %q not found", req.ImageID)
	}
	h := c.channels[req.Channel]
	current := int64(len(h))
	switch {
	case req.IfVersion == -1 && current != 0:
		return nil, provider.Errorf(provider.ErrConflict, "crabboxtest: channel %q is already set (version %d)", req.Channel, current)
	case req.IfVersion > 0 && req.IfVersion != current:
		return nil, provider.Errorf(provider.ErrConflict, "crabboxtest: channel %q is at version %d, not %d", req.Channel, current, req.IfVersion)
	case req.IfVersion < -1:
		return nil, provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: IfVersion %d", req.IfVersion)
	}
	e := provider.ChannelEntry{
		Channel:  req.Channel,
		ImageID:  req.ImageID,
		Version:  current + 1,
		At:       time.Now().UTC(),
		Operator: req.Operator,
		Proof:    req.Proof,
	}
	c.channels[req.Channel] = append(h, e)
	return &e, nil
}

// ChannelHistory returns every value the channel had, oldest first (empty
// for a channel never set).
func (c *Cloud) ChannelHistory(ctx context.Context, channel string) ([]provider.ChannelEntry, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	return append([]provider.ChannelEntry{}, c.channels[channel]...), nil
}

// DeleteChannel forgets a channel and its history (for test cleanup). A
// channel never set is an error wrapping ErrNotFound.
func (c *Cloud) DeleteChannel(ctx context.Context, channel string) error {
	if err := c.begin(ctx); err != nil {
		return err
	}
	defer c.mu.Unlock()
	if _, ok := c.channels[channel]; !ok {
		return provider.Errorf(provider.ErrNotFound, "crabboxtest: channel %q was never set", channel)
	}
	delete(c.channels, channel)
	return nil
}
