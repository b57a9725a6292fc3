// Cleanup's view of channels: which channels may point at an image (the
// policy's and every channel the provider lists), their current values and
// their histories.

package crabbox

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/crabbox/crabbox-go/provider"
)

// channelFacts is what cleanup knows about the channels at one moment.
type channelFacts struct {
	// current maps the image each channel points at to the channel (the
	// first by name when several point at it).
	current map[string]string
	// history holds every value of each channel whose history was read,
	// oldest first.
	history map[string][]provider.ChannelEntry
	// ever maps every image some channel ever pointed at to the first
	// such channel by name.
	ever map[string]string
}

// cleanupChannels returns the channels that may point at an image: named
// (the policy's) and, where the provider can enumerate them
// (provider.ChannelLister), every channel it holds; sorted, without
// duplicates. A provider without channels has none.
func (c *Client) cleanupChannels(ctx context.Context, named []string) ([]string, error) {
	if c.caps.channels == nil {
		return nil, nil
	}
	set := map[string]bool{}
	for _, ch := range named {
		set[ch] = true
	}
	if cl := c.caps.lister; cl != nil {
		listed, err := retry(ctx, c, "channel", func(ctx context.Context) ([]string, error) { return cl.ListChannels(ctx) })
		if err != nil && !errors.Is(err, ErrUnsupported) {
			return nil, fmt.Errorf("listing channels: %w", err)
		}
		for _, ch := range listed {
			set[ch] = true
		}
	}
	out := make([]string, 0, len(set))
	for ch := range set {
		out = append(out, ch)
	}
	sort.Strings(out)
	return out, nil
}

// readChannels reads the current value and, when withHistory, the history
// of every channel cleanupChannels returns.
func (c *Client) readChannels(ctx context.Context, named []string, withHistory bool) (*channelFacts, error) {
	f := &channelFacts{current: map[string]string{}, history: map[string][]provider.ChannelEntry{}, ever: map[string]string{}}
	chans, err := c.cleanupChannels(ctx, named)
	if err != nil {
		return nil, err
	}
	chs := c.caps.channels
	for _, ch := range chans {
		e, err := c.currentChannel(ctx, chs, ch)
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case err != nil:
			return nil, fmt.Errorf("channel %s: %w", ch, err)
		}
		if f.current[e.ImageID] == "" {
			f.current[e.ImageID] = ch
		}
		if !withHistory {
			continue
		}
		h, err := c.channelHistory(ctx, chs, ch)
		if err != nil {
			return nil, fmt.Errorf("channel %s history: %w", ch, err)
		}
		f.history[ch] = h
		for _, he := range h {
			if f.ever[he.ImageID] == "" {
				f.ever[he.ImageID] = ch
			}
		}
	}
	return f, nil
}
