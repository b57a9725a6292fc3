// Cloud, New, Start and their options, Close, Info.

package crabboxtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

// Provider facts of the local cloud.
const (
	// Name is the provider name recorded on resources.
	Name = "local"
	// DefaultRegion is the region Info reports unless WithRegion is given.
	DefaultRegion = "local-1"
	// BaseImageID is the base image every machine boots unless told
	// otherwise. It exists in ListImages without crabbox ownership labels
	// and cannot be changed or deleted (ErrPermission).
	BaseImageID = "local-base"
	// MaxSessions is the number of concurrent sessions one SSH connection
	// allows, like OpenSSH's default MaxSessions.
	MaxSessions = 10
)

type options struct {
	dir          string
	region       string
	pendingPolls int
	bootDelay    time.Duration
}

// Option configures a Cloud.
type Option func(*options) error

// WithDir keeps the cloud's machines and images under dir (created if
// needed, left in place by Close). The default is a new temporary
// directory that Close removes.
func WithDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: empty dir")
		}
		o.dir = dir
		return nil
	}
}

// WithRegion sets the region Info reports (default DefaultRegion).
func WithRegion(region string) Option {
	return func(o *options) error {
		if region == "" {
			return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: empty region")
		}
		o.region = region
		return nil
	}
}

// WithImagePendingPolls makes GetImage report a new image pending n times
// before it is available (or failed). The default is 1.
func WithImagePendingPolls(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: negative pending polls %d", n)
		}
		o.pendingPolls = n
		return nil
	}
}

// WithBootDelay makes each machine start its SSH listener d after
// CreateMachine; until then the machine is pending and its address refuses
// connections. The default is 0: SSH answers when CreateMachine returns.
func WithBootDelay(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: negative boot delay %v", d)
		}
		o.bootDelay = d
		return nil
	}
}

// Cloud is the embedded local cloud. It is safe for concurrent use.
type Cloud struct {
	o       options
	ownsDir bool

	mu       sync.Mutex
	closed   bool
	machines map[string]*machine
	images   map[string]*image
	channels map[string][]provider.ChannelEntry
	noCap    map[string]bool
	failNext []string
	faults   map[string]fault // by call, see InjectFault
}

var (
	_ provider.Driver     = (*Cloud)(nil)
	_ provider.Images     = (*Cloud)(nil)
	_ provider.Channels   = (*Cloud)(nil)
	_ provider.Protector  = (*Cloud)(nil)
	_ provider.Deprecator = (*Cloud)(nil)
)

// New starts a local cloud.
func New(opts ...Option) (*Cloud, error) {
	o := options{region: DefaultRegion, pendingPolls: 1}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	c := &Cloud{
		machines: map[string]*machine{},
		images:   map[string]*image{},
		channels: map[string][]provider.ChannelEntry{},
		noCap:    map[string]bool{},
	}
	if o.dir == "" {
		dir, err := os.MkdirTemp("", "crabboxtest-")
		if err != nil {
			return nil, provider.Wrap(provider.ErrUnavailable, err)
		}
		o.dir = dir
		c.ownsDir = true
	} else {
		abs, err := filepath.Abs(o.dir)
		if err != nil {
			return nil, provider.Wrap(provider.ErrInvalidArgument, err)
		}
		o.dir = abs
	}
	c.o = o
	for _, sub := range []string{"machines", "images", filepath.Join("images", BaseImageID, "root")} {
		if err := os.MkdirAll(filepath.Join(o.dir, sub), 0o755); err != nil {
			c.cleanupDir()
			return nil, provider.Wrap(provider.ErrUnavailable, err)
		}
	}
	c.images[BaseImageID] = &image{
		img: provider.Image{
			ID:          BaseImageID,
			Name:        "local-base",
			Description: "empty base file system of the local cloud (commands run with the host's tools)",
			State:       provider.ImageAvailable,
			Arch:        provider.DefaultArch,
			Labels:      map[string]string{"os": "host"},
			Created:     time.Now().UTC(),
		},
		root: filepath.Join(o.dir, "images", BaseImageID, "root"),
		base: true,
	}
	return c, nil
}

// Start is New for tests: it fails t on error and closes the cloud in
// t.Cleanup.
func Start(t testing.TB, opts ...Option) *Cloud {
	t.Helper()
	c, err := New(opts...)
	if err != nil {
		t.Fatalf("crabboxtest: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("crabboxtest: close: %v", err)
		}
	})
	return c
}

// Dir returns the directory holding the cloud's machines and images.
func (c *Cloud) Dir() string { return c.o.dir }

// Close stops every machine (listeners, connections, processes), waits for
// everything the cloud started, and removes the cloud's directory when New
// created it. Later calls return nil; other methods fail after Close.
func (c *Cloud) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	ms := make([]*machine, 0, len(c.machines))
	for _, m := range c.machines {
		ms = append(ms, m)
	}
	c.mu.Unlock()
	for _, m := range ms {
		m.stop()
	}
	return c.cleanupDir()
}

func (c *Cloud) cleanupDir() error {
	if !c.ownsDir {
		return nil
	}
	if err := os.RemoveAll(c.o.dir); err != nil {
		return fmt.Errorf("crabboxtest: removing %s: %w", c.o.dir, err)
	}
	return nil
}

// errClosed is returned by calls on a closed cloud.
func errClosed() error {
	return provider.Errorf(provider.ErrInvalidArgument, "crabboxtest: cloud is closed")
}

// begin checks ctx and that the cloud is open; it returns with c.mu held
// on success.
func (c *Cloud) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errClosed()
	}
	return nil
}

// Info reports Name and the region.
func (c *Cloud) Info() provider.Info { return provider.Info{Name: Name, Region: c.o.region} }

func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
