// Leases: the Lease type, Warmup (pick the image, make the keys, create the
// machine with type fallback, wait until ready) and the lease's own
// lifecycle (Touch, Extend, Release, Close).

package crabbox

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/sshx"
	"github.com/crabbox/crabbox-go/provider"
)

// Lease is a machine leased for a while, reached over one SSH connection.
// Its methods are safe for concurrent use. Its exported fields describe the
// lease as it was obtained; Touch and Extend update TTL and Expires, so do
// not read those while another goroutine touches or extends the lease.
// A Lease decoded from JSON is a record only: its methods need a Lease
// from Client.Warmup, Client.Lease or Client.Leases. In JSON, TTL and
// IdleTimeout are float seconds ("ttl_seconds", "idle_timeout_seconds"),
// like every duration the SDK writes; the nanosecond fields earlier
// versions wrote ("ttl_ns", "idle_timeout_ns") are still read. Hold and
// marshal a *Lease, never a Lease value: a Lease holds locks (go vet's
// copylocks check flags a copy), and a value in a struct field is encoded
// by encoding/json's defaults, with the nanosecond names.
type Lease struct {
	ID          string            `json:"id"`
	Slug        string            `json:"slug"`
	Provider    string            `json:"provider"`
	Region      string            `json:"region,omitempty"`
	Class       string            `json:"class,omitempty"`
	MachineID   string            `json:"machine_id"`
	MachineType string            `json:"machine_type,omitempty"`
	ImageID     string            `json:"image_id"`
	ImageSource ImageSource       `json:"image_source"`
	Channel     string            `json:"channel,omitempty"`
	Operator    string            `json:"operator,omitempty"`
	Desktop     bool              `json:"desktop"`
	Browser     bool              `json:"browser"`
	Created     time.Time         `json:"created"`
	TTL         time.Duration     `json:"ttl_ns"`
	IdleTimeout time.Duration     `json:"idle_timeout_ns"`
	Expires     time.Time         `json:"expires"`
	SSHAddr     string            `json:"ssh_addr,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`

	c *Client
	// machine is the id of the machine the SDK created or attached, kept
	// apart from the exported MachineID a caller may overwrite: Smoke
	// records its proof on the image this machine booted.
	machine  string
	user     string
	signer   ssh.Signer
	hostKey  ssh.PublicKey
	workRoot string // where commands run, if the driver's access names one

	mu       sync.Mutex
	expMu    sync.Mutex // serializes setExpiry
	ssh      *sshx.Client
	released bool
	tunnels  tunnelSet // open forwards, closed with the lease
}

// leaseJSON is Lease without its methods, for its JSON methods.
type leaseJSON Lease

// MarshalJSON writes the lease record with TTL and IdleTimeout as float
// seconds.
func (l *Lease) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("null"), nil
	}
	return json.Marshal(struct {
		*leaseJSON
		TTL         float64 `json:"ttl_seconds"`
		IdleTimeout float64 `json:"idle_timeout_seconds"`
		// Shadow the nanosecond fields (written by earlier versions).
		TTLNs  *int64 `json:"ttl_ns,omitempty"`
		IdleNs *int64 `json:"idle_timeout_ns,omitempty"`
	}{leaseJSON: (*leaseJSON)(l), TTL: seconds(l.TTL), IdleTimeout: seconds(l.IdleTimeout)})
}

// UnmarshalJSON reads what MarshalJSON writes, and the nanosecond fields
// of earlier versions; the seconds win when both are there.
func (l *Lease) UnmarshalJSON(data []byte) error {
	if l == nil {
		return &OpError{Op: "decode-lease", Err: fmt.Errorf("%w: nil lease", ErrInvalidArgument)}
	}
	aux := struct {
		*leaseJSON
		TTL         *float64 `json:"ttl_seconds"`
		IdleTimeout *float64 `json:"idle_timeout_seconds"`
	}{leaseJSON: (*leaseJSON)(l)}
	if err := json.Unmarshal(data, &aux); err != nil {
		return err
	}
	if aux.TTL != nil {
		l.TTL = fromSeconds(*aux.TTL)
	}
	if aux.IdleTimeout != nil {
		l.IdleTimeout = fromSeconds(*aux.IdleTimeout)
	}
	return nil
}

