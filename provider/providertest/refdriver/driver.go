// The driver: Driver, New and its options, Info, MachineTypes and BaseImage.

package refdriver

import (
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

// ProviderName is the name recorded in Info.
const ProviderName = "reference"

// Default option values.
const (
	DefaultRegion      = "ref-1"
	DefaultOrphanGrace = 10 * time.Minute
	DefaultBootPolls   = 1
	// SSHAddr is the address every machine of the in-memory backend reports.
	SSHAddr = "127.0.0.1:22"
)

// BaseImageID returns the id of the base image for arch.
func BaseImageID(arch string) string { return "ref-base-" + arch }

// Option configures a Driver. An option with an invalid value makes New fail
// with an error wrapping provider.ErrInvalidArgument.
type Option func(*options) error

type options struct {
	region      string
	now         func() time.Time
	orphanGrace time.Duration
	bootPolls   int
	peers       map[string]*Driver
}

// WithRegion sets the region the driver works in (default DefaultRegion).
func WithRegion(region string) Option {
	return func(o *options) error {
		if region == "" {
			return provider.Errorf(provider.ErrInvalidArgument, "refdriver: empty region")
		}
		o.region = region
		return nil
	}
}

// WithClock sets the clock for creation times, channel timestamps and the
// age of orphans (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return provider.Errorf(provider.ErrInvalidArgument, "refdriver: nil clock")
		}
		o.now = now
		return nil
	}
}

// WithOrphanGrace sets how old a key without a machine must be before
// SweepOrphans deletes it (default DefaultOrphanGrace).
func WithOrphanGrace(grace time.Duration) Option {
	return func(o *options) error {
		if grace <= 0 {
			return provider.Errorf(provider.ErrInvalidArgument, "refdriver: orphan grace %v must be positive", grace)
		}
		o.orphanGrace = grace
		return nil
	}
}

// WithBootPolls sets how many GetMachine calls a new machine stays pending
// (default DefaultBootPolls), like a backend that takes a while to boot.
func WithBootPolls(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return provider.Errorf(provider.ErrInvalidArgument, "refdriver: negative boot polls %d", n)
		}
		o.bootPolls = n
		return nil
	}
}

// WithRegionPeer names the driver of another region, the target of
// CopyImage to that region.
func WithRegionPeer(region string, peer *Driver) Option {
	return func(o *options) error {
		if region == "" || peer == nil {
			return provider.Errorf(provider.ErrInvalidArgument, "refdriver: region peer needs a region and a driver")
		}
		o.peers[region] = peer
		return nil
	}
}

// Driver is the reference driver. Create it with New.
type Driver struct {
	o  options
	be *backend
}

// New returns a driver with an empty in-memory backend.
func New(opts ...Option) (*Driver, error) {
	o := options{
		region:      DefaultRegion,
		now:         time.Now,
		orphanGrace: DefaultOrphanGrace,
		bootPolls:   DefaultBootPolls,
		peers:       map[string]*Driver{},
	}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	return &Driver{o: o, be: newBackend()}, nil
}

// Info implements provider.Driver.
func (d *Driver) Info() provider.Info {
	return provider.Info{Name: ProviderName, Region: d.o.region}
}

// Compile-time checks of the interfaces the driver implements.
var (
	_ provider.Driver               = (*Driver)(nil)
	_ provider.Images               = (*Driver)(nil)
	_ provider.Channels             = (*Driver)(nil)
	_ provider.Protector            = (*Driver)(nil)
	_ provider.Deprecator           = (*Driver)(nil)
	_ provider.RegionCopier         = (*Driver)(nil)
	_ provider.UsageFinder          = (*Driver)(nil)
	_ provider.ChannelVersionMarker = (*Driver)(nil)
	_ provider.OrphanSweeper        = (*Driver)(nil)
)
