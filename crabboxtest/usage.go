// Image use and channel listing for cleanup: ImageUsage (the machines
// booted from an image) and ListChannels.

package crabboxtest

import (
	"context"
	"sort"

	"github.com/crabbox/crabbox-go/provider"
)

var (
	_ provider.UsageFinder   = (*Cloud)(nil)
	_ provider.ChannelLister = (*Cloud)(nil)
)

// ImageUsage implements provider.UsageFinder: "machine <id>" for every
// machine booted from the image that is not terminated. An image that does
// not exist is an error wrapping ErrNotFound.
func (c *Cloud) ImageUsage(ctx context.Context, id string) ([]string, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	_, ok := c.images[id]
	c.mu.Unlock()
	if !ok {
		return nil, provider.Errorf(provider.ErrNotFound, "crabboxtest: image %q not found", id)
	}
	ms, err := c.ListMachines(ctx, nil)
	if err != nil {
		return nil, err
	}
	var refs []string
	for _, m := range ms {
		if m.Image == id && m.State != provider.MachineTerminated {
			refs = append(refs, "machine "+m.ID)
		}
	}
	sort.Strings(refs)
	return refs, nil
}

// ListChannels implements provider.ChannelLister: every channel ever set,
// by name.
func (c *Cloud) ListChannels(ctx context.Context) ([]string, error) {
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.channels))
	for ch, h := range c.channels {
		if len(h) > 0 {
			out = append(out, ch)
		}
	}
	sort.Strings(out)
	return out, nil
}