// Warmup leases a new machine: it picks the image (explicit, promoted in the
// channel, or the provider's base), generates per-lease client and host keys,
// renders cloud-init, creates the machine (falling back through the class's
// machine types on capacity errors), and waits until SSH answers with the
// pinned host key and the readiness command passes.
//
// If the machine was created but never became ready (or ctx ended), Warmup
// releases it with a context detached from cancellation, bounded by
// WithCleanupTimeout (default two minutes), and returns the error joined
// with any release error; if the release did not finish, the lease comes
// back with the error so the machine is never lost. With
// WithKeepOnFailure it keeps the machine and returns the lease with the error.
func (c *Client) Warmup(ctx context.Context, opts ...LeaseOption) (*Lease, error) {
	o := leaseOptions{
		class:   ClassStandard,
		arch:    provider.DefaultArch,
		ttl:     90 * time.Minute,
		idle:    30 * time.Minute,
		channel: DefaultChannel,
	}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, c.opErr("warmup", "", err)
		}
	}
	if o.idle > o.ttl {
		o.idle = o.ttl
	}
	if o.readyTimeout == 0 {
		o.readyTimeout = 20 * time.Minute
		if o.desktop {
			o.readyTimeout = 45 * time.Minute
		}
	}
	id, err := NewLeaseID()
	if err != nil {
		return nil, c.opErr("warmup", "", err)
	}
	l, err := c.warmup(ctx, id, o)
	if err != nil {
		return l, c.opErr("warmup", id, err)
	}
	return l, nil
}

// warmup makes the lease: machine types and image first (permanent errors
// before anything exists), then the keys, then the machine, then the wait.
// Every failure after the keys are saved goes through the one deferred
// undo: without a machine it removes the keys; with one, fail releases it
// (or keeps it, with WithKeepOnFailure).
func (c *Client) warmup(ctx context.Context, id string, o leaseOptions) (l *Lease, err error) {
	types, err := c.machineTypes(o)
	if err != nil {
		return nil, err
	}
	imageID, source, err := c.resolveImage(ctx, o)
	if err != nil {
		return nil, err
	}
	slug, err := c.freeSlug(ctx, id)
	if err != nil {
		return nil, err
	}
	l = c.newLease(id, slug, imageID, source, o)
	keys, err := l.makeKeys()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			return
		}
		if l.MachineID == "" {
			c.removeLeaseKeys(id)
			l = nil
			return
		}
		l, err = l.fail(ctx, o, err)
	}()
	userData, err := cloudinit.Render(c.cloudConfig(id, keys, o))
	if err != nil {
		return l, err
	}
	if err := l.create(ctx, types, userData, keys.authorized, c.machineLabels(l, o)); err != nil {
		return l, err
	}
	if err := l.settleSlug(ctx); err != nil {
		return l, err
	}
	if err := l.waitReady(ctx, o.readyTimeout); err != nil {
		return l, err
	}
	if err := retryErr(ctx, c, "lease", func(ctx context.Context) error {
		return c.drv.UpdateMachineLabels(ctx, l.MachineID, map[string]string{LabelState: "ready"})
	}); err != nil {
		return l, fmt.Errorf("labelling lease ready: %w", err)
	}
	c.emit(Event{Kind: EventLeaseReady, Resource: "lease", ID: id, State: "ready",
		Message: fmt.Sprintf("%s (%s) ready at %s", l.Slug, l.MachineID, l.SSHAddr)})
	return l, nil
}

// machineTypes returns the machine types to try, in order: the one asked
// for, or the class's fallback list. An unknown class is a permanent error.
func (c *Client) machineTypes(o leaseOptions) ([]string, error) {
	if o.machineType != "" {
		return []string{o.machineType}, nil
	}
	types, err := c.drv.MachineTypes(o.class, o.arch)
	if err != nil {
		return nil, err
	}
	if len(types) == 0 {
		return nil, fmt.Errorf("%w: provider has no machine types for class %s/%s", ErrInvalidArgument, o.class, o.arch)
	}
	return types, nil
}

