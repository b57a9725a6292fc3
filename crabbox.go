// Package crabbox bakes, smoke-tests, promotes, rolls back and cleans up
// machine images, and leases boxes to run and check them, on any backend that
// implements the small driver interfaces in package provider.
//
// The portable types here (Client, Lease, Image, SmokeCheck, SmokeReport,
// CleanupPlan) hold all the waiting, retrying, naming, policy and SSH logic;
// drivers (provider/awsec2, provider/hetzner, provider/sshhost, and the
// embedded local cloud in crabboxtest) only translate single calls.
//
// Every blocking call takes a context.Context first. Nothing logs unless a
// logger is given with WithLogger. Errors match the sentinels below with
// errors.Is and carry details in *OpError, *WaitError, *RunError.
package crabbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/crabbox/crabbox-go/internal/pollsched"
	"github.com/crabbox/crabbox-go/internal/sshx"
	"github.com/crabbox/crabbox-go/provider"
)

// Sentinel errors. Match them with errors.Is; the concrete error usually is an
// *OpError, *WaitError or *RunError with the details.
var (
	// ErrNotFound: the lease, machine, image or channel does not exist.
	ErrNotFound = provider.ErrNotFound
	// ErrInvalidArgument: the call can never succeed as given.
	ErrInvalidArgument = provider.ErrInvalidArgument
	// ErrUnsupported: the provider lacks the capability.
	ErrUnsupported = provider.ErrUnsupported
	// ErrConflict: a concurrent change won (e.g. another promotion).
	ErrConflict = provider.ErrConflict
	// ErrUnavailable: a transient backend failure survived the retries.
	ErrUnavailable = provider.ErrUnavailable
	// ErrThrottled: the backend kept rate-limiting past the retries.
	ErrThrottled = provider.ErrThrottled
	// ErrPermission: the backend credentials lack a permission.
	ErrPermission = provider.ErrPermission
	// ErrCapacity: no machine type of the class had capacity.
	ErrCapacity = provider.ErrCapacity
	// ErrQuota: the account or project limit is used up; no other machine
	// type was tried, since they count against the same limit.
	ErrQuota = provider.ErrQuota
	// ErrHostKeyMismatch: a box presented a host key other than the one
	// pinned for its lease. Never retried, never accepted.
	ErrHostKeyMismatch = sshx.ErrHostKeyMismatch
	// ErrConnectionLost: the SSH connection to a box died (EOF, reset, or
	// missed keepalives) while a command ran.
	ErrConnectionLost = sshx.ErrConnectionLost
	// ErrSessionEnded: the box's SSH server ended a running command's
	// session (an idle timeout, the session process killed) while the
	// connection stayed up. Not a lost connection: other commands go on.
	ErrSessionEnded = sshx.ErrSessionEnded
	// ErrSmokeFailed: a smoke report did not pass.
	ErrSmokeFailed = errors.New("smoke failed")
	// ErrCommandFailed: a command ran and exited non-zero (see *RunError).
	ErrCommandFailed = errors.New("command failed")
	// ErrImageFailed: an image reached the failed state (see *WaitError).
	ErrImageFailed = errors.New("image failed")
	// ErrNotOwned: the image was not created by crabbox; the SDK refuses to
	// promote or delete it.
	ErrNotOwned = errors.New("not created by crabbox")
	// ErrNoProof: promotion without a passing smoke report of the image.
	ErrNoProof = errors.New("no passing smoke proof for this image")
	// ErrExpired: the lease is past its expiry.
	ErrExpired = errors.New("lease expired")
	// ErrStateDir: the state dir (WithStateDir) failed: it cannot be
	// created or written, or a lease's keys in it are missing (then also
	// ErrNotFound) or unreadable.
	ErrStateDir = errors.New("state dir")
)

// OpError is returned by Client and Lease methods: which operation failed, on
// which provider and resource. It unwraps to the cause, so errors.Is matches
// the sentinels and errors.As reaches backend SDK errors.
type OpError struct {
	Op       string // e.g. "warmup", "create-image", "promote"
	Provider string
	ID       string // lease, image or channel id, if known
	Err      error
}

