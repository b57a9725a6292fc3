// Package hetznertest runs Hetzner Cloud on this machine, for tests of bake
// programs that use provider/hetzner: a stateful fake of the Hetzner Cloud
// API, built on hcloud-go's own wire types, answers on 127.0.0.1, and each
// server it creates is a real OpenSSH sshd on loopback booted from the
// server's user-data (user, keys, files), which Cloud.Dial reaches in place
// of the public-looking address the fake hands out. create_image copies the
// server's disk, so what a bake installed is there on a server booted from
// the snapshot; commands run on this host as the box's user, below
// CRABBOX_FS_ROOT.
//
// It needs root (each box logs in as a Unix user it creates), OpenSSH's
// sshd at /usr/sbin/sshd and useradd/usermod/userdel; Start returns an
// error wrapping ErrMissing that names what is missing. Nothing here dials
// beyond 127.0.0.0/8.
//
//	cloud, err := hetznertest.Start(ctx)
//	defer cloud.Close()
//	drv, err := hetzner.New(cloud.Client(), hetzner.WithLocation("fsn1"),
//		hetzner.WithPollSchedule(func(time.Duration) time.Duration { return 20 * time.Millisecond }))
//	c, err := crabbox.New(drv, cloud.ClientOptions()...)
package hetznertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake/sshbox"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

// ErrMissing is wrapped by Start's error when a component it needs is not
// installed or the process is not root.
var ErrMissing = errors.New("hetznertest: missing component")

// Counts summarise the fake's state.
type Counts struct {
	// Servers, SSHKeys (crabbox keeps channel records in them) and Images
	// (snapshots, not system images) that exist.
	Servers, SSHKeys, Images int
}

// Cloud is a running fake Hetzner Cloud. Its methods are safe for
// concurrent use.
type Cloud struct {
	fake  *hcloudfake.Fake
	boxes *owner
}

// Start starts the fake API and its box factory. Close the Cloud when done.
func Start(ctx context.Context) (*Cloud, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := sshd.Available(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMissing, err)
	}
	o := &owner{}
	var boxes *sshbox.Boxes
	// The box factory reports through a testing.TB; run it on a goroutine
	// of its own so that a fatal report ends only that goroutine, as in a
	// test, and comes back here as an error.
	done := make(chan struct{})
	go func() {
		defer close(done)
		boxes = sshbox.New(o)
	}()
	<-done
	if err := o.err(); err != nil || boxes == nil {
		o.cleanup()
		if err == nil {
			err = errors.New("hetznertest: box factory did not start")
		}
		return nil, err
	}
	return &Cloud{fake: hcloudfake.New(boxes.Options(hcloudfake.Options{})), boxes: o}, nil
}

// URL is the fake API's endpoint, http://127.0.0.1:PORT.
func (c *Cloud) URL() string { return c.fake.URL() }

// Client returns an hcloud client for the fake (its endpoint, a token,
// short poll and retry backoffs), with opts after those.
func (c *Cloud) Client(opts ...hcloud.ClientOption) *hcloud.Client {
	base := []hcloud.ClientOption{
		hcloud.WithEndpoint(c.fake.URL()),
		hcloud.WithToken("fake"),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(20 * time.Millisecond)}),
		hcloud.WithRetryOpts(hcloud.RetryOpts{BackoffFunc: hcloud.ConstantBackoff(20 * time.Millisecond), MaxRetries: 3}),
	}
	return hcloud.NewClient(append(base, opts...)...)
}

// Dial reaches a server's box by the address the fake handed out (use it
// as crabbox.WithDialer).
func (c *Cloud) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.fake.Dial(ctx, network, addr)
}

// ClientOptions are the crabbox.Options a client of the fake needs: the
// dialer, and polls suited to a cloud that answers in milliseconds.
func (c *Cloud) ClientOptions() []crabbox.Option {
	return []crabbox.Option{
		crabbox.WithDialer(c.Dial),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(20 * time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(20 * time.Millisecond)),
	}
}

// Counts returns how many servers, SSH keys and snapshots exist.
func (c *Cloud) Counts() Counts {
	st := c.fake.State()
	return Counts{Servers: st.Servers, SSHKeys: st.SSHKeys, Images: st.Images}
}

// Close stops the API and every box, removing their users and disks.
func (c *Cloud) Close() error {
	c.fake.Close()
	c.boxes.cleanup()
	return nil
}

// owner is the testing.TB the box factory reports to and registers its
// cleanups with: cleanups run at Close, a fatal report records the error
// and ends the calling goroutine (as testing does).
type owner struct {
	testing.TB // nil: only the methods below are called

	mu       sync.Mutex
	cleanups []func()
	failure  error
}

func (o *owner) Helper() {}

func (o *owner) Cleanup(f func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cleanups = append(o.cleanups, f)
}

func (o *owner) Failed() bool { return o.err() != nil }

// Logf drops the factory's logs: it logs box output only for a failed
// test, and a library does not log.
func (o *owner) Logf(string, ...any) {}

func (o *owner) Errorf(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failure == nil {
		o.failure = fmt.Errorf("hetznertest: "+format, args...)
	}
}

func (o *owner) Fatalf(format string, args ...any) {
	o.Errorf(format, args...)
	runtime.Goexit()
}

func (o *owner) Skipf(format string, args ...any) {
	o.mu.Lock()
	if o.failure == nil {
		o.failure = fmt.Errorf("%w: "+format, append([]any{ErrMissing}, args...)...)
	}
	o.mu.Unlock()
	runtime.Goexit()
}

func (o *owner) err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.failure
}

func (o *owner) cleanup() {
	o.mu.Lock()
	fs := o.cleanups
	o.cleanups = nil
	o.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
