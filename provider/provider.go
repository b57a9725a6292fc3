// Package provider defines the small driver interfaces a cloud backend
// implements for crabbox, and the portable error codes drivers map their raw
// errors to.
//
// Users do not call drivers directly: they hand one to crabbox.New and use the
// portable crabbox.Client. All waiting, retrying, naming, policy and SSH logic
// lives once in the root package; a driver only translates single calls to its
// cloud's API. Drivers must be safe for concurrent use, must take a
// context.Context on every call, must never log by default and must never
// retry an error that is permanent.
//
// A driver implements Driver. Image, channel and optional capabilities are
// separate interfaces that the root package discovers by type assertion; a
// capability a driver lacks surfaces to users as an error matching
// crabbox.ErrUnsupported.
//
// The driver vocabulary (vocab.go) is defined here once for the root package
// and every driver: lease classes (Classes, ValidClass), architectures
// (ArchAMD64, ArchARM64, ValidArch), the managed-label keys (LabelManaged,
// ...), SanitizeLabelValue and ClassifyHTTPStatus. A new driver starts from
// provider/providertest/refdriver and passes providertest.Run.
//
// Package provider imports nothing of crabbox; provider packages
// (provider/awsec2, provider/hetzner, provider/sshhost) import only this
// package and their cloud's SDK.
package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"
)

// Portable error codes. Drivers wrap every raw error they return with exactly
// one of these (see Wrap), once, where the raw error is first seen. The root
// package re-exports them (crabbox.ErrNotFound is provider.ErrNotFound), so
// users match with errors.Is against either name.
var (
	// ErrNotFound: the resource does not exist (or no longer exists).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the request conflicts with the resource's current state,
	// e.g. a conditional channel update lost a race, a name is taken.
	ErrConflict = errors.New("conflict")
	// ErrInvalidArgument: the request can never succeed as given.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnavailable: a transient failure of the backend; retrying may help.
	ErrUnavailable = errors.New("unavailable")
	// ErrThrottled: the backend rate-limited the call; retry with backoff.
	ErrThrottled = errors.New("throttled")
	// ErrPermission: the credentials lack a permission.
	ErrPermission = errors.New("permission denied")
	// ErrCapacity: the requested machine type has no capacity right now (in
	// this zone or location); the SDK moves to the next type in the class
	// list.
	ErrCapacity = errors.New("insufficient capacity")
	// ErrQuota: the account or project hit a limit (instances, vCPUs, cores,
	// servers). Another machine type of the class counts against the same
	// limit, so the SDK does not fall back and does not retry: free
	// resources or ask the cloud to raise the limit.
	ErrQuota = errors.New("quota exceeded")
	// ErrUnsupported: the backend does not support this operation.
	ErrUnsupported = errors.New("unsupported")
)

// Error is a raw backend error annotated with its portable code.
// errors.Is(err, provider.ErrNotFound) and errors.As(err, &smithyErr) both
// work on it.
type Error struct {
	Code error // one of the Err* codes above
	Err  error // the raw error from the backend SDK, may be nil
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Code.Error()
	}
	return fmt.Sprintf("%v: %v", e.Code, e.Err)
}

// Unwrap exposes both the code and the raw error to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Code}
	}
	return []error{e.Code, e.Err}
}

// Wrap annotates err with a portable code. Wrap(code, nil) returns an error
// carrying just the code.
func Wrap(code, err error) error { return &Error{Code: code, Err: err} }

// Errorf builds an error with a portable code and a formatted message.
func Errorf(code error, format string, args ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...)}
}

// CooldownError is a deletion the provider refused because the image's
// deletion protection, though lifted, is still in force for a cooldown
// period (AWS deregistration protection enabled with cooldown keeps
// refusing deregistration for 24 hours after it is disabled). It matches
// ErrConflict. Until is when the cooldown ends, zero when the provider
// cannot tell; Err is the backend's refusal, may be nil.
type CooldownError struct {
	ImageID string
	Until   time.Time
	Err     error
}

func (e *CooldownError) Error() string {
	msg := "deletion protection of image " + e.ImageID + " is in its cooldown"
	if !e.Until.IsZero() {
		msg += " until " + e.Until.UTC().Format(time.RFC3339)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return ErrConflict.Error() + ": " + msg
}

// Unwrap exposes ErrConflict and the backend's refusal.
func (e *CooldownError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrConflict}
	}
	return []error{ErrConflict, e.Err}
}