func (e *OpError) Error() string {
	var b strings.Builder
	b.WriteString("crabbox: ")
	b.WriteString(e.Op)
	if e.Provider != "" {
		b.WriteString(" [")
		b.WriteString(e.Provider)
		b.WriteString("]")
	}
	if e.ID != "" {
		b.WriteString(" ")
		b.WriteString(e.ID)
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *OpError) Unwrap() error { return e.Err }

// WaitError is returned when waiting for a resource gave up: the context
// ended, the wait timed out, or the resource reached a terminal bad state. It
// keeps the last observed state and the resource id, so nothing is lost: an
// image whose wait timed out can still be found and adopted by ID.
type WaitError struct {
	Resource  string // "lease", "image", "ssh"
	ID        string
	LastState string
	Attempts  int
	Waited    time.Duration
	// Err is the context error, ErrImageFailed, or the last probe error.
	Err error
}

func (e *WaitError) Error() string {
	return fmt.Sprintf("waiting for %s %s gave up after %s (%d attempts, last state %q): %v",
		e.Resource, e.ID, e.Waited.Round(time.Millisecond), e.Attempts, e.LastState, e.Err)
}

func (e *WaitError) Unwrap() error { return e.Err }

// EventKind names a progress event.
type EventKind string

const (
	EventLeaseCreating  EventKind = "lease.creating"
	EventLeaseCreated   EventKind = "lease.created"
	EventLeaseWaiting   EventKind = "lease.waiting"
	EventLeaseReady     EventKind = "lease.ready"
	EventLeaseReleased  EventKind = "lease.released"
	EventOrphansSwept   EventKind = "lease.orphans-swept"
	EventTypeFallback   EventKind = "lease.type-fallback"
	EventImagePreparing EventKind = "image.preparing"
	EventImageCreating  EventKind = "image.creating"
	EventImageWaiting   EventKind = "image.waiting"
	EventImageReady     EventKind = "image.ready"
	EventImageDeleted   EventKind = "image.deleted"
	EventPromoted       EventKind = "channel.promoted"
	EventRolledBack     EventKind = "channel.rolled-back"
	EventSmokeCheck     EventKind = "smoke.check"
	EventRetry          EventKind = "retry"
)

// Event reports progress. The callback given to WithEvents is called
// synchronously from the goroutine doing the work (smoke checks run
// concurrently, so it may be called from several goroutines at once) and
// never after the call that caused it has returned.
type Event struct {
	Time     time.Time
	Kind     EventKind
	Resource string // "lease", "image", "channel", "smoke"
	ID       string
	State    string
	Attempt  int
	Message  string
}

// Backoff returns the delay before poll attempt n (n starts at 1).
type Backoff func(attempt int) time.Duration

// ExponentialBackoff doubles from min to max.
func ExponentialBackoff(min, max time.Duration) Backoff {
	return func(attempt int) time.Duration {
		d := min
		for i := 1; i < attempt && d < max; i++ {
			d *= 2
		}
		if d > max {
			d = max
		}
		return d
	}
}

// ImageWaitBackoff is the default image poll schedule: 1 s between the
// early polls, then a tenth of the time waited so far, at most 30 s. A wait
// so ends within max(2 s, 10 % of the time the image was pending) of the
// image becoming available, and a 45-minute wait polls about 126 times
// (one call per 21 s on average).
func ImageWaitBackoff() Backoff { return pollsched.Delay }

// ConstantBackoff always waits d.
func ConstantBackoff(d time.Duration) Backoff { return func(int) time.Duration { return d } }

// DialFunc dials a network connection; used for every SSH connection.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

type clientOptions struct {
	logger        *slog.Logger
	events        func(Event)
	operator      string
	dial          DialFunc
	backoff       Backoff
	imageBackoff  Backoff
	stateDir      string
	now           func() time.Time
	retryAttempts int
	keepAlive     time.Duration // 0: the SSH transport's default
	keepAliveMax  int           // 0: the SSH transport's default
	cleanupBound  time.Duration
	creatingGrace time.Duration
}

// Option configures a Client.
type Option func(*clientOptions) error

// WithLogger sets a structured logger. The default discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(o *clientOptions) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidArgument)
		}
		o.logger = l
		return nil
	}
}

// WithEvents sets a progress callback (see Event).
func WithEvents(fn func(Event)) Option {
	return func(o *clientOptions) error { o.events = fn; return nil }
}

// WithOperator sets the operator name recorded on leases and images. The
// default is the OS user.
func WithOperator(name string) Option {
	return func(o *clientOptions) error {
		if sanitizeLabelValue(name) == "" {
			return fmt.Errorf("%w: operator %q has no usable characters", ErrInvalidArgument, name)
		}
		o.operator = name
		return nil
	}
}

// WithDialer sets the function used to open every SSH connection (to route
// through a bastion, a proxy, or in tests to loopback).
func WithDialer(dial DialFunc) Option {
	return func(o *clientOptions) error {
		if dial == nil {
			return fmt.Errorf("%w: nil dialer", ErrInvalidArgument)
		}
		o.dial = dial
		return nil
	}
}

// WithPollBackoff sets the delay between readiness polls and retries of
// transient errors. Default: exponential from 1 s to 10 s.
func WithPollBackoff(b Backoff) Option {
	return func(o *clientOptions) error {
		if b == nil {
			return fmt.Errorf("%w: nil backoff", ErrInvalidArgument)
		}
		o.backoff = b
		return nil
	}
}