// freeSlug returns the lease's slug, suffixed if a live lease has it.
func (c *Client) freeSlug(ctx context.Context, id string) (string, error) {
	live, err := retry(ctx, c, "lease", func(ctx context.Context) ([]*provider.Machine, error) {
		return c.drv.ListMachines(ctx, map[string]string{LabelManaged: "true"})
	})
	if err != nil {
		return "", fmt.Errorf("listing live leases: %w", err)
	}
	taken := map[string]bool{}
	for _, m := range live {
		if m.State != provider.MachineTerminated {
			taken[m.Labels[LabelSlug]] = true
		}
	}
	return uniqueSlug(LeaseSlug(id), taken), nil
}

// maxSlugAttempts bounds settleSlug's re-picks.
const maxSlugAttempts = 8

// settleSlug makes the slug of the lease, whose machine now exists, unique
// among live leases. Listing, picking and creating are not atomic, so
// concurrent Warmups may have picked the same slug: a lease that sees
// another live lease with its slug takes a new one (from a base slug of its
// own per attempt, so two movers part), relabels its machine and looks
// again. Of two machines labelled with one slug, the one labelled last sees
// the other, so at most one keeps it. The slug is the one the machine's
// label carries.
func (l *Lease) settleSlug(ctx context.Context) error {
	c := l.c
	for attempt := 1; ; attempt++ {
		live, err := retry(ctx, c, "lease", func(ctx context.Context) ([]*provider.Machine, error) {
			return c.drv.ListMachines(ctx, map[string]string{LabelManaged: "true"})
		})
		if err != nil {
			return fmt.Errorf("listing live leases: %w", err)
		}
		taken := map[string]bool{}
		for _, m := range live {
			switch {
			case m.State == provider.MachineTerminated:
			case m.ID == l.MachineID:
				if s := m.Labels[LabelSlug]; s != "" {
					l.Slug = s
				}
			default:
				taken[m.Labels[LabelSlug]] = true
			}
		}
		if !taken[l.Slug] {
			return nil
		}
		if attempt >= maxSlugAttempts {
			return fmt.Errorf("%w: slug %s is taken and %d re-picks collided", ErrConflict, l.Slug, attempt-1)
		}
		next := uniqueSlug(LeaseSlug(l.ID+"."+strconv.Itoa(attempt)), taken)
		if err := retryErr(ctx, c, "lease", func(ctx context.Context) error {
			return c.drv.UpdateMachineLabels(ctx, l.MachineID, map[string]string{LabelSlug: next})
		}); err != nil {
			return fmt.Errorf("relabelling lease with a free slug: %w", err)
		}
		l.Slug = next
	}
}

// newLease returns the record of a lease about to be created.
func (c *Client) newLease(id, slug, imageID string, source ImageSource, o leaseOptions) *Lease {
	now := c.o.now().UTC().Truncate(time.Second)
	l := &Lease{
		ID: id, Slug: slug, Provider: c.info.Name, Region: c.info.Region, Class: o.class,
		ImageID: imageID, ImageSource: source, Channel: o.channel, Operator: c.o.operator,
		Desktop: o.desktop, Browser: o.browser, Created: now, TTL: o.ttl, IdleTimeout: o.idle,
		Expires: now.Add(o.idle), c: c, user: cloudinit.DefaultUser,
	}
	if o.machineType != "" {
		l.Class = ""
	}
	return l
}

// leaseKeys are a new lease's keys, as the user-data and the create call
// need them.
type leaseKeys struct {
	authorized    string // the client public key, authorized_keys format
	hostPEM       []byte // the host private key
	hostPublicKey string // the host public key, authorized_keys format
}

