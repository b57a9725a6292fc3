// Driver, New and its options, Info.

package hetzner

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/provider"
)

// Name is the provider name recorded in Info.
const Name = "hetzner"

// Driver is the Hetzner Cloud driver. It is safe for concurrent use.
type Driver struct {
	c *hcloud.Client
	o options
}

type options struct {
	locations   []string // tried in order; empty: Hetzner chooses
	types       map[string]map[string][]string
	baseImage   string
	networks    []int64
	firewalls   []int64
	ipv6        bool
	privateSSH  bool
	sshPort     int
	labelPrefix string
	now         func() time.Time
	cleanupTO   time.Duration
	orphanGrace time.Duration
	adoptWait   time.Duration
	adoptPoll   time.Duration
	noRetries   bool
	// pollSchedule is the pause after a poll made when the given time
	// had been waited (WithPollSchedule).
	pollSchedule func(waited time.Duration) time.Duration
}

// Option configures a Driver.
type Option func(*options) error

// WithLocation sets the location servers are created in (e.g. "fsn1",
// "nbg1", "hel1", "ash"). Default: Hetzner chooses. It is
// WithLocations with one location: no location fallback.
func WithLocation(name string) Option { return WithLocations(name) }

// WithLocations sets the locations servers are created in, in order of
// preference (e.g. "fsn1", "nbg1", "hel1"). When Hetzner answers a server
// create with a capacity error (resource_unavailable, "try with a
// different location", placement_error, ...), or accepts it and then fails
// its create_server action for capacity (the server is deleted with its
// lease key, and the key uploaded again), the driver tries the same
// server type in the next location before it reports ErrCapacity, upon
// which the SDK moves to the class's next type, again through every
// location. So every location is tried for a type before the next type:
// Hetzner runs out of stock per location far more often than a type runs
// out everywhere, and the class's type list is ordered by what the lease
// should run on, which a location does not change. A quota error
// (ErrQuota) is project-wide and tried nowhere else. The request token
// stays the same in every location, so a retried create still adopts
// the one server, wherever it landed. With WithNetworks, the locations
// must be in the networks' zone. Info().Region is the first location.
func WithLocations(names ...string) Option {
	return func(c *options) error {
		if len(names) == 0 {
			return provider.Errorf(provider.ErrInvalidArgument, "hetzner: no location")
		}
		for i, name := range names {
			if name == "" {
				return provider.Errorf(provider.ErrInvalidArgument, "hetzner: empty location")
			}
			if slices.Contains(names[:i], name) {
				return provider.Errorf(provider.ErrInvalidArgument, "hetzner: location %q given twice", name)
			}
		}
		c.locations = slices.Clone(names)
		return nil
	}
}

// WithMachineTypes sets the fallback list of server types for a lease class
// and architecture ("amd64" or "arm64"), replacing the default.
func WithMachineTypes(class, arch string, types ...string) Option {
	return func(c *options) error {
		if err := provider.CheckMachineTypes(class, arch, types); err != nil {
			return provider.Errorf(provider.ErrInvalidArgument, "hetzner: %v", err)
		}
		if c.types[class] == nil {
			c.types[class] = map[string][]string{}
		}
		c.types[class][arch] = slices.Clone(types)
		return nil
	}
}

// WithServerTypes sets the fallback list of server types for a lease class
// and architecture.
//
// Deprecated: use WithMachineTypes, the option name every driver shares.
func WithServerTypes(class, arch string, types ...string) Option {
	return WithMachineTypes(class, arch, types...)
}

// WithBaseImage sets the system image name used by BaseImage (default
// "ubuntu-24.04").
func WithBaseImage(name string) Option {
	return func(c *options) error {
		if name == "" {
			return provider.Errorf(provider.ErrInvalidArgument, "hetzner: empty base image")
		}
		c.baseImage = name
		return nil
	}
}

// WithNetworks attaches servers to these private networks.
func WithNetworks(ids ...int64) Option {
	return func(c *options) error { c.networks = append(c.networks, ids...); return nil }
}

// WithFirewalls applies these firewalls to new servers.
func WithFirewalls(ids ...int64) Option {
	return func(c *options) error { c.firewalls = append(c.firewalls, ids...); return nil }
}

// WithIPv6 enables or disables a public IPv6 address (default enabled).
func WithIPv6(enable bool) Option {
	return func(c *options) error { c.ipv6 = enable; return nil }
}