// Retryable reports whether err carries a code for which retrying the same
// call may succeed (ErrUnavailable, ErrThrottled).
func Retryable(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrThrottled)
}

// Info describes a driver.
type Info struct {
	Name   string // short provider name recorded on resources: "aws", "hetzner", "local", "sshhost"
	Region string // region or location the driver works in, "" if none
	// ShutdownTerminates reports that a machine powering itself off is
	// deleted by the backend (AWS with InstanceInitiatedShutdownBehavior
	// terminate). Only then does the SDK render a TTL shutdown into the
	// user-data; elsewhere Client.Reap enforces the TTL.
	ShutdownTerminates bool
}

// Driver is what every backend implements: machines to lease.
type Driver interface {
	Info() Info
	Machines
	// MachineTypes returns the ordered fallback list of machine types for a
	// lease class (tiny, small, standard, fast, large, beast) and
	// architecture ("amd64" or "arm64"). An unknown class or architecture
	// returns an error wrapping ErrInvalidArgument; a known architecture the
	// backend has no machines for returns one wrapping ErrUnsupported.
	MachineTypes(class, arch string) ([]string, error)
	// BaseImage returns the provider's default image for an architecture,
	// used when neither an explicit image nor a promoted one applies.
	BaseImage(ctx context.Context, arch string) (string, error)
}

// MachineState is the lifecycle state of a machine as the backend reports it.
type MachineState string

const (
	MachinePending    MachineState = "pending"
	MachineRunning    MachineState = "running"
	MachineStopping   MachineState = "stopping"
	MachineStopped    MachineState = "stopped"
	MachineTerminated MachineState = "terminated"
	MachineUnknown    MachineState = "unknown"
)

// Machine is a backend machine (instance, server, host).
type Machine struct {
	ID      string
	Name    string
	Type    string
	Image   string // image the machine booted
	State   MachineState
	Labels  map[string]string
	Created time.Time
	// SSHAddr is host:port the SDK dials (through the client's dialer hook)
	// to reach the machine's sshd; empty until the backend assigned an
	// address.
	SSHAddr string
}

// CreateMachineRequest asks a driver for one machine.
type CreateMachineRequest struct {
	// Token is an idempotency token (the lease id): a retried create with
	// the same token must not create a second machine where the backend
	// supports it.
	Token string
	// Name is the friendly name (the lease slug). The driver sanitizes it
	// to what the backend accepts and returns the name it used in
	// Machine.Name: never empty, and a label value (SanitizeLabelValue
	// leaves it unchanged).
	Name  string
	Image string
	Type  string
	// UserData is the rendered cloud-init document.
	UserData []byte
	Labels   map[string]string
	// AuthorizedKey is the lease's client public key in authorized_keys
	// format; drivers that register keys with the backend (AWS key pairs,
	// Hetzner SSH keys) use it, others may ignore it because UserData also
	// installs it.
	AuthorizedKey []byte
	// TerminateOnShutdown asks the backend to delete the machine when it
	// powers itself off (the box's own TTL shutdown), where supported.
	TerminateOnShutdown bool
}

// Machines manages machines.
//
// Every method of every driver interface takes ctx as the bound of the
// call: when ctx is cancelled or past its deadline, the method returns an
// error matching ctx.Err() (errors.Is) that matches no portable code but
// the context's (never ErrUnavailable, which the SDK retries), and a create
// with a done context creates nothing it does not also return.
type Machines interface {
	// CreateMachine creates a machine and returns it once the backend
	// accepted it, or once its create action finished where the backend has
	// such actions (it may still be pending and have no SSHAddr; the SDK
	// polls GetMachine). On a
	// capacity or quota error for the type, return an error wrapping
	// ErrCapacity. If the backend created something before failing, return
	// it with the error so the caller can delete it.
	//
	// The Token makes it idempotent: a create with the Token of a machine
	// that exists returns that machine, also after an earlier call's reply
	// was lost (the driver looks the token up, with the backend's client
	// token where it has one, before and after an ambiguous failure).
	CreateMachine(ctx context.Context, req CreateMachineRequest) (*Machine, error)
	// GetMachine returns ErrNotFound for unknown or terminated machines.
	GetMachine(ctx context.Context, id string) (*Machine, error)
	// ListMachines returns the machines having all the given labels: live
	// ones, and ones that terminated on their own but were not released
	// yet (State MachineTerminated), so the SDK can release what the driver
	// made for them.
	ListMachines(ctx context.Context, labels map[string]string) ([]*Machine, error)
	// DeleteMachine deletes a machine and what the driver created for it
	// (key pairs, ...). Deleting a machine that is already gone returns nil.
	DeleteMachine(ctx context.Context, id string) error
	// UpdateMachineLabels merges labels into the machine's labels; an
	// empty value removes the label.
	UpdateMachineLabels(ctx context.Context, id string, labels map[string]string) error
}