// makeKeys generates the lease's client key and host key, pins them on the
// lease and saves them in the state dir.
func (l *Lease) makeKeys() (leaseKeys, error) {
	clientPriv, clientSigner, err := newEd25519()
	if err != nil {
		return leaseKeys{}, err
	}
	hostPriv, hostSigner, err := newEd25519()
	if err != nil {
		return leaseKeys{}, err
	}
	l.signer, l.hostKey = clientSigner, hostSigner.PublicKey()
	hostPEM, err := marshalPrivateKey(hostPriv, "crabbox host "+l.ID)
	if err != nil {
		return leaseKeys{}, err
	}
	if err := l.c.saveLeaseKeys(l.ID, clientPriv, hostSigner.PublicKey()); err != nil {
		return leaseKeys{}, err
	}
	return leaseKeys{
		authorized:    strings.TrimSpace(string(ssh.MarshalAuthorizedKey(clientSigner.PublicKey()))),
		hostPEM:       hostPEM,
		hostPublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostSigner.PublicKey()))),
	}, nil
}

// cloudConfig is the user-data configuration of a new lease.
func (c *Client) cloudConfig(id string, k leaseKeys, o leaseOptions) cloudinit.Config {
	cfg := cloudinit.Config{
		LeaseID:        id,
		User:           cloudinit.DefaultUser,
		AuthorizedKeys: []string{k.authorized},
		HostKeyPEM:     k.hostPEM,
		HostKeyPublic:  k.hostPublicKey,
		Desktop:        o.desktop,
		Browser:        o.browser,
		Packages:       o.packages,
	}
	if c.info.ShutdownTerminates {
		cfg.ShutdownAfter = o.ttl
	}
	return cfg
}

// machineLabels are the labels of a new lease's machine: the caller's,
// then the managed ones (empty values left out).
func (c *Client) machineLabels(l *Lease, o leaseOptions) map[string]string {
	labels := map[string]string{}
	for k, v := range o.labels {
		labels[k] = v
	}
	for k, v := range map[string]string{
		LabelManaged:     "true",
		LabelCreatedBy:   "crabbox",
		LabelLease:       l.ID,
		LabelSlug:        l.Slug,
		LabelClass:       l.Class,
		LabelOperator:    sanitizeLabelValue(c.o.operator),
		LabelCreated:     formatLabelTime(l.Created),
		LabelTTL:         strconv.Itoa(int(o.ttl.Seconds())),
		LabelIdle:        strconv.Itoa(int(o.idle.Seconds())),
		LabelExpires:     formatLabelTime(l.Expires),
		LabelTouched:     formatLabelTime(l.Created),
		LabelDesktop:     strconv.FormatBool(o.desktop),
		LabelBrowser:     strconv.FormatBool(o.browser),
		LabelImage:       sanitizeLabelValue(l.ImageID),
		LabelImageSource: string(l.ImageSource),
		LabelChannel:     o.channel,
		LabelState:       "creating",
		labelReadyBy:     formatLabelTime(l.Created.Add(o.readyTimeout)),
	} {
		if v != "" {
			labels[k] = v
		}
	}
	return labels
}

// create creates the lease's machine, falling back through the machine
// types on capacity errors. When the backend made something before failing,
// l.MachineID is set, so the caller's undo releases it.
func (l *Lease) create(ctx context.Context, types []string, userData []byte, authorized string, labels map[string]string) error {
	c := l.c
	var capErrs []error
	for i, typ := range types {
		c.emit(Event{Kind: EventLeaseCreating, Resource: "lease", ID: l.ID, State: "creating", Attempt: i + 1,
			Message: fmt.Sprintf("creating %s machine from %s image %s", typ, l.ImageSource, l.ImageID)})
		// A distinct idempotency token per type: a retried create of the
		// same type never makes two boxes, and the next type is not
		// mistaken for a retry of the previous one.
		token := l.ID
		if i > 0 {
			token = fmt.Sprintf("%s-t%d", l.ID, i+1)
		}
		req := provider.CreateMachineRequest{
			Token: token, Name: l.Slug, Image: l.ImageID, Type: typ, UserData: userData, Labels: labels,
			AuthorizedKey: []byte(authorized), TerminateOnShutdown: c.info.ShutdownTerminates,
		}
		m, err := retry(ctx, c, "lease", func(ctx context.Context) (*provider.Machine, error) {
			return c.drv.CreateMachine(ctx, req)
		})
		if err == nil {
			l.MachineType = typ
			l.created(m)
			return nil
		}
		if m != nil {
			// Half-made: the backend created something before failing.
			l.MachineID = m.ID
			return err
		}
		if errors.Is(err, provider.ErrCapacity) && i+1 < len(types) && ctx.Err() == nil {
			capErrs = append(capErrs, fmt.Errorf("%s: %w", typ, err))
			c.emit(Event{Kind: EventTypeFallback, Resource: "lease", ID: l.ID, State: "fallback", Attempt: i + 1,
				Message: fmt.Sprintf("%s has no capacity, trying %s", typ, types[i+1])})
			continue
		}
		return errors.Join(append(capErrs, err)...)
	}
	return fmt.Errorf("%w: no machine types to try", ErrInvalidArgument)
}

