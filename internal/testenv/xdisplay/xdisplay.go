// Package xdisplay reserves X display numbers for test hosts whose X
// server starts later (when a lease runs the desktop bootstrap).
//
// An X server locks its display (/tmp/.X<n>-lock, /tmp/.X11-unix/X<n>) only
// once it runs, so two hosts that look for a free display before either
// has started one (two packages under go test ./..., or two hosts of one
// test) would both pick the same number, and the second lease would find
// the first's server and draw on it. A reservation is an flock on
// /tmp/cbx-displays/<n>.lock, held until it is released: it excludes other
// reservations in this and every other process, and it ends with the
// process.
package xdisplay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// dir holds the reservations; fixed (not $TMPDIR), like the X server's own
// locks, so that every process on the host sees the same ones.
const dir = "/tmp/cbx-displays"

// Reservation is a reserved display number.
type Reservation struct {
	N    int
	once sync.Once
	f    *os.File
}

// Display is ":N".
func (r *Reservation) Display() string { return ":" + strconv.Itoa(r.N) }

// Release gives the number up. Release it once the display's X server
// has stopped.
func (r *Reservation) Release() {
	r.once.Do(func() { _ = r.f.Close() })
}

// Reserve reserves a display number in [lo, hi) that no X server has
// locked and no other reservation holds: first, if set, prefer (the
// conventional :99, say), then from a random start.
func Reserve(lo, hi int, prefer int) (*Reservation, error) {
	if lo < 0 || hi <= lo {
		return nil, fmt.Errorf("xdisplay: bad range [%d, %d)", lo, hi)
	}
	if err := lockDir(); err != nil {
		return nil, err
	}
	start := lo + rand.IntN(hi-lo)
	order := make([]int, 0, hi-lo+1)
	if prefer >= lo && prefer < hi {
		order = append(order, prefer)
	}
	for i := range hi - lo {
		order = append(order, lo+(start-lo+i)%(hi-lo))
	}
	for _, n := range order {
		if xLocked(n) {
			continue
		}
		// Read-only (flock needs no more), not through a link, and
		// lockable by every user.
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(n)+".lock"), os.O_RDONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o666)
		if err != nil {
			continue
		}
		_ = f.Chmod(0o666)
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		// An X server may have started on it between the look and the
		// lock.
		if xLocked(n) {
			f.Close()
			continue
		}
		return &Reservation{N: n, f: f}, nil
	}
	return nil, errors.New("xdisplay: no free X display number")
}

// lockDir makes sure dir is a real directory (not a link someone planted
// in /tmp) that every user may lock in and nobody may remove others' files
// from.
func lockDir() error {
	if err := os.Mkdir(dir, 0o777|os.ModeSticky); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("xdisplay: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("xdisplay: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || (st.Uid != 0 && int(st.Uid) != os.Geteuid()) {
		return fmt.Errorf("xdisplay: %s is not a directory of root's or this user's", dir)
	}
	if fi.Mode().Perm() != 0o777 || fi.Mode()&os.ModeSticky == 0 {
		_ = os.Chmod(dir, 0o777|os.ModeSticky) // the umask took bits off
	}
	return nil
}

// xLocked reports whether an X server has (or had, uncleaned) display n.
func xLocked(n int) bool {
	for _, p := range []string{fmt.Sprintf("/tmp/.X%d-lock", n), fmt.Sprintf("/tmp/.X11-unix/X%d", n)} {
		if _, err := os.Lstat(p); err == nil {
			return true
		}
	}
	return false
}
