// Image use and channel listing for cleanup: ImageUsage (the machines
// booted from an image), its batched form (BatchUsage) and ListChannels.

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

// BatchUsage is the local cloud with provider.BatchUsageFinder as well:
// ImagesUsage answers for many images from one machine listing. Cloud
// itself has only ImageUsage, so a test that wraps a Cloud to hook
// ImageUsage still sees every lookup cleanup makes; wrap it in BatchUsage
// to exercise the batched path.
type BatchUsage struct{ *Cloud }

var _ provider.BatchUsageFinder = BatchUsage{}

// ImagesUsage implements provider.BatchUsageFinder: ImageUsage's answer for
// each id (an image that does not exist is an entry wrapping ErrNotFound).
func (b BatchUsage) ImagesUsage(ctx context.Context, ids []string) (map[string]provider.ImageUse, error) {
	c := b.Cloud
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	out := make(map[string]provider.ImageUse, len(ids))
	for _, id := range ids {
		if _, ok := c.images[id]; !ok {
			out[id] = provider.ImageUse{Err: provider.Errorf(provider.ErrNotFound, "crabboxtest: image %q not found", id)}
		}
	}
	c.mu.Unlock()
	ms, err := c.ListMachines(ctx, nil)
	if err != nil {
		return nil, err
	}
	refs := map[string][]string{}
	for _, m := range ms {
		if m.State != provider.MachineTerminated {
			refs[m.Image] = append(refs[m.Image], "machine "+m.ID)
		}
	}
	for _, id := range ids {
		if _, gone := out[id]; !gone {
			r := refs[id]
			sort.Strings(r)
			out[id] = provider.ImageUse{Refs: r}
		}
	}
	return out, nil
}
