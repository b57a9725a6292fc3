// Package sshbox gives fake Hetzner servers (hcloudfake) real OpenSSH boxes
// on loopback, booted from the server's user-data.
//
// Each box is an sshd (internal/testenv/sshd) logging in the user-data's user
// (created on the host if missing) with its authorized keys and host key. The
// box's "disk" is a directory owned by the login user: the user-data's boot
// files (readiness command, lease env file, ...) are written below it, its
// work root and the user's home are created, and the bootstrap marker is
// written last with the lease id. sshd exports CRABBOX_FS_ROOT=<dir>, HOME=<dir>/home/<user>
// and a PATH starting with <dir>/usr/local/bin to sessions (as the embedded
// local cloud does), so the SDK's readiness command and smoke checks, which
// resolve box paths below ${CRABBOX_FS_ROOT}, see that disk, and what a
// session writes to its home stays on the box.
// create_image copies a server's disk; a server booted from that snapshot
// starts from the copy, so what a bake wrote is there in the next lease.
//
//	boxes := sshbox.New(t)
//	fake := hcloudfake.New(boxes.Options(hcloudfake.Options{}))
//	// crabbox.WithDialer(fake.Dial)
package sshbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

// Boxes boots sshd boxes for a fake. Safe for concurrent use.
type Boxes struct {
	t   testing.TB
	dir string

	mu     sync.Mutex
	disks  map[int64]string // server id -> disk dir
	images map[int64]string // image id -> disk copy
}

// New prepares a box factory. It skips t (fails it when CI=true) if sshd
// is unavailable, and removes every disk when t ends.
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
	b := &Boxes{t: t, dir: dir, disks: map[int64]string{}, images: map[int64]string{}}
	t.Cleanup(func() { os.RemoveAll(dir) })
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

type box struct {
	srv  *sshd.Server
	once sync.Once
}

func (x *box) Addr() string { return x.srv.Addr }
func (x *box) Close() error {
	x.once.Do(x.srv.Stop)
	return nil
}

// Boot is an hcloudfake.BootFunc.
func (b *Boxes) Boot(ctx context.Context, r hcloudfake.BootRequest) (hcloudfake.Box, error) {
	cfg, err := cloudinit.Parse([]byte(r.UserData))
	if err != nil {
		return nil, fmt.Errorf("sshbox: user-data: %w", err)
	}
	uid, gid, err := ensureUser(cfg.User)
	if err != nil {
		return nil, err
	}
	disk := filepath.Join(b.dir, "server-"+strconv.FormatInt(r.ID, 10))
	b.mu.Lock()
	src := b.images[r.Image]
	b.mu.Unlock()
	if src != "" {
		if err := copyTree(src, disk); err != nil {
			return nil, fmt.Errorf("sshbox: restoring image %d: %w", r.Image, err)
		}
	} else if err := os.MkdirAll(disk, 0o755); err != nil {
		return nil, err
	}
	files, err := cloudinit.BootFiles(*cfg)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		p := filepath.Join(disk, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, f.Content, mode); err != nil {
			return nil, err
		}
		if err := os.Chmod(p, mode); err != nil {
			return nil, err
		}
	}
	work := filepath.Join(disk, cfg.WorkRoot)
	home := filepath.Join(disk, "home", cfg.User)
	for _, d := range []string{work, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// The login user owns the whole disk: it stands in for root on a real
	// box (sudo must never reach the host running the fake).
	if err := chownTree(disk, uid, gid); err != nil {
		return nil, err
	}
	marker := filepath.Join(disk, cloudinit.BootstrapMarker)
	if err := os.MkdirAll(filepath.Dir(marker), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(marker, cloudinit.BootstrapMarkerContent(cfg.LeaseID), 0o644); err != nil {
		return nil, err
	}

	signer, err := ssh.ParsePrivateKey(cfg.HostKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("sshbox: host key: %w", err)
	}
	var keys [][]byte
	for _, k := range cfg.AuthorizedKeys {
		keys = append(keys, []byte(k))
	}
	srv := sshd.New(b.t, sshd.Options{
		User:           cfg.User,
		AuthorizedKeys: keys,
		HostKey:        &sshd.Key{Signer: signer, PEM: cfg.HostKeyPEM},
		Extra: []string{"SetEnv CRABBOX_FS_ROOT=" + disk + " HOME=" + home +
			" PATH=" + filepath.Join(disk, "usr", "local", "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	})
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("sshbox: sshd: %w", err)
	}
	b.mu.Lock()
	b.disks[r.ID] = disk
	b.mu.Unlock()
	return &box{srv: srv}, nil
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
	if err := copyTree(disk, dst); err != nil {
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

var userMu sync.Mutex

// ensureUser returns the uid and gid of name, creating the account
// (home directory, bash, unlocked for key login) when it is missing.
func ensureUser(name string) (int, int, error) {
	userMu.Lock()
	defer userMu.Unlock()
	if u, err := user.Lookup(name); err == nil {
		return ids(u)
	}
	out, err := exec.Command("useradd", "-m", "-s", "/bin/bash", name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "already exists") {
		return 0, 0, fmt.Errorf("sshbox: useradd %s: %v: %s", name, err, out)
	}
	if out, err := exec.Command("usermod", "-p", "*", name).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("sshbox: usermod %s: %v: %s", name, err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	return ids(u)
}

func ids(u *user.User) (int, int, error) {
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, err
	}
	return uid, gid, nil
}

func chownTree(root string, uid, gid int) error {
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// copyTree copies a directory tree with modes and owners (cp -a).
func copyTree(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a %s %s: %v: %s", src, dst, err, out)
	}
	return nil
}