// created records the machine the lease got.
func (l *Lease) created(m *provider.Machine) {
	c := l.c
	l.MachineID, l.machine = m.ID, m.ID
	l.applyMachine(m)
	if c.caps.access != nil {
		// The host ignores user-data: log in with the credentials the
		// driver gives, not the per-lease keys.
		l.mu.Lock()
		l.signer, l.hostKey = nil, nil
		l.mu.Unlock()
		c.removeLeaseKeys(l.ID)
	}
	c.emit(Event{Kind: EventLeaseCreated, Resource: "lease", ID: l.ID, State: string(m.State),
		Message: fmt.Sprintf("machine %s (%s) created", m.ID, l.MachineType)})
}

// fail releases a half-made lease (unless kept) with a context detached
// from ctx's cancellation and bounded by the client's cleanup timeout
// (WithCleanupTimeout), and joins any release error. When the release
// fails (or the bound ends it) the lease is returned with the error: the
// machine may still run.
func (l *Lease) fail(ctx context.Context, o leaseOptions, cause error) (*Lease, error) {
	if o.keepOnFailure {
		_ = l.c.drv.UpdateMachineLabels(context.WithoutCancel(ctx), l.MachineID, map[string]string{LabelState: "failed"})
		return l, cause
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.c.o.cleanupBound)
	defer cancel()
	if rerr := l.Release(rctx); rerr != nil {
		// The machine may still exist: hand the lease back so the caller
		// can retry the release.
		return l, errors.Join(cause, fmt.Errorf("releasing machine %s after failure: %w", l.MachineID, rerr))
	}
	return nil, cause
}

func (c *Client) resolveImage(ctx context.Context, o leaseOptions) (string, ImageSource, error) {
	if o.image != "" {
		return o.image, ImageExplicit, nil
	}
	if ch := c.caps.channels; ch != nil {
		e, err := c.currentChannel(ctx, ch, o.channel)
		switch {
		case err == nil:
			return e.ImageID, ImagePromoted, nil
		case !errors.Is(err, ErrNotFound):
			return "", "", fmt.Errorf("reading channel %s: %w", o.channel, err)
		}
	}
	base, err := retry(ctx, c, "image", func(ctx context.Context) (string, error) {
		return c.drv.BaseImage(ctx, o.arch)
	})
	if err != nil {
		return "", "", fmt.Errorf("resolving base image: %w", err)
	}
	return base, ImageBase, nil
}

func (l *Lease) applyMachine(m *provider.Machine) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m.SSHAddr != "" {
		l.SSHAddr = m.SSHAddr
	}
	if m.Type != "" {
		l.MachineType = m.Type
	}
}

// Touch records activity, pushing the idle expiry forward (never past the
// TTL).
func (l *Lease) Touch(ctx context.Context) error {
	if err := l.usable("touch"); err != nil {
		return err
	}
	_, err := l.setExpiry(ctx, "touch", 0)
	return err
}

// extendShutdownScript moves the box's scheduled TTL shutdown (MINUTES
// from now); it never touches an emulated box.
//
//go:embed lease_extend_shutdown.sh
var extendShutdownScript string

