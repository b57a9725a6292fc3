// Package hetzner is the crabbox driver for Hetzner Cloud: servers as lease
// machines, snapshot images, promotion channels and cleanup, through the
// official hcloud-go client.
//
// The driver is built from an *hcloud.Client the caller configured (token,
// endpoint, poll and retry backoff):
//
//	client := hcloud.NewClient(hcloud.WithToken(os.Getenv("HCLOUD_TOKEN")))
//	d, err := hetzner.New(client, hetzner.WithLocation("fsn1"))
//
// It implements provider.Driver, provider.Images, provider.Channels and
// provider.Protector. Hetzner cannot set a deprecation time on snapshots, so
// provider.Deprecator is not implemented and the SDK reports it unsupported.
//
// # Leases
//
// CreateMachine uploads the lease's public key as a labelled SSH key (so
// Hetzner does not mail a root password), then creates the server with the
// rendered user-data, the labels and a public IPv4 address. The request token
// is stored in the crabbox-token label of both: a retried create with the
// same token adopts the server instead of making a second one, and an
// ambiguous failure (5xx, timeout, cancelled call) is resolved by looking the
// server up by its token. Capacity and limit errors (resource_limit_exceeded,
// resource_unavailable, placement_error, ...) wrap provider.ErrCapacity so the
// SDK moves to the next server type of the class. CreateMachine then waits
// for the create_server action and its next actions (for an adopted server,
// for whatever still runs on it) through hcloud-go's action waiting, which
// polls with the poll backoff configured on the hcloud client
// (hcloud.WithPollOpts), and returns the server running with its address.
// If ctx ends during the wait, the half-made server is returned with the
// context's error so the SDK releases it; if an action fails, the driver
// deletes the server and its key itself and returns the hcloud.ActionError
// wrapped with a portable code (ErrUnavailable, or ErrCapacity for capacity
// codes). DeleteMachine deletes the server and the lease's key.
//
// # Images
//
// CreateImage runs the server's create_image action with type snapshot; the
// description is the image name and the labels are the ownership labels plus
// crabbox-token. An ambiguous failure is resolved by looking the snapshot up by
// its token label, adopting it (and deleting duplicates a retried request may
// have made) instead of failing or creating it twice. CreateImage waits for
// the create_image action the same way and returns the snapshot available;
// if ctx ends first, the pending snapshot is returned with the error; if the
// action fails, the snapshot comes back in state failed with the action's
// message as StateReason (GetImage looks that message up too). Sizes come
// from image_size (GB).
//
// # Channels
//
// Hetzner has no parameter store, and labels cannot be written
// conditionally. Channels are therefore kept as a chain of small SSH-key
// records, one per channel version, named "crabbox-channel-CHANNEL-vN" and
// labelled with the channel, version, image id, operator and time. Hetzner
// enforces unique SSH key names, which makes "create version N+1" an atomic
// compare-and-set: of two racing promotions from version N exactly one
// creates the record for N+1; the other gets uniqueness_error and SetChannel
// returns provider.ErrConflict (or, when unconditional, retries on top of the
// winner). The driver does not rely on name uniqueness alone: after creating
// its record it re-reads the version, and if a rival record of the same
// version exists the first created one (lowest id) wins and the later writer
// deletes its record and gets ErrConflict. The records hold freshly
// generated public keys whose private halves are discarded at once, so
// nobody can log in with them. Current = highest version; history = all
// records, oldest first (a rollback is a new version pointing at the older
// image). Everything is read back from Hetzner alone. DeleteChannel removes
// a channel's records and PruneChannel keeps only the newest ones.
//
// The channel is also mirrored onto image labels: after each SetChannel the
// current image carries "crabbox-channel-CHANNEL=current" and the image it
// displaced "crabbox-channel-CHANNEL=previous" (ChannelLabelKey; the image
// that was previous before loses the label), next to the known-good and
// status marks the SDK keeps in the crabbox-status labels. So the promoted
// image, the one before it and the known-good ones can be read from the
// images themselves, by label selector in the console or with
// ChannelImagesFromLabels, without crabbox's records.
//
// Both exist because neither does the other's job. Labels cannot be
// written conditionally (an update replaces the whole set, with no version
// check), so they cannot decide a race between two promotions, and they
// hold no history; the SSH-key records can, through the API's name
// uniqueness, and keep every version. The records are therefore the source
// of truth that CurrentChannel, ChannelHistory and conditional sets read;
// the labels follow them. A label writer re-checks the records after
// writing and starts over when the channel moved, so after racing
// promotions have returned the labels show the winner. A channel on a
// system image (which cannot carry labels) has records only. If writing the
// labels fails, SetChannel says so in its error and SyncChannelLabels
// rewrites them from the records.
//
// A lease key left behind by an interrupted release (server gone, key
// still there) is removed by DeleteOrphanKeys, once it is older than a grace
// period (WithOrphanGrace) so that the key of a lease being created at
// that moment, uploaded just before its server, is never taken.
//
// # Labels
//
// Hetzner label keys are an optional DNS prefix and "/" plus a name of at
// most 63 characters of [-_.a-zA-Z0-9] that begins and ends alphanumeric;
// values follow the name rule or are empty. Values are sanitized (invalid
// characters become "-", cut to 63, trimmed to alphanumeric ends); a key that
// breaks the rules, a reserved "hetzner.cloud/" key, or a non-empty value with
// nothing representable is rejected with provider.ErrInvalidArgument.
// WithLabelPrefix namespaces every label under a DNS prefix so several
// installations can share a project.
package hetzner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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

