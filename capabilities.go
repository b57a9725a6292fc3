// Capabilities: the optional driver interfaces (provider.Images, Channels,
// Protector, Deprecator, RegionCopier, UsageFinder, BatchUsageFinder,
// OrphanSweeper,
// ChannelVersionMarker, AccessProvider), discovered once by type assertion
// when the Client is made, and reported by Client.Capabilities.

package crabbox

import (
	"fmt"

	"github.com/crabbox/crabbox-go/provider"
)

// Capabilities says which optional driver interfaces the Client's driver
// implements. A call that needs a missing one returns an error matching
// ErrUnsupported; calls that merely use one when present (protection,
// deprecation, usage checks, orphan sweeps) skip that step.
type Capabilities struct {
	// Images: the driver manages images (provider.Images): CreateImage,
	// Images, Promote, PlanCleanup and the other image calls work.
	Images bool
	// Channels: the driver stores promoted-image pointers
	// (provider.Channels): Promote, Rollback, Promoted and leases that boot
	// a channel's image work.
	Channels bool
	// Protector: the promoted image is protected from deletion.
	Protector bool
	// Deprecator: superseded images are deprecated.
	Deprecator bool
	// RegionCopier: CopyImage works.
	RegionCopier bool
	// UsageFinder: PlanCleanup keeps images the provider reports in use.
	UsageFinder bool
	// BatchUsageFinder: PlanCleanup reads the use of many images per call
	// (provider.BatchUsageFinder), so its calls grow with pages, not images.
	BatchUsageFinder bool
	// OrphanSweeper: Reap also deletes keys left by vanished machines.
	OrphanSweeper bool
	// ChannelVersionMarker: MarkKnownGood also marks the channel version on
	// the channel store.
	ChannelVersionMarker bool
	// AccessProvider: the driver's machines ignore user-data, and leases log
	// in with the access the driver gives instead of per-lease keys.
	AccessProvider bool
	// ChannelLister: cleanup re-reads every channel the store holds, not
	// only those its policy names, before each deletion.
	ChannelLister bool
	// RetriesRequests: the driver retries each API request itself, so the
	// client runs its calls once (one layer retries, never both).
	RetriesRequests bool
}

// caps holds the driver as each optional interface it implements; a field
// is nil when the driver does not implement that interface.
type caps struct {
	images        provider.Images
	channels      provider.Channels
	protector     provider.Protector
	deprecator    provider.Deprecator
	regionCopier  provider.RegionCopier
	usageFinder   provider.UsageFinder
	batchUsage    provider.BatchUsageFinder
	orphanSweeper provider.OrphanSweeper
	versionMarker provider.ChannelVersionMarker
	access        provider.AccessProvider
	lister        provider.ChannelLister
	// retriesRequests: the driver is a provider.RequestRetrier that said so.
	retriesRequests bool
}

// discoverCaps asserts each optional interface on d once.
func discoverCaps(d provider.Driver) caps {
	var k caps
	k.images, _ = d.(provider.Images)
	k.channels, _ = d.(provider.Channels)
	k.protector, _ = d.(provider.Protector)
	k.deprecator, _ = d.(provider.Deprecator)
	k.regionCopier, _ = d.(provider.RegionCopier)
	k.usageFinder, _ = d.(provider.UsageFinder)
	k.batchUsage, _ = d.(provider.BatchUsageFinder)
	k.orphanSweeper, _ = d.(provider.OrphanSweeper)
	k.versionMarker, _ = d.(provider.ChannelVersionMarker)
	k.access, _ = d.(provider.AccessProvider)
	k.lister, _ = d.(provider.ChannelLister)
	if rr, ok := d.(provider.RequestRetrier); ok {
		k.retriesRequests = rr.RetriesRequests()
	}
	return k
}

// Capabilities reports which optional driver interfaces the Client's
// driver implements (discovered once, in New).
func (c *Client) Capabilities() Capabilities {
	k := c.caps
	return Capabilities{
		Images:               k.images != nil,
		Channels:             k.channels != nil,
		Protector:            k.protector != nil,
		Deprecator:           k.deprecator != nil,
		RegionCopier:         k.regionCopier != nil,
		UsageFinder:          k.usageFinder != nil,
		BatchUsageFinder:     k.batchUsage != nil,
		OrphanSweeper:        k.orphanSweeper != nil,
		ChannelVersionMarker: k.versionMarker != nil,
		AccessProvider:       k.access != nil,
		ChannelLister:        k.lister != nil,
		RetriesRequests:      k.retriesRequests,
	}
}

// images returns the driver's image management, or ErrUnsupported.
func (c *Client) images() (provider.Images, error) {
	if c.caps.images == nil {
		return nil, fmt.Errorf("provider %s has no images: %w", c.info.Name, ErrUnsupported)
	}
	return c.caps.images, nil
}

// channels returns the driver's channel store, or ErrUnsupported.
func (c *Client) channels() (provider.Channels, error) {
	if c.caps.channels == nil {
		return nil, fmt.Errorf("provider %s has no promotion channels: %w", c.info.Name, ErrUnsupported)
	}
	return c.caps.channels, nil
}
