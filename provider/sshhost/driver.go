// Driver, Host, New and its options, Info.

package sshhost

import (
	"errors"
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/provider"
)

// DefaultName is the provider name in Info unless WithName sets another.
const DefaultName = "sshhost"

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
	// WorkRoot is the directory Lease.Run runs commands in (a command fails
	// if it is missing); "" leaves them in the login user's directory.
	// Absolute when set.
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
// it, or with path "", the state lives in memory and dies with the Driver
// (so an optional flag can be passed straight through). A path of only
// blanks is invalid.
func WithStateFile(path string) Option {
	return func(o *options) error {
		if path != "" && strings.TrimSpace(path) == "" {
			return errors.New("blank state file path")
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