// ImageState is the lifecycle state of an image.
type ImageState string

const (
	ImagePending   ImageState = "pending"
	ImageAvailable ImageState = "available"
	ImageFailed    ImageState = "failed"
	ImageDeleted   ImageState = "deleted"
	ImageUnknown   ImageState = "unknown"
)

// Snapshot is a backing snapshot of an image.
type Snapshot struct {
	ID      string  `json:"id"`
	SizeGiB float64 `json:"size_gib,omitempty"`
}

// Image is a machine image (AMI, Hetzner snapshot, ...).
type Image struct {
	ID          string
	Name        string
	Description string
	State       ImageState
	StateReason string // why the image failed, when it did
	Arch        string
	Labels      map[string]string
	Created     time.Time
	Snapshots   []Snapshot
	// SizeGiB is the storage the image costs, when the backend reports it
	// (sum of snapshot sizes on AWS, image_size on Hetzner).
	SizeGiB float64
	// Protected reports deletion/deregistration protection.
	Protected bool
	// Deprecated is the deprecation time, zero if not deprecated.
	Deprecated time.Time
}

// CreateImageRequest asks a driver to create an image from a machine.
type CreateImageRequest struct {
	MachineID   string
	Name        string
	Description string
	Labels      map[string]string // put on the image and its snapshots
	NoReboot    bool
	// Token identifies this creation for idempotency: a driver whose create
	// call returned an ambiguous error finds the image again by it (it is
	// also among Labels) instead of creating a second one.
	Token string
}

// Images manages images.
type Images interface {
	// CreateImage starts creating an image and returns it, usually pending.
	// Like CreateMachine it is idempotent by Token: a create with the Token
	// of an image that exists returns that image, also after a lost reply.
	CreateImage(ctx context.Context, req CreateImageRequest) (*Image, error)
	// GetImage returns ErrNotFound for unknown or deleted images.
	GetImage(ctx context.Context, id string) (*Image, error)
	// ListImages returns images having all the given labels (all images
	// the account owns when labels is empty).
	ListImages(ctx context.Context, labels map[string]string) ([]*Image, error)
	// DeleteImage deletes the image and its backing snapshots. Deleting an
	// image that is already gone returns nil; deleting a protected image
	// (Protector) is refused with an error wrapping ErrConflict.
	DeleteImage(ctx context.Context, id string) error
	// UpdateImageLabels merges labels into the image's labels; an empty
	// value removes the label.
	UpdateImageLabels(ctx context.Context, id string, labels map[string]string) error
}

// ChannelEntry is one value a channel pointed to.
type ChannelEntry struct {
	Channel string
	ImageID string
	// Version is 1 for the first Set of the channel, and each Set makes
	// the version after the current one: a conditional Set that succeeds
	// makes exactly IfVersion+1 (1 for IfVersion -1). The only gaps are
	// the versions a backend without compare-and-set spends undoing a lost
	// conditional Set (a compensating write); ChannelHistory is oldest
	// first, versions strictly increasing.
	Version int64
	At      time.Time
	// Operator who set it, if the backend records it.
	Operator string
	// Proof is what the promotion was based on, as the SDK named it in
	// SetChannelRequest.Proof ("proof-<digest>" or "forced-<reason>").
	// Drivers store it with the entry and return it from CurrentChannel
	// and ChannelHistory.
	Proof string
}

// SetChannelRequest sets a channel's current image.
type SetChannelRequest struct {
	Channel  string
	ImageID  string
	Operator string
	// IfVersion, when non-zero, makes the set conditional: it succeeds only
	// if the channel's current version is still IfVersion, otherwise the
	// driver returns an error wrapping ErrConflict. Use -1 for "only if the
	// channel has never been set".
	IfVersion int64
	// Proof names what the promotion was based on: a label value (at most
	// MaxLabelValueLen characters of [A-Za-z0-9_.-]) the driver stores
	// with the new entry, or "".
	Proof string
}