// Label keys the driver adds on top of the SDK's labels.
const (
	// LabelToken holds the idempotency token of the request that created a
	// server, SSH key or snapshot.
	LabelToken = "crabbox-token"
	// LabelKind tells the driver's own records apart: "lease-key" on lease
	// SSH keys, "channel-entry" on channel records.
	LabelKind = "crabbox-kind"

	labelManaged   = provider.LabelManaged
	labelCreatedBy = provider.LabelCreatedBy

	labelChannel   = "crabbox-chan"
	labelChVersion = "crabbox-chan-version"
	labelChImage   = "crabbox-chan-image"
	labelChBy      = "crabbox-chan-by"
	labelChAt      = "crabbox-chan-at"

	kindLeaseKey     = "lease-key"
	kindChannelEntry = "channel-entry"
)

// defaultServerTypes maps lease classes to server type fallback lists per
// architecture ("amd64", "arm64"). It is never modified; DefaultServerTypes
// hands out copies.
var defaultServerTypes = map[string]map[string][]string{
	provider.ClassTiny:     {provider.ArchAMD64: {"cx22", "cpx11"}, provider.ArchARM64: {"cax11"}},
	provider.ClassSmall:    {provider.ArchAMD64: {"cx32", "cpx21", "cx22"}, provider.ArchARM64: {"cax21", "cax11"}},
	provider.ClassStandard: {provider.ArchAMD64: {"cx42", "cpx31", "cx32"}, provider.ArchARM64: {"cax31", "cax21"}},
	provider.ClassFast:     {provider.ArchAMD64: {"ccx23", "cpx41", "cx42"}, provider.ArchARM64: {"cax31"}},
	provider.ClassLarge:    {provider.ArchAMD64: {"ccx33", "cpx51", "cx52"}, provider.ArchARM64: {"cax41"}},
	provider.ClassBeast:    {provider.ArchAMD64: {"ccx63", "ccx53", "ccx43"}, provider.ArchARM64: {"cax41"}},
}

// DefaultServerTypes returns the default server type fallback lists: lease
// class -> architecture ("amd64", "arm64") -> server types, in order.
// Shared-vCPU types come first for small classes; dedicated (ccx) types lead
// for fast and bigger ones. The result is a fresh copy on every call, so
// changing it changes nothing in the package; use WithMachineTypes to
// configure a driver.
func DefaultServerTypes() map[string]map[string][]string {
	out := make(map[string]map[string][]string, len(defaultServerTypes))
	for class, m := range defaultServerTypes {
		out[class] = make(map[string][]string, len(m))
		for arch, ts := range m {
			out[class][arch] = slices.Clone(ts)
		}
	}
	return out
}

// Driver is the Hetzner Cloud driver. It is safe for concurrent use.
type Driver struct {
	c   *hcloud.Client
	cfg config
}

type config struct {
	location    string
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
}

// Option configures a Driver.
type Option func(*config) error

