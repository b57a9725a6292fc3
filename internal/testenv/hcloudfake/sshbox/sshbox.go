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
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

// Boxes boots sshd boxes for a fake. Safe for concurrent use.
type Boxes struct {
	dir string

	mu     sync.Mutex
	disks  map[int64]string // server id -> disk dir
	images map[int64]string // image id -> disk copy
	booted []*box.Box       // closed when t ends, if the fake did not
}

// New prepares a box factory. It skips t (fails it when CI=true) if sshd
// is unavailable, and stops every box and removes every disk when t ends
// (logging the boxes' sshd output if t failed).
func New(t testing.TB) *Boxes {
	t.Helper()
	sshd.Require(t)
	dir, err := os.MkdirTemp("", "cbx-hcloud-boxes-")
	if err != nil {
		t.Fatalf("sshbox: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("sshbox: %v", err)
	}
	b := &Boxes{dir: dir, disks: map[int64]string{}, images: map[int64]string{}}
	t.Cleanup(func() {
		b.mu.Lock()
		booted := b.booted
		b.mu.Unlock()
		for _, x := range booted {
			if t.Failed() {
				t.Logf("sshbox: sshd %s log:\n%s", x.Addr(), x.Log())
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

// Snapshot copies a server's disk as an image (hcloudfake Options.Snapshot).
func (b *Boxes) Snapshot(ctx context.Context, serverID, imageID int64) error {
	b.mu.Lock()
	disk := b.disks[serverID]
	b.mu.Unlock()
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
	b.mu.Unlock()
	if dst != "" {
		os.RemoveAll(dst)
	}
}