// Extend lengthens the lease's TTL by d and touches it. On providers where
// the box enforces its TTL with a scheduled shutdown, the shutdown is moved
// too.
func (l *Lease) Extend(ctx context.Context, d time.Duration) error {
	if err := l.usable("extend"); err != nil {
		return err
	}
	if d <= 0 {
		return l.c.opErr("extend", l.ID, fmt.Errorf("%w: extend by %v", ErrInvalidArgument, d))
	}
	hard, err := l.setExpiry(ctx, "extend", d)
	if err != nil {
		return err
	}
	if l.c.info.ShutdownTerminates {
		if l.c.caps.access == nil {
			left := hard.Sub(l.c.o.now())
			mins := int((left + time.Minute - 1) / time.Minute)
			if mins < 1 {
				mins = 1
			}
			cmd := "MINUTES=" + strconv.Itoa(mins) + "\n" + extendShutdownScript
			if _, err := l.Run(ctx, cmd); err != nil {
				return l.c.opErr("extend", l.ID, fmt.Errorf("rescheduling the box's TTL shutdown: %w", err))
			}
		}
	}
	return nil
}

// setExpiry adds extra to the TTL (0 for a plain touch), recomputes the
// expiry and writes both to the machine's labels. Calls are serialized so
// a touch never undoes a concurrent extend. It returns the hard end of the
// lease (created + TTL).
func (l *Lease) setExpiry(ctx context.Context, op string, extra time.Duration) (time.Time, error) {
	l.expMu.Lock()
	defer l.expMu.Unlock()
	l.mu.Lock()
	ttl, created, idle := l.TTL+extra, l.Created, l.IdleTimeout
	l.mu.Unlock()
	now := l.c.o.now().UTC().Truncate(time.Second)
	hard := created.Add(ttl)
	if !hard.After(now) {
		return hard, l.c.opErr(op, l.ID, ErrExpired)
	}
	exp := now.Add(idle)
	if exp.After(hard) {
		exp = hard
	}
	labels := map[string]string{
		LabelTTL:     strconv.Itoa(int(ttl.Seconds())),
		LabelTouched: formatLabelTime(now),
		LabelExpires: formatLabelTime(exp),
	}
	if err := retryErr(ctx, l.c, "lease", func(ctx context.Context) error {
		return l.c.drv.UpdateMachineLabels(ctx, l.MachineID, labels)
	}); err != nil {
		return hard, l.c.opErr(op, l.ID, err)
	}
	l.mu.Lock()
	l.TTL, l.Expires = ttl, exp
	l.mu.Unlock()
	return hard, nil
}

// usable rejects leases that did not come from a Client (a zero Lease, or
// one decoded from JSON), instead of panicking.
func (l *Lease) usable(op string) error {
	if l == nil || l.c == nil {
		return &OpError{Op: op, Err: fmt.Errorf("%w: lease was not obtained from a Client (Warmup, Lease, Leases)", ErrInvalidArgument)}
	}
	return nil
}

// Close closes the lease's tunnels and SSH connection without releasing
// the machine.
func (l *Lease) Close() error {
	if l == nil {
		return nil
	}
	l.tunnels.closeAll()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ssh == nil {
		return nil
	}
	err := l.ssh.Close()
	l.ssh = nil
	return err
}

// Release deletes the machine and the lease's local keys. Releasing a lease
// twice, or one whose machine is already gone, returns nil.
func (l *Lease) Release(ctx context.Context) error {
	if err := l.usable("release"); err != nil {
		return err
	}
	_ = l.Close()
	err := retryErr(ctx, l.c, "lease", func(ctx context.Context) error {
		return l.c.drv.DeleteMachine(ctx, l.MachineID)
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return l.c.opErr("release", l.ID, err)
	}
	l.mu.Lock()
	l.released = true
	l.mu.Unlock()
	l.c.removeLeaseKeys(l.ID)
	l.c.emit(Event{Kind: EventLeaseReleased, Resource: "lease", ID: l.ID, State: "released",
		Message: fmt.Sprintf("machine %s deleted", l.MachineID)})
	return nil
}
