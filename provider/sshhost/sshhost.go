// Package sshhost is a crabbox driver that leases existing SSH hosts.
//
// A "machine" is one host of a fixed pool allocated to a lease: CreateMachine
// picks a free host (ErrCapacity when none is free), DeleteMachine frees it.
// Nothing is booted, so user-data is ignored and there are no images or
// channels; the driver implements provider.AccessProvider instead, telling
// the SDK which user, key and host key to use for each host.
//
// The allocation state lives in memory by default. With WithStateFile it
// lives in a JSON file (written atomically, mode 0600, guarded by a lock file
// taken with flock), so that several processes share one pool and a process
// can re-attach to the leases another one created.
package sshhost

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/provider"
)

// DefaultName is the provider name in Info unless WithName sets another.
const DefaultName = "sshhost"

// MachineType is the only machine type: a whole host.
const MachineType = "host"

// BaseImageID is what BaseImage returns: hosts run whatever they run.
const BaseImageID = "existing"

// idPrefix starts every machine (allocation) id.
const idPrefix = "sshhost-"

// Host is one existing SSH host of the pool.
type Host struct {
	// Addr is host:port of its sshd; a missing port means 22.
	Addr string
	// User to log in as.
	User string
	// Signer is the client key the host accepts for User.
	Signer ssh.Signer
	// HostKey is the host's public host key; connections pin it. Required.
	HostKey ssh.PublicKey
	// WorkRoot is the directory commands run in; "" means the SDK default
	// (/work/crabbox). Absolute when set.
	WorkRoot string
}

// Option configures a Driver. An option that is given an invalid value
// makes New fail with an error wrapping provider.ErrInvalidArgument.
type Option func(*options) error

type options struct {
	name      string
	stateFile string
}

// WithStateFile keeps the allocation state in the JSON file at path (created
// with mode 0600 when missing, its directory with 0700), guarded by the lock
// file path+".lock". Processes using the same file share the pool. Without
// it the state lives in memory and dies with the Driver.
// An empty or blank path is invalid.
func WithStateFile(path string) Option {
	return func(o *options) error {
		if strings.TrimSpace(path) == "" {
			return errors.New("empty state file path")
		}
		o.stateFile = path
		return nil
	}
}

// WithName sets the provider name reported by Info (default "sshhost"),
// e.g. to tell two pools apart. An empty or blank name is invalid.
func WithName(name string) Option {
	return func(o *options) error {
		if strings.TrimSpace(name) == "" {
			return errors.New("empty provider name")
		}
		o.name = name
		return nil
	}
}

// Driver leases the hosts of a fixed pool. It is safe for concurrent use.
type Driver struct {
	name   string
	hosts  []Host         // validated, Addr normalized
	byAddr map[string]int // index into hosts
	store  store
}

var (
	_ provider.Driver         = (*Driver)(nil)
	_ provider.AccessProvider = (*Driver)(nil)
)

// New returns a driver for the given pool. Every host needs an address, a
// user, a signer and a host key; hosts must have distinct addresses. Invalid
// input returns an error wrapping provider.ErrInvalidArgument.
func New(hosts []Host, opts ...Option) (*Driver, error) {
	o := options{name: DefaultName}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, provider.Wrap(provider.ErrInvalidArgument, fmt.Errorf("sshhost: %w", err))
		}
	}
	if len(hosts) == 0 {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: no hosts")
	}
	d := &Driver{name: o.name, byAddr: map[string]int{}}
	for i, h := range hosts {
		addr, err := normalizeAddr(h.Addr)
		if err != nil {
			return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: host %d: %v", i, err)
		}
		h.Addr = addr
		switch {
		case h.User == "":
			return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: host %d (%s): no user", i, addr)
		case h.Signer == nil:
			return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: host %d (%s): no signer (client key)", i, addr)
		case h.HostKey == nil:
			return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: host %d (%s): no host key to pin", i, addr)
		case h.WorkRoot != "" && !path.IsAbs(h.WorkRoot):
			return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: host %d (%s): work root %q is not absolute", i, addr, h.WorkRoot)
		}
		if j, dup := d.byAddr[addr]; dup {
			return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: hosts %d and %d have the same address %s", j, i, addr)
		}
		d.byAddr[addr] = i
		d.hosts = append(d.hosts, h)
	}
	if o.stateFile != "" {
		d.store = &fileStore{path: o.stateFile}
	} else {
		d.store = &memStore{}
	}
	return d, nil
}

// normalizeAddr returns host:port, with port 22 when addr has none.
func normalizeAddr(addr string) (string, error) {
	if strings.TrimSpace(addr) == "" {
		return "", errors.New("empty address")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = strings.Trim(addr, "[]"), "22"
	}
	if host == "" || strings.ContainsAny(host, " \t\r\n/") {
		return "", fmt.Errorf("address %q: bad host", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("address %q: bad port", addr)
	}
	return net.JoinHostPort(host, port), nil
}

// Info reports the provider name (no region).
func (d *Driver) Info() provider.Info { return provider.Info{Name: d.name} }

// MachineTypes returns ["host"] for every class and for amd64 and arm64; the
// pool decides what a host is. An unknown class or architecture wraps
// provider.ErrInvalidArgument.
func (d *Driver) MachineTypes(class, arch string) ([]string, error) {
	if !provider.ValidClass(class) {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: unknown class %q", class)
	}
	if !provider.ValidArch(arch) {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: unknown architecture %q", arch)
	}
	return []string{MachineType}, nil
}

// BaseImage returns "existing": hosts run whatever is installed on them.
func (d *Driver) BaseImage(ctx context.Context, arch string) (string, error) {
	return BaseImageID, nil
}

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return idPrefix + hex.EncodeToString(b)
}