// Channels stores promoted-image pointers ("channels", e.g. "default").
type Channels interface {
	// CurrentChannel returns ErrNotFound when the channel was never set.
	CurrentChannel(ctx context.Context, channel string) (*ChannelEntry, error)
	// SetChannel returns the new entry. If the channel moved but follow-up
	// work failed (e.g. mirroring labels), return the entry with the error:
	// an entry returned with an error means the channel now points at
	// req.ImageID. A conditional set that lost (IfVersion no longer
	// current, or a racing write took the version) returns a nil entry and
	// an error wrapping ErrConflict, also when the backend recorded the
	// losing write before undoing it; the SDK then leaves the image as it
	// was.
	SetChannel(ctx context.Context, req SetChannelRequest) (*ChannelEntry, error)
	// ChannelHistory returns every value the channel had, oldest first.
	ChannelHistory(ctx context.Context, channel string) ([]ChannelEntry, error)
}

// Optional capabilities, discovered by type assertion.

// Deprecator marks images deprecated as of a time.
type Deprecator interface {
	DeprecateImage(ctx context.Context, id string, at time.Time) error
}

// Protector toggles deletion/deregistration protection on an image.
type Protector interface {
	ProtectImage(ctx context.Context, id string, protect bool) error
}

// RegionCopier copies an image to another region, with its labels.
type RegionCopier interface {
	CopyImage(ctx context.Context, id, region, name string) (*Image, error)
}

// UsageFinder reports what still uses an image (instances, launch templates,
// parameters), as human-readable references. Implement it when the backend
// can boot or reference images outside crabbox's leases. Without it the SDK
// cannot tell whether an image is in use, so cleanup keeps every image it
// would otherwise delete as "use unknown"; any error ImageUsage returns
// (ErrUnsupported included) means the same: unknown, keep.
type UsageFinder interface {
	ImageUsage(ctx context.Context, id string) ([]string, error)
}

// BatchUsageFinder is a UsageFinder that answers for many images in one go,
// so cleanup's usage lookups grow with the backend's pages, not with the
// images (AWS: DescribeImageReferences takes up to 10 image ids per call;
// Hetzner: one server listing for the whole batch). Optional: cleanup uses
// it when present and ImageUsage otherwise, and re-reads each image's use
// with ImageUsage right before deleting it.
//
// ImagesUsage returns an entry for every id asked (the driver splits the
// batch into what its API takes). An id the backend no longer knows is an
// entry whose Err wraps ErrNotFound, not a failure of the call; any other
// per-image error means that image's use is unknown (cleanup keeps it). An
// error of the whole call means every image's use is unknown. The answer
// for each id must equal what ImageUsage would return for it.
type BatchUsageFinder interface {
	UsageFinder
	ImagesUsage(ctx context.Context, ids []string) (map[string]ImageUse, error)
}

// ImageUse is one image's entry in a BatchUsageFinder answer: its
// references (nil when unused), or why they could not be read.
type ImageUse struct {
	Refs []string
	Err  error
}

// OrphanSweeper deletes what the driver made for machines that no longer
// exist (key pairs, SSH keys), leaving anything younger than a grace period
// (a lease may be between uploading its key and creating its machine).
// Client.Reap calls it after releasing expired leases.
type OrphanSweeper interface {
	SweepOrphans(ctx context.Context) (int, error)
}

// ChannelVersionMarker records on the channel store itself that a channel
// version was verified known-good (an SSM parameter version label on AWS),
// in addition to the image status label the SDK writes. Implement it when
// the channel store can label versions, so tools reading the store alone
// (an EC2 launch resolving the parameter's label) see it. Without it the
// SDK loses nothing: known-good is decided from the image status label.
type ChannelVersionMarker interface {
	MarkKnownGood(ctx context.Context, channel string, version int64) error
}

// ChannelDeleter removes a channel and its history. Every driver with
// Channels should implement it: the conformance suite removes the channels
// it set with it (without it, they are left behind and the suite says so),
// and operators retire channels with it. Deleting a channel that was never
// set returns nil.
type ChannelDeleter interface {
	DeleteChannel(ctx context.Context, channel string) error
}

// Access tells the SDK how to reach a machine whose driver cannot apply the
// rendered user-data (existing SSH hosts): which user and key to log in with
// and which host key to pin.
type Access struct {
	User     string
	Signer   ssh.Signer
	HostKey  ssh.PublicKey
	WorkRoot string // directory commands run in; "" means the login directory
}

// AccessProvider is implemented by drivers whose machines ignore user-data.
// The SDK then uses the returned access instead of the per-lease keys.
type AccessProvider interface {
	MachineAccess(ctx context.Context, m *Machine) (*Access, error)
}
