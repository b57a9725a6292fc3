// The box image: a Debian bookworm rootfs built once with debootstrap and
// cached for every test package of a run.

package cloudbox

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

//go:embed rootfs.sh
var rootfsScript string

// Image facts the tests rely on.
const (
	// ExtraPackage is a package the image lacks but its offline apt
	// repository holds: a lease asking for it installs it at boot.
	ExtraPackage = "tree"
	// ShutdownLog is where the image's shutdown command records each
	// request (one line of its arguments) instead of powering off.
	ShutdownLog = "/var/lib/crabbox-testimage/shutdown.log"
	// DefaultMirror is the Debian mirror the image is built from.
	DefaultMirror = "http://deb.debian.org/debian"
	// DefaultCacheDir holds built images when CRABBOX_ROOTFS_CACHE is unset.
	DefaultCacheDir = "/var/cache/crabbox-rootfs"
	builtMarker     = ".crabbox-testimage-built"
)

// CacheDir is the directory images are cached in: $CRABBOX_ROOTFS_CACHE,
// else DefaultCacheDir.
func CacheDir() string {
	if d := os.Getenv("CRABBOX_ROOTFS_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

// Mirror is the Debian mirror: $CRABBOX_DEBIAN_MIRROR, else DefaultMirror.
func Mirror() string {
	if m := os.Getenv("CRABBOX_DEBIAN_MIRROR"); m != "" {
		return m
	}
	return DefaultMirror
}

// imageKey names an image by what it is built from.
func imageKey() string {
	h := sha256.Sum256([]byte(rootfsScript + "\x00" + ExtraPackage))
	return "bookworm-" + hex.EncodeToString(h[:6])
}

// ImagePath is where the current image lives (built or not).
func ImagePath() string { return filepath.Join(CacheDir(), imageKey(), "rootfs") }

// Built reports whether the current image is in the cache.
func Built() bool {
	_, err := os.Stat(filepath.Join(ImagePath(), builtMarker))
	return err == nil
}

// EnsureImage returns the image's root directory, building it first when
// the cache lacks it. Concurrent callers (parallel test packages) build it
// once: the build runs under a lock file in CacheDir and is renamed into
// place when complete. Building needs root, debootstrap and the Debian
// mirror (network): run it before sealing the network (scripts/test-all
// does). Errors wrap ErrUnavailable when a tool is missing.
func EnsureImage(ctx context.Context) (string, error) {
	if Built() {
		return ImagePath(), nil
	}
	if err := hostTools(); err != nil {
		return "", err
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("%w: debootstrap not installed (apt-get install -y debootstrap)", ErrUnavailable)
	}
	cache := CacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(cache, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := flock(ctx, lock); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if Built() { // another package built it while we waited
		return ImagePath(), nil
	}
	final := filepath.Dir(ImagePath())
	tmp, err := os.MkdirTemp(cache, "building-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "rootfs")
	logf, err := os.Create(filepath.Join(cache, imageKey()+".build.log"))
	if err != nil {
		return "", err
	}
	defer logf.Close()
	// In a mount namespace of its own: the build's mounts (the chroot's
	// /proc, the package cache) vanish with it, whatever happens.
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", rootfsScript, "rootfs.sh", root, Mirror(), ExtraPackage, filepath.Join(cache, "debs"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("cloudbox: building the image with debootstrap from %s failed (%v); log: %s", Mirror(), err, logf.Name())
	}
	if err := os.WriteFile(filepath.Join(root, builtMarker), []byte(imageKey()+"\n"), 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(final) // a half-built leftover
	if err := os.Rename(tmp, final); err != nil {
		return "", err
	}
	return ImagePath(), nil
}

// flock takes an exclusive lock on f, giving up when ctx ends.
func flock(ctx context.Context, f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("cloudbox: locking %s: %w", f.Name(), err)
		}
		if err := sleep(ctx, pollInterval); err != nil {
			return fmt.Errorf("cloudbox: waiting for another build of the image: %w", err)
		}
	}
}