func (d *Driver) machine(a *allocation) *provider.Machine {
	return &provider.Machine{
		ID:      a.ID,
		Name:    a.Name,
		Type:    MachineType,
		Image:   BaseImageID,
		State:   provider.MachineRunning,
		Labels:  maps.Clone(a.Labels),
		Created: a.Created,
		SSHAddr: a.Host,
	}
}

// CreateMachine allocates the first free host of the pool to the request.
// The request's type must be "" or "host" and its image "" or "existing";
// user-data and the authorized key are ignored (see MachineAccess). A retry
// with the same Token returns the host allocated the first time. When every
// host is allocated it returns an error wrapping provider.ErrCapacity.
func (d *Driver) CreateMachine(ctx context.Context, req provider.CreateMachineRequest) (*provider.Machine, error) {
	if req.Type != "" && req.Type != MachineType {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: machine type %q: the only type is %q", req.Type, MachineType)
	}
	if req.Image != "" && req.Image != BaseImageID {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: image %q: existing hosts cannot boot images", req.Image)
	}
	var out *provider.Machine
	err := d.store.update(ctx, func(st *state) error {
		if req.Token != "" {
			for i := range st.Allocations {
				if a := &st.Allocations[i]; a.Token == req.Token {
					out = d.machine(a)
					return errNoChange
				}
			}
		}
		used := map[string]bool{}
		for _, a := range st.Allocations {
			used[a.Host] = true
		}
		for _, h := range d.hosts {
			if used[h.Addr] {
				continue
			}
			a := allocation{
				ID:      newID(),
				Host:    h.Addr,
				Token:   req.Token,
				Name:    req.Name,
				Labels:  maps.Clone(req.Labels),
				Created: time.Now().UTC().Truncate(time.Second),
			}
			st.Allocations = append(st.Allocations, a)
			out = d.machine(&a)
			return nil
		}
		return provider.Errorf(provider.ErrCapacity, "sshhost: all %d hosts are leased", len(d.hosts))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetMachine returns the allocation id; an unknown or freed id wraps
// provider.ErrNotFound.
func (d *Driver) GetMachine(ctx context.Context, id string) (*provider.Machine, error) {
	var out *provider.Machine
	err := d.store.view(ctx, func(st *state) error {
		a := st.find(id)
		if a == nil {
			return provider.Errorf(provider.ErrNotFound, "sshhost: machine %q", id)
		}
		out = d.machine(a)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListMachines returns the allocated hosts having all the given labels.
func (d *Driver) ListMachines(ctx context.Context, labels map[string]string) ([]*provider.Machine, error) {
	var out []*provider.Machine
	err := d.store.view(ctx, func(st *state) error {
		for i := range st.Allocations {
			a := &st.Allocations[i]
			if hasLabels(a.Labels, labels) {
				out = append(out, d.machine(a))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if g, ok := have[k]; !ok || g != v {
			return false
		}
	}
	return true
}

// DeleteMachine frees the host allocated as id. Freeing an unknown or
// already freed id returns nil. Nothing on the host is touched.
func (d *Driver) DeleteMachine(ctx context.Context, id string) error {
	return d.store.update(ctx, func(st *state) error {
		for i, a := range st.Allocations {
			if a.ID == id {
				st.Allocations = append(st.Allocations[:i], st.Allocations[i+1:]...)
				return nil
			}
		}
		return errNoChange
	})
}

// UpdateMachineLabels merges labels into the allocation's labels; an empty
// value removes the label. An unknown id wraps provider.ErrNotFound.
func (d *Driver) UpdateMachineLabels(ctx context.Context, id string, labels map[string]string) error {
	return d.store.update(ctx, func(st *state) error {
		a := st.find(id)
		if a == nil {
			return provider.Errorf(provider.ErrNotFound, "sshhost: machine %q", id)
		}
		if a.Labels == nil {
			a.Labels = map[string]string{}
		}
		for k, v := range labels {
			if v == "" {
				delete(a.Labels, k)
				continue
			}
			a.Labels[k] = v
		}
		return nil
	})
}

// MachineAccess returns the user, client key, pinned host key and work root
// of the host allocated as m.ID. An unknown or freed id wraps
// provider.ErrNotFound; an allocation (made by another process) of a host
// this Driver was not configured with wraps provider.ErrInvalidArgument.
func (d *Driver) MachineAccess(ctx context.Context, m *provider.Machine) (*provider.Access, error) {
	if m == nil {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: nil machine")
	}
	cur, err := d.GetMachine(ctx, m.ID)
	if err != nil {
		return nil, err
	}
	i, ok := d.byAddr[cur.SSHAddr]
	if !ok {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: machine %s is host %s, which is not in this driver's pool", m.ID, cur.SSHAddr)
	}
	h := d.hosts[i]
	return &provider.Access{User: h.User, Signer: h.Signer, HostKey: h.HostKey, WorkRoot: h.WorkRoot}, nil
}
