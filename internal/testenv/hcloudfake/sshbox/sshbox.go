// Package sshbox gives fake Hetzner servers (hcloudfake) real OpenSSH boxes
// on loopback, booted from the server's user-data by internal/testenv/box:
// this package is only the glue between the fake's Boot, Snapshot and
// ImageDeleted hooks and the shared box.
//
// Each server's box has a "disk" (the box's root, CRABBOX_FS_ROOT in its
// sessions) below one directory per Boxes; see internal/testenv/box for
// what booting writes there and what sessions see. The bootstrap marker
// stays owned by root, as cloud-init writes it. create_image copies a
// server's disk; a server booted from that snapshot starts from the copy,
// so what a bake wrote is there in the next lease.
//
//	boxes := sshbox.New(t)
//	fake := hcloudfake.New(boxes.Options(hcloudfake.Options{}))
//	// crabbox.WithDialer(fake.Dial)
//
// NewWith(t, Options{RealCloudInit: true}) boots the servers with the real
// cloud-init instead (internal/testenv/cloudbox): each server is a Debian
// image in namespaces of its own that reads the user-data from its NoCloud
// seed; create_image snapshots what the server changed on the image, and a
// server booted from that snapshot starts from it (and runs cloud-init's
// first boot again, under its own instance id).
package sshbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/crabbox/crabbox-go/internal/testenv/box"
	"github.com/crabbox/crabbox-go/internal/testenv/cloudbox"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

// Options choose how servers boot. The zero value boots them in process.
type Options struct {
	// RealCloudInit boots every server with the real cloud-init.
	RealCloudInit bool
}

// Boxes boots sshd boxes for a fake. Safe for concurrent use.
type Boxes struct {
	dir   string
	image string // cloudbox image when booting with the real cloud-init

	mu     sync.Mutex
	disks  map[int64]string        // server id -> disk dir
	images map[int64]string        // image id -> disk copy
	real   map[int64]*cloudbox.Box // server id -> real box
	layers map[int64][]string      // image id -> real box snapshot layers
	booted []machine               // closed when t ends, if the fake did not
}

// machine is a booted box: in process (box.Box) or real (cloudbox.Box).
type machine interface {
	Addr() string
	Log() string
	Close() error
}

// New prepares a box factory. It skips t (fails it when CI=true) if sshd
// is unavailable, and stops every box and removes every disk when t ends
// (logging the boxes' sshd output if t failed).
func New(t testing.TB) *Boxes {
	t.Helper()
	return NewWith(t, Options{})
}

// NewWith is New with options. With RealCloudInit a host that cannot run
// real cloud-init boxes skips t (fails it when CI=true).
func NewWith(t testing.TB, o Options) *Boxes {
	t.Helper()
	var image string
	if o.RealCloudInit {
		image = cloudbox.Require(t)
	} else {
		sshd.Require(t)
	}
	dir, err := os.MkdirTemp("", "cbx-hcloud-boxes-")
	if err != nil {
		t.Fatalf("sshbox: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("sshbox: %v", err)
	}
	b := &Boxes{dir: dir, image: image, disks: map[int64]string{}, images: map[int64]string{},
		real: map[int64]*cloudbox.Box{}, layers: map[int64][]string{}}
	t.Cleanup(func() {
		b.mu.Lock()
		booted := b.booted
		b.mu.Unlock()
		for _, x := range booted {
			if t.Failed() {
				t.Logf("sshbox: box %s log:\n%s", x.Addr(), x.Log())
			}
			if err := x.Close(); err != nil {
				t.Logf("sshbox: %v", err)
			}
		}
		os.RemoveAll(dir)
	})
	return b
}

// Options returns o with the fake's Boot, Snapshot and ImageDeleted hooks
// pointing at b.
func (b *Boxes) Options(o hcloudfake.Options) hcloudfake.Options {
	o.Boot = b.Boot
	o.Snapshot = b.Snapshot
	o.ImageDeleted = b.ImageDeleted
	return o
}

// Boot is an hcloudfake.BootFunc: it boots the server's box on its own
// disk, from the image's disk copy if the image is a snapshot of a box.
func (b *Boxes) Boot(ctx context.Context, r hcloudfake.BootRequest) (hcloudfake.Box, error) {
	disk := filepath.Join(b.dir, "server-"+strconv.FormatInt(r.ID, 10))
	if b.image != "" {
		return b.bootReal(ctx, r, disk)
	}
	b.mu.Lock()
	src := b.images[r.Image]
	b.mu.Unlock()
	x, err := box.Boot(ctx, []byte(r.UserData), box.Options{Root: disk, From: src, RootOwnedMarker: true})
	if err != nil {
		return nil, fmt.Errorf("sshbox: %w", err)
	}
	b.mu.Lock()
	b.disks[r.ID] = disk
	b.booted = append(b.booted, x)
	b.mu.Unlock()
	return x, nil
}

// bootReal boots the server with the real cloud-init, from the image's
// snapshot layers if the image is a snapshot of a real box.
func (b *Boxes) bootReal(ctx context.Context, r hcloudfake.BootRequest, disk string) (hcloudfake.Box, error) {
	b.mu.Lock()
	layers := b.layers[r.Image]
	b.mu.Unlock()
	x, err := cloudbox.Boot(ctx, []byte(r.UserData), cloudbox.Options{Image: b.image, Layers: layers, Dir: disk,
		InstanceID: "hcloud-" + strconv.FormatInt(r.ID, 10), Hostname: r.Name})
	if err != nil {
		return nil, fmt.Errorf("sshbox: %w", err)
	}
	b.mu.Lock()
	b.real[r.ID] = x
	b.booted = append(b.booted, x)
	b.mu.Unlock()
	return x, nil
}

// Snapshot copies a server's disk as an image (hcloudfake Options.Snapshot).
func (b *Boxes) Snapshot(ctx context.Context, serverID, imageID int64) error {
	b.mu.Lock()
	disk, rb := b.disks[serverID], b.real[serverID]
	b.mu.Unlock()
	if rb != nil {
		layers, err := rb.Snapshot(ctx, filepath.Join(b.dir, "image-"+strconv.FormatInt(imageID, 10)))
		if err != nil {
			return err
		}
		b.mu.Lock()
		b.layers[imageID] = layers
		b.mu.Unlock()
		return nil
	}
	if disk == "" {
		return nil // a server without a box (booted before the hook): empty image
	}
	dst := filepath.Join(b.dir, "image-"+strconv.FormatInt(imageID, 10))
	if err := box.CopyRoot(ctx, disk, dst); err != nil {
		return err
	}
	b.mu.Lock()
	b.images[imageID] = dst
	b.mu.Unlock()
	return nil
}

// ImageDeleted drops an image's disk copy (hcloudfake Options.ImageDeleted).
func (b *Boxes) ImageDeleted(imageID int64) {
	b.mu.Lock()
	dst := b.images[imageID]
	delete(b.images, imageID)
	// A real box's snapshot layer stays until the boxes are closed:
	// servers booted from the image still have it mounted.
	delete(b.layers, imageID)
	b.mu.Unlock()
	if dst != "" {
		os.RemoveAll(dst)
	}
}
