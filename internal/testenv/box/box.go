// Package box boots an emulated cloud box from its user-data: the box half
// of every fake cloud in the test tooling (awsbox for moto's EC2,
// hcloudfake/sshbox for the Hetzner fake).
//
// Boot does on the host what cloud-init does on a real box's first boot,
// under a directory standing for the box's file system (its root):
//
//   - parses the user-data (internal/cloudinit.Parse);
//   - holds the user-data's login user, creating it when the host lacks it
//     (internal/testenv/hostuser: one implementation, removed again by the
//     last box that used it if the tooling created it);
//   - starts from a copy of another box's root when booting from an image
//     made of that box (Options.From);
//   - writes the user-data's boot files (readiness command, lease env file,
//     ...) below the root, creates the work root and the user's home there,
//     and writes the bootstrap marker with the lease id last;
//   - hands the whole root to the login user (it stands in for root on a
//     real box: sudo must never reach the host);
//   - starts a real OpenSSH sshd on loopback (internal/testenv/sshd) with
//     the user-data's host key, login user and authorized keys. Sessions see
//     CRABBOX_FS_ROOT=<root>, HOME=<root>/home/<user> and a PATH starting
//     with <root>/usr/local/bin (sshd SetEnv), as on the embedded local
//     cloud, so the SDK's readiness command and smoke checks, which resolve
//     box paths below ${CRABBOX_FS_ROOT}, see the box's file system.
//
// Close stops sshd and everything it started, and releases the user; the
// root stays (an image may still be copied from it) and is the caller's to
// remove.
//
// # A new cloud's fake
//
// A fake for another cloud is only its API half. When the fake starts a
// server it calls
//
//	b, err := box.Boot(ctx, userData, box.Options{
//		Root: filepath.Join(dir, serverID), // the server's disk
//		From: imageRoot,                    // "" for a stock image
//	})
//
// and routes the server's address (host:22) to b.Addr(). For images it
// copies a server's disk with CopyRoot when the image is taken (or passes
// the source server's Root as From when the image is booted). Stop
// simulates the box's death; Close, when the server is deleted or the fake
// closes, frees it. Available (or sshd.Require in a test) says whether the
// host can run boxes at all: root, OpenSSH's sshd and the shadow tools.
package box

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/testenv/hostuser"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

// Options say where and how a box boots. Root is required.
type Options struct {
	// Root is the directory standing for the box's file system, created
	// if missing. It outlives the box (Close leaves it).
	Root string
	// From, if set, is the root of the box the image being booted was
	// made of: the box starts from a copy of it (its bootstrap marker is
	// dropped and written anew).
	From string
	// Addr is sshd's listen address; "" picks 127.0.0.1 and a free port.
	Addr string
	// RootOwnedMarker leaves the bootstrap marker owned by the host's root
	// (as cloud-init writes it) instead of the login user, who owns the
	// rest of the root.
	RootOwnedMarker bool
}

// Box is one booted box. Its methods are safe for concurrent use.
type Box struct {
	root string
	cfg  cloudinit.Config
	srv  *sshd.Server
	user *hostuser.User

	mu     sync.Mutex
	closed bool
}

// ErrNoRoot is returned by Boot without Options.Root.
var ErrNoRoot = errors.New("box: Options.Root is required")

// Available reports whether boxes can boot on this host (sshd.Available).
func Available() error { return sshd.Available() }