// WithImagePollBackoff sets the delay between image state polls. Default:
// ImageWaitBackoff (1 s early, then a tenth of the time waited, at most
// 30 s).
func WithImagePollBackoff(b Backoff) Option {
	return func(o *clientOptions) error {
		if b == nil {
			return fmt.Errorf("%w: nil backoff", ErrInvalidArgument)
		}
		o.imageBackoff = b
		return nil
	}
}

// WithRetryAttempts sets how many times a call failing with ErrUnavailable
// or ErrThrottled is attempted in all (default 5). Permanent errors are
// never retried. Drivers that retry each API request themselves (awsec2
// and hetzner with their SDK's retryer on, see their RetriesRequests) are
// not retried by the client at all: one layer retries, never both.
func WithRetryAttempts(n int) Option {
	return func(o *clientOptions) error {
		if n < 1 {
			return fmt.Errorf("%w: retry attempts %d < 1", ErrInvalidArgument, n)
		}
		o.retryAttempts = n
		return nil
	}
}

// DefaultCleanupTimeout bounds the cleanup after a failed Warmup.
const DefaultCleanupTimeout = 2 * time.Minute

// WithCleanupTimeout bounds the cleanup after a failed Warmup (releasing
// the machine it made): the cleanup runs detached from the caller's
// context, so a cancelled or timed-out Warmup still deletes what it
// created, and ends at the latest d after it began, even when the cloud API
// hangs; the Warmup then returns the lease with the error, so the caller
// can release it later. Default DefaultCleanupTimeout (2 minutes). The
// drivers' own lookups of what an ambiguous create made (awsec2 and hetzner
// WithAdoptWait) happen before it, inside the create call.
func WithCleanupTimeout(d time.Duration) Option {
	return func(o *clientOptions) error {
		if d <= 0 {
			return fmt.Errorf("%w: cleanup timeout %v must be positive", ErrInvalidArgument, d)
		}
		o.cleanupBound = d
		return nil
	}
}

// DefaultCreatingGrace is how long past its readiness deadline Reap leaves
// a lease that is still labelled creating.
const DefaultCreatingGrace = 10 * time.Minute

// WithCreatingGrace sets how long past its readiness deadline (its creation
// plus the Warmup's ready timeout, recorded on the machine) Reap leaves a
// lease still labelled creating, whose Warmup died or lost it: after that
// Reap releases it. A Warmup that is still waiting for readiness is never
// reaped. Default DefaultCreatingGrace (10 minutes); a lease made by an
// SDK that did not record the deadline is left for an hour.
func WithCreatingGrace(d time.Duration) Option {
	return func(o *clientOptions) error {
		if d <= 0 {
			return fmt.Errorf("%w: creating grace %v must be positive", ErrInvalidArgument, d)
		}
		o.creatingGrace = d
		return nil
	}
}

// WithStateDir sets where per-lease SSH keys are kept (files 0600), so another
// process can re-attach to a lease. Default: os.UserConfigDir()/crabbox.
func WithStateDir(dir string) Option {
	return func(o *clientOptions) error {
		if dir == "" {
			return fmt.Errorf("%w: empty state dir", ErrInvalidArgument)
		}
		o.stateDir = dir
		return nil
	}
}

// Defaults of WithSSHKeepalive: a keepalive every 5 s, the connection
// declared lost after 3 unanswered intervals, so a frozen or silent box is
// detected within 15 to 20 s.
const (
	DefaultSSHKeepaliveInterval = sshx.DefaultKeepAliveInterval
	DefaultSSHKeepaliveCount    = sshx.DefaultKeepAliveMax
)

// WithSSHKeepalive sets how every SSH connection to a box watches a silent
// peer: a keepalive request is sent every interval, and after count
// intervals without a reply the connection is closed and running commands
// fail with ErrConnectionLost. A box that stopped answering is so detected
// within (count+1) x interval. Default: DefaultSSHKeepaliveInterval (5 s) x
// DefaultSSHKeepaliveCount (3). interval must be positive and count at
// least 1.
func WithSSHKeepalive(interval time.Duration, count int) Option {
	return func(o *clientOptions) error {
		if interval <= 0 || count < 1 {
			return fmt.Errorf("%w: ssh keepalive %v x %d (want a positive interval and a count of at least 1)",
				ErrInvalidArgument, interval, count)
		}
		o.keepAlive, o.keepAliveMax = interval, count
		return nil
	}
}

// WithClock sets the time source (for tests and reproducible plans).
func WithClock(now func() time.Time) Option {
	return func(o *clientOptions) error {
		if now == nil {
			return fmt.Errorf("%w: nil clock", ErrInvalidArgument)
		}
		o.now = now
		return nil
	}
}