// WithPrivateSSH makes the SDK reach servers over their first private
// network address instead of a public IPv4 address, and creates servers
// without public IPv4. It needs WithNetworks.
func WithPrivateSSH() Option {
	return func(c *options) error { c.privateSSH = true; return nil }
}

// WithSSHPort sets the port in Machine.SSHAddr (default 22).
func WithSSHPort(port int) Option {
	return func(c *options) error {
		if port <= 0 || port > 65535 {
			return provider.Errorf(provider.ErrInvalidArgument, "hetzner: ssh port %d out of range", port)
		}
		c.sshPort = port
		return nil
	}
}

var prefixRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

// WithLabelPrefix stores every label the driver writes under a DNS-style
// prefix ("crabbox.example.com" gives keys like
// "crabbox.example.com/crabbox-lease") and reads back only labels with it,
// so several crabbox installations, or crabbox and other tools, can share a
// Hetzner project without seeing each other's resources. Channel records
// are kept apart by the prefix as well.
func WithLabelPrefix(prefix string) Option {
	return func(c *options) error {
		if !prefixRe.MatchString(prefix) || prefix == "hetzner.cloud" || strings.HasSuffix(prefix, ".hetzner.cloud") {
			return provider.Errorf(provider.ErrInvalidArgument, "hetzner: label prefix %q must be a DNS subdomain (lowercase letters, digits, '-' and '.') other than hetzner.cloud", prefix)
		}
		c.labelPrefix = prefix
		return nil
	}
}

// DefaultOrphanGrace is how old a lease SSH key must be before
// DeleteOrphanKeys may delete it (see WithOrphanGrace).
const DefaultOrphanGrace = 10 * time.Minute

// DefaultOrphanKeyGrace is DefaultOrphanGrace.
//
// Deprecated: use DefaultOrphanGrace, the name every driver shares.
const DefaultOrphanKeyGrace = DefaultOrphanGrace

// WithOrphanGrace sets how old a lease SSH key must be (from its creation
// time on Hetzner) before DeleteOrphanKeys may delete it for lack of a
// server. A lease uploads its key before it creates its server, so a young
// key without a server is usually a lease being created right now; the grace
// must exceed the longest gap between the two (default 10 minutes). It must
// be positive.
func WithOrphanGrace(grace time.Duration) Option {
	return func(c *options) error {
		if grace <= 0 {
			return provider.Errorf(provider.ErrInvalidArgument, "hetzner: orphan grace %v must be positive", grace)
		}
		c.orphanGrace = grace
		return nil
	}
}

// WithOrphanKeyGrace sets how old a lease SSH key must be before
// DeleteOrphanKeys may delete it.
//
// Deprecated: use WithOrphanGrace, the option name every driver shares.
func WithOrphanKeyGrace(grace time.Duration) Option { return WithOrphanGrace(grace) }

// DefaultAdoptWait is how long, after a create failed ambiguously (a
// cancelled or timed-out call, a lost response, a server error), the driver
// keeps looking for what the create may have made before it concludes
// nothing was.
const DefaultAdoptWait = 10 * time.Second

// WithAdoptWait sets how long the driver looks for what an ambiguously
// failed create made, before it undoes what the create depended on: the
// server of a POST /servers (by its token label) before the lease key is
// deleted, the key of a POST /ssh_keys before it is deleted, the snapshot
// of a create_image (by its token label) before none is reported. The API
// may apply a request the client gave up on a moment later, so the wait
// must cover that. The lookups run detached from the caller's context,
// polling every second (every wait/10 when that is shorter). It must be
// positive. Default DefaultAdoptWait (10 s).
func WithAdoptWait(wait time.Duration) Option {
	return func(c *options) error {
		if wait <= 0 {
			return provider.Errorf(provider.ErrInvalidArgument, "hetzner: adopt wait %v must be positive", wait)
		}
		c.adoptWait, c.adoptPoll = wait, min(time.Second, wait/10)
		return nil
	}
}