// Boot boots a box from userData (a cloud-config rendered by
// internal/cloudinit) and starts its sshd; see the package doc. On error
// nothing is left running and the user is released.
func Boot(ctx context.Context, userData []byte, o Options) (_ *Box, err error) {
	if o.Root == "" {
		return nil, ErrNoRoot
	}
	cfg, err := cloudinit.Parse(userData)
	if err != nil {
		return nil, fmt.Errorf("box: user-data: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(cfg.HostKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("box: host key: %w", err)
	}
	if err := sshd.Available(); err != nil {
		return nil, fmt.Errorf("box: %w", err)
	}
	u, err := hostuser.Ensure(cfg.User)
	if err != nil {
		return nil, fmt.Errorf("box: %w", err)
	}
	b := &Box{root: o.Root, cfg: *cfg, user: u}
	defer func() {
		if err != nil {
			err = errors.Join(err, b.Close())
		}
	}()
	if err := b.install(ctx, o); err != nil {
		return nil, fmt.Errorf("box: %w", err)
	}
	keys := make([][]byte, 0, len(cfg.AuthorizedKeys))
	for _, k := range cfg.AuthorizedKeys {
		keys = append(keys, []byte(k))
	}
	b.srv, err = sshd.Prepare(sshd.Options{
		User:           cfg.User,
		AuthorizedKeys: keys,
		HostKey:        &sshd.Key{Signer: signer, PEM: cfg.HostKeyPEM},
		Addr:           o.Addr,
		// Sessions see the box's file system root, and tools a bake
		// installed there come first on PATH, as on the local cloud. HOME
		// is the box's own home, so files a bake leaves there go into the
		// image (and the host's home stays untouched).
		Extra: []string{"SetEnv CRABBOX_FS_ROOT=" + o.Root +
			" HOME=" + filepath.Join(o.Root, "home", cfg.User) +
			" PATH=" + filepath.Join(o.Root, "usr", "local", "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	})
	if err != nil {
		return nil, fmt.Errorf("box: sshd: %w", err)
	}
	if err := b.srv.Start(); err != nil {
		return nil, fmt.Errorf("box: sshd: %w", err)
	}
	return b, nil
}

// install lays out the box's file system under its root.
func (b *Box) install(ctx context.Context, o Options) error {
	if err := os.MkdirAll(b.root, 0o755); err != nil {
		return err
	}
	if o.From != "" {
		if err := CopyRoot(ctx, o.From, b.root); err != nil {
			return fmt.Errorf("copying the image's file system: %w", err)
		}
		if err := os.Remove(b.path(cloudinit.BootstrapMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	files, err := cloudinit.BootFiles(b.cfg)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := b.writeFile(f.Path, f.Content, f.Mode); err != nil {
			return err
		}
	}
	for _, d := range []string{b.cfg.WorkRoot, "/home/" + b.cfg.User} {
		if err := os.MkdirAll(b.path(d), 0o755); err != nil {
			return err
		}
	}
	marker := cloudinit.BootstrapMarkerContent(b.cfg.LeaseID)
	if o.RootOwnedMarker {
		if err := b.chown(); err != nil {
			return err
		}
		return b.writeFile(cloudinit.BootstrapMarker, marker, 0o644)
	}
	if err := b.writeFile(cloudinit.BootstrapMarker, marker, 0o644); err != nil {
		return err
	}
	return b.chown()
}

// path maps a box path (slash-separated, absolute) below the root.
func (b *Box) path(p string) string { return filepath.Join(b.root, filepath.FromSlash(p)) }

// writeFile writes a box file with its mode (0 is 0644), making parents.
func (b *Box) writeFile(p string, content []byte, mode os.FileMode) error {
	if mode == 0 {
		mode = 0o644
	}
	full := b.path(p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(full, content, mode.Perm()); err != nil {
		return err
	}
	return os.Chmod(full, mode)
}

// chown gives the whole root to the login user.
func (b *Box) chown() error {
	return filepath.WalkDir(b.root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, b.user.UID, b.user.GID)
	})
}

// CopyRoot copies a box's file system src into dst (created if missing),
// keeping modes and owners (cp -a): an image of the box, or a box booted
// from one.
func CopyRoot(ctx context.Context, src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", src+"/.", dst+"/").CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a %s %s: %v: %s", src, dst, err, out)
	}
	return nil
}

// Addr is sshd's loopback host:port.
func (b *Box) Addr() string { return b.srv.Addr }

// Root is the box's file-system root (CRABBOX_FS_ROOT in its sessions).
func (b *Box) Root() string { return b.root }

// User is the login user from the user-data.
func (b *Box) User() string { return b.cfg.User }

// LeaseID is the lease id from the user-data (the bootstrap marker's).
func (b *Box) LeaseID() string { return b.cfg.LeaseID }

// Running reports whether the box's sshd runs (not stopped or closed).
func (b *Box) Running() bool { return b.srv != nil && b.srv.Running() }

// Log returns what the box's sshd wrote so far, for a failed test.
func (b *Box) Log() string {
	if b.srv == nil {
		return ""
	}
	return b.srv.Log()
}

// Stop simulates the box's death: sshd and everything it started are
// killed, clients see their connections drop, new ones are refused. The
// user stays held until Close.
func (b *Box) Stop() {
	if b.srv != nil {
		b.srv.Stop()
	}
}

// Close stops the box and frees its sshd's files and its user (removed if
// it was created for boxes and no other box uses it). The root stays.
// Close is idempotent.
func (b *Box) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	var err error
	if b.srv != nil {
		err = b.srv.Close()
	}
	return errors.Join(err, b.user.Release())
}