// WithLocation sets the location servers are created in (e.g. "fsn1",
// "nbg1", "hel1", "ash"). Default: Hetzner chooses.
func WithLocation(name string) Option {
	return func(c *config) error {
		if name == "" {
			return provider.Errorf(provider.ErrInvalidArgument, "hetzner: empty location")
		}
		c.location = name
		return nil
	}
}

// WithMachineTypes sets the fallback list of server types for a lease class
// and architecture ("amd64" or "arm64"), replacing the default.
func WithMachineTypes(class, arch string, types ...string) Option {
	return func(c *config) error {
		if class == "" || !provider.ValidArch(arch) || len(types) == 0 || slices.Contains(types, "") {
			return provider.Errorf(provider.ErrInvalidArgument, "hetzner: server types for class %q arch %q: need a class, amd64 or arm64 and non-empty types", class, arch)
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
	return func(c *config) error {
		if name == "" {
			return provider.Errorf(provider.ErrInvalidArgument, "hetzner: empty base image")
		}
		c.baseImage = name
		return nil
	}
}

// WithNetworks attaches servers to these private networks.
func WithNetworks(ids ...int64) Option {
	return func(c *config) error { c.networks = append(c.networks, ids...); return nil }
}

// WithFirewalls applies these firewalls to new servers.
func WithFirewalls(ids ...int64) Option {
	return func(c *config) error { c.firewalls = append(c.firewalls, ids...); return nil }
}

// WithIPv6 enables or disables a public IPv6 address (default enabled).
func WithIPv6(enable bool) Option {
	return func(c *config) error { c.ipv6 = enable; return nil }
}

// WithPrivateSSH makes the SDK reach servers over their first private
// network address instead of a public IPv4 address, and creates servers
// without public IPv4. It needs WithNetworks.
func WithPrivateSSH() Option {
	return func(c *config) error { c.privateSSH = true; return nil }
}

// WithSSHPort sets the port in Machine.SSHAddr (default 22).
func WithSSHPort(port int) Option {
	return func(c *config) error {
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
	return func(c *config) error {
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
	return func(c *config) error {
		if grace <= 0 {
			return provider.Errorf(provider.ErrInvalidArgument, "hetzner: orphan key grace %v must be positive", grace)
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

// WithClock sets the clock used for channel timestamps and for the age of
// lease keys in DeleteOrphanKeys (tests).
func WithClock(now func() time.Time) Option {
	return func(c *config) error {
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
	cfg := config{
		types:       DefaultServerTypes(),
		baseImage:   "ubuntu-24.04",
		ipv6:        true,
		sshPort:     22,
		now:         time.Now,
		cleanupTO:   30 * time.Second,
		orphanGrace: DefaultOrphanGrace,
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.privateSSH && len(cfg.networks) == 0 {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "hetzner: WithPrivateSSH needs WithNetworks")
	}
	return &Driver{c: client, cfg: cfg}, nil
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
	return provider.Info{Name: Name, Region: d.cfg.location}
}

// MachineTypes returns the server type fallback list for a class and
// architecture.
func (d *Driver) MachineTypes(class, arch string) ([]string, error) {
	m, ok := d.cfg.types[class]
	if !ok {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "hetzner: unknown lease class %q", class)
	}
	ts, ok := m[arch]
	if !ok || len(ts) == 0 {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "hetzner: no server types for class %q and architecture %q", class, arch)
	}
	return slices.Clone(ts), nil
}

// BaseImage returns the id of the configured system image (default
// ubuntu-24.04) for an architecture.
func (d *Driver) BaseImage(ctx context.Context, arch string) (string, error) {
	a, err := hcloudArch(arch)
	if err != nil {
		return "", err
	}
	im, _, err := d.c.Image.GetByNameAndArchitecture(ctx, d.cfg.baseImage, a)
	if err != nil {
		return "", mapErr("get base image", err)
	}
	if im == nil {
		return "", provider.Errorf(provider.ErrNotFound, "hetzner: no image %q for architecture %s", d.cfg.baseImage, a)
	}
	return strconv.FormatInt(im.ID, 10), nil
}

func hcloudArch(arch string) (hcloud.Architecture, error) {
	switch arch {
	case provider.ArchAMD64, "x86", "x86_64":
		return hcloud.ArchitectureX86, nil
	case provider.ArchARM64, "arm", "aarch64":
		return hcloud.ArchitectureARM, nil
	}
	return "", provider.Errorf(provider.ErrInvalidArgument, "hetzner: unknown architecture %q", arch)
}

func sdkArch(a hcloud.Architecture) string {
	switch a {
	case hcloud.ArchitectureX86:
		return provider.ArchAMD64
	case hcloud.ArchitectureARM:
		return provider.ArchARM64
	}
	return string(a)
}

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
	return context.WithTimeout(context.WithoutCancel(ctx), d.cfg.cleanupTO)
}

// mapErr wraps a raw hcloud error with its portable code, once. A
// cancelled or expired context is returned without a code, so
// errors.Is(err, context.Canceled) holds and nobody retries it.
func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var pe *provider.Error
	if errors.As(err, &pe) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("hetzner: %s: %w", op, err)
	}
	return provider.Wrap(classify(err), fmt.Errorf("hetzner: %s: %w", op, err))
}

func classify(err error) error {
	var apiErr hcloud.Error
	if errors.As(err, &apiErr) {
		if code := codeClass(apiErr.Code); code != nil {
			return code
		}
		if r := apiErr.Response(); r != nil && r.Response != nil {
			return provider.ClassifyHTTPStatus(r.StatusCode)
		}
		return provider.ErrUnavailable
	}
	var argErr hcloud.ArgumentError
	if errors.As(err, &argErr) {
		return provider.ErrInvalidArgument
	}
	var netErr net.Error
	switch {
	case errors.Is(err, hcloud.ErrStatusCode):
		return provider.ErrUnavailable
	case errors.As(err, &netErr), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return provider.ErrUnavailable
	}
	return provider.ErrUnavailable
}

// codeClass maps a Hetzner error code to its portable code; nil when the
// code is unknown.
func codeClass(code hcloud.ErrorCode) error {
	switch code {
	case hcloud.ErrorCodeNotFound:
		return provider.ErrNotFound
	case hcloud.ErrorCodeConflict, hcloud.ErrorCodeLocked, hcloud.ErrorCodeUniquenessError,
		hcloud.ErrorCodeProtected, hcloud.ErrorCodeResourceInUse, hcloud.ErrorCodeServerNotStopped:
		return provider.ErrConflict
	case hcloud.ErrorCodeResourceLimitExceeded, hcloud.ErrorCodeResourceUnavailable,
		hcloud.ErrorCodePlacementError, hcloud.ErrorCodeNoSpaceLeftInLocation,
		"server_type_not_available", "location_not_available", "dedicated_core_limit",
		"dedicated_core_limit_exceeded", "server_limit_exceeded":
		return provider.ErrCapacity
	case hcloud.ErrorCodeRateLimitExceeded:
		return provider.ErrThrottled
	case hcloud.ErrorCodeServiceError, hcloud.ErrorCodeMaintenance, hcloud.ErrorCodeServerError,
		hcloud.ErrorCodeBadGateway, hcloud.ErrorCodeTimeout, hcloud.ErrorCodeUnknownError,
		hcloud.ErrorCodeRobotUnavailable, "unavailable":
		return provider.ErrUnavailable
	case hcloud.ErrorCodeForbidden, hcloud.ErrorCodeUnauthorized, hcloud.ErrorCodeResourceLocked:
		return provider.ErrPermission
	case hcloud.ErrorCodeInvalidInput, hcloud.ErrorCodeJSONError, hcloud.ErrorCodeInvalidServerType:
		return provider.ErrInvalidArgument
	case hcloud.ErrorUnsupportedError, hcloud.ErrorDeprecatedAPIEndpoint:
		return provider.ErrUnsupported
	}
	return nil
}

// actionClass maps the error code of a failed action to a portable code.
// An action failed after the request was accepted, so only capacity,
// permission and input problems keep their meaning; anything else (the
// usual server_error, action_failed, ...) is a backend failure that a new
// attempt may not repeat: ErrUnavailable.
func actionClass(code string) error {
	switch c := codeClass(hcloud.ErrorCode(code)); c {
	case provider.ErrCapacity, provider.ErrPermission, provider.ErrInvalidArgument:
		return c
	}
	return provider.ErrUnavailable
}

// ambiguous reports whether a failed create may nevertheless have created
// the resource: transient backend errors, timeouts, broken connections and
// cancelled calls.
func ambiguous(err error) bool {
	return errors.Is(err, provider.ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