// WithPollSchedule sets the schedule of the driver's waits (for actions
// such as create_server and create_image, and for a locked server or
// image): schedule(waited) is the pause after a poll made when waited had
// passed since the wait began. Default PollSchedule, which keeps a
// 10-minute snapshot wait within PollBudget10m requests. It is a floor:
// the driver pauses for it after each poll that found the action running,
// and hcloud-go's action waiting then adds the client's own poll backoff
// (hcloud.WithPollOpts; 500 ms by default), so the budget holds whatever
// the client was built with. A schedule should return positive pauses;
// tests use short ones.
func WithPollSchedule(schedule func(waited time.Duration) time.Duration) Option {
	return func(c *options) error {
		if schedule == nil {
			return provider.Errorf(provider.ErrInvalidArgument, "hetzner: nil poll schedule")
		}
		c.pollSchedule = schedule
		return nil
	}
}

// WithClientRetries tells the driver whether its hcloud client retries each
// API request itself, as hcloud-go does by default (hcloud.WithRetryOpts:
// rate limits, conflicts, gateway errors and timeouts, with its backoff).
// Default true: the crabbox client then does not retry the driver's calls
// (RetriesRequests), so attempts never multiply. Pass false for a client
// built with MaxRetries 0, and the crabbox client retries whole calls
// instead.
func WithClientRetries(retries bool) Option {
	return func(c *options) error { c.noRetries = !retries; return nil }
}

// WithClock sets the clock used for channel timestamps and for the age of
// lease keys in DeleteOrphanKeys (tests).
func WithClock(now func() time.Time) Option {
	return func(c *options) error {
		if now == nil {
			return provider.Errorf(provider.ErrInvalidArgument, "hetzner: nil clock")
		}
		c.now = now
		return nil
	}
}

// New returns a driver using client.
func New(client *hcloud.Client, opts ...Option) (*Driver, error) {
	if client == nil {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "hetzner: nil hcloud client")
	}
	o := options{
		types:       DefaultServerTypes(),
		baseImage:   "ubuntu-24.04",
		ipv6:        true,
		sshPort:     22,
		now:         time.Now,
		cleanupTO:   30 * time.Second,
		orphanGrace: DefaultOrphanGrace,
		adoptWait:   DefaultAdoptWait,
		adoptPoll:   time.Second,

		pollSchedule: PollSchedule,
	}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.privateSSH && len(o.networks) == 0 {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "hetzner: WithPrivateSSH needs WithNetworks")
	}
	return &Driver{c: client, o: o}, nil
}

var (
	_ provider.Driver    = (*Driver)(nil)
	_ provider.Images    = (*Driver)(nil)
	_ provider.Channels  = (*Driver)(nil)
	_ provider.Protector = (*Driver)(nil)
)

// Info describes the driver. A Hetzner server that powers itself off keeps
// existing (and billing), so ShutdownTerminates is false and the SDK's Reap
// enforces lease TTLs.
func (d *Driver) Info() provider.Info {
	region := ""
	if len(d.o.locations) > 0 {
		region = d.o.locations[0]
	}
	return provider.Info{Name: Name, Region: region}
}

// RetriesRequests reports whether the hcloud client retries each API
// request itself (WithClientRetries; default true): the crabbox client then
// runs the driver's calls once, so one layer retries, never both.
func (d *Driver) RetriesRequests() bool { return !d.o.noRetries }

// parseID parses a numeric Hetzner id. A malformed id cannot name anything,
// so it is reported as not found (wrapping ErrNotFound) rather than a crash.
func parseID(kind, id string) (int64, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 {
		return 0, provider.Errorf(provider.ErrNotFound, "hetzner: %s id %q is not a Hetzner id", kind, id)
	}
	return n, nil
}

// detached returns a context for cleanup work that must run even when ctx
// was cancelled (deleting a half-made resource, resolving an ambiguous
// create), bounded by the driver's cleanup timeout.
func (d *Driver) detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d.o.cleanupTO)
}

// adopt looks for what a create that failed ambiguously may have made:
// find runs at once and then every adoptPoll until it reports ok or the
// adopt wait has passed, each run on a context detached from ctx's
// cancellation and bounded by the cleanup timeout. It returns the last
// result.
func adopt[T any](ctx context.Context, d *Driver, find func(context.Context) (T, bool)) (T, bool) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.o.adoptWait)
	defer cancel()
	for {
		fctx, fcancel := d.detached(ctx)
		v, ok := find(fctx)
		fcancel()
		if ok {
			return v, ok
		}
		t := time.NewTimer(d.o.adoptPoll)
		select {
		case <-wctx.Done():
			t.Stop()
			return v, ok
		case <-t.C:
		}
	}
}