// Client is the portable entry point. It is safe for concurrent use and
// holds no global state.
type Client struct {
	drv  provider.Driver
	info provider.Info
	caps caps // the optional interfaces drv implements
	o    clientOptions
}

// New returns a Client over a driver. A nil driver, or an interface holding
// a nil pointer, is refused with ErrInvalidArgument.
func New(p provider.Driver, opts ...Option) (*Client, error) {
	if isNil(p) {
		return nil, fmt.Errorf("crabbox: %w: nil provider", ErrInvalidArgument)
	}
	o := clientOptions{
		logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		backoff:       ExponentialBackoff(time.Second, 10*time.Second),
		imageBackoff:  ImageWaitBackoff(),
		now:           time.Now,
		retryAttempts: 5,
		cleanupBound:  DefaultCleanupTimeout,
		creatingGrace: DefaultCreatingGrace,
	}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("crabbox: %w", err)
		}
	}
	if o.operator == "" {
		o.operator = defaultOperator()
	}
	if o.stateDir == "" {
		// Never fall back to a shared temp dir: the state dir holds
		// private keys.
		dir, err := os.UserConfigDir()
		if err != nil {
			return nil, fmt.Errorf("crabbox: %w: %w: no user config dir for lease keys (%v); pass WithStateDir", ErrInvalidArgument, ErrStateDir, err)
		}
		o.stateDir = filepath.Join(dir, "crabbox")
	}
	return &Client{drv: p, info: p.Info(), caps: discoverCaps(p), o: o}, nil
}

// isNil reports whether d is nil or an interface holding a nil pointer (or
// other nil value), whose methods would panic.
func isNil(d provider.Driver) bool {
	if d == nil {
		return true
	}
	switch v := reflect.ValueOf(d); v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return v.IsNil()
	}
	return false
}

// Provider returns the driver's info.
func (c *Client) Provider() provider.Info { return c.info }

// Operator returns the operator name recorded on created resources.
func (c *Client) Operator() string { return c.o.operator }

func defaultOperator() string {
	if u, err := user.Current(); err == nil && sanitizeLabelValue(u.Username) != "" {
		return u.Username
	}
	if v := os.Getenv("USER"); sanitizeLabelValue(v) != "" {
		return v
	}
	return "unknown"
}

func (c *Client) emit(e Event) {
	if e.Time.IsZero() {
		e.Time = c.o.now()
	}
	c.o.logger.Debug("crabbox event", "kind", e.Kind, "resource", e.Resource, "id", e.ID,
		"state", e.State, "attempt", e.Attempt, "message", e.Message)
	if c.o.events != nil {
		c.o.events(e)
	}
}

func (c *Client) opErr(op, id string, err error) error {
	if err == nil {
		return nil
	}
	var oe *OpError
	if errors.As(err, &oe) && oe.Op == op {
		return err
	}
	return &OpError{Op: op, Provider: c.info.Name, ID: id, Err: err}
}

// retryAttempts is how many times retry runs a driver call in all: once
// when the driver retries its requests itself, else WithRetryAttempts.
func (c *Client) retryAttempts() int {
	if c.caps.retriesRequests {
		return 1
	}
	return c.o.retryAttempts
}

// retry runs fn, retrying errors that carry ErrUnavailable or ErrThrottled
// with the client's backoff, at most retryAttempts times in all: one layer
// retries, never both, so a driver that retries each request itself
// (provider.RequestRetrier) is run once. Permanent errors return at once.
func retry[T any](ctx context.Context, c *Client, what string, fn func(context.Context) (T, error)) (T, error) {
	attempts := c.retryAttempts()
	for attempt := 1; ; attempt++ {
		v, err := fn(ctx)
		var fin *finalError
		if errors.As(err, &fin) {
			return v, fin.err
		}
		if err == nil || !provider.Retryable(err) || attempt >= attempts {
			return v, err
		}
		c.emit(Event{Kind: EventRetry, Resource: what, Attempt: attempt, Message: err.Error()})
		t := time.NewTimer(c.o.backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			// Keep what the failed attempt returned: a driver may hand
			// back a half-made resource with its error.
			return v, errors.Join(ctx.Err(), err)
		case <-t.C:
		}
	}
}

// finalError tells retry not to repeat a call even though its error is
// transient: the call already had an effect.
type finalError struct{ err error }

func (e *finalError) Error() string { return e.err.Error() }
func (e *finalError) Unwrap() error { return e.err }

func retryErr(ctx context.Context, c *Client, what string, fn func(context.Context) error) error {
	_, err := retry(ctx, c, what, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
	return err
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
