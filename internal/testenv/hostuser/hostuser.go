// Package hostuser creates and removes the Unix login users that the test
// boxes (internal/testenv/sshd, internal/testenv/box) and the local desktop
// host (crabboxtest/desktoptest) log in as: the one implementation of useradd,
// unlocking for key login and userdel.
//
// A user is held while in use and released when done. The last holder on
// the host (across test processes: go test runs packages in parallel)
// removes a user that this package created, with its home directory and
// every process still running as it; a user that existed before (a host
// account, or one made by an older run) is never removed.
//
// Holders coordinate through flock(2) on a per-user lock file in
// os.TempDir()/cbx-users: each holder keeps a shared lock, a releaser that
// gets the exclusive lock is the last one. A file next to it records that
// the user was created here; both go with the user. A shared user (Ensure)
// is found or created under the exclusive lock of a third file, NAME.create,
// which stays: a process never finds the account while another is still
// between useradd and usermod. Within a process, one mutex serialises the
// account tools, which take the host's passwd lock.
//
// Everything here needs root and the shadow tools (useradd, usermod,
// userdel).
package hostuser

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// User is a held login user.
type User struct {
	// Name is the login name.
	Name string
	// UID and GID are the user's ids.
	UID, GID int

	mu   sync.Mutex
	lock *os.File // shared flock; nil once released
}

// ErrInvalidName is returned for a name the account tools would refuse or
// that could escape the lock directory.
var ErrInvalidName = errors.New("hostuser: invalid user name")

// accountMu serialises the account tools within the process.
var accountMu sync.Mutex

// tries and pause bound the retries while another process holds the host's
// passwd lock.
const (
	tries = 100
	pause = 50 * time.Millisecond
)

// Fresh creates and holds a new user named prefix followed by eight random
// digits (home directory, /bin/bash, unlocked for key login).
func Fresh(prefix string) (*User, error) {
	var lastErr error
	for range tries {
		n, err := rand.Int(rand.Reader, big.NewInt(1e8))
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%s%08d", prefix, n.Int64())
		if err := checkName(name); err != nil {
			return nil, err
		}
		u, err := hold(name, false)
		if err == nil {
			return u, nil
		}
		lastErr = err
		time.Sleep(pause)
	}
	return nil, lastErr
}

// Ensure holds the user name, creating it (as Fresh does) when the host
// lacks it.
func Ensure(name string) (*User, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	return hold(name, true)
}

// Release gives the user up. If this was the last holder on the host and
// the user was created by this package, every process running as the user
// is killed and the user is removed with its home directory. Release is
// idempotent.
func (u *User) Release() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.lock == nil {
		return nil
	}
	accountMu.Lock()
	defer accountMu.Unlock()
	u.lock.Close() // drops the shared lock
	u.lock = nil
	f, err := openLock(u.Name)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil // still held elsewhere
	}
	created := createdPath(u.Name)
	if _, err := os.Stat(created); err != nil {
		return nil // not ours to remove
	}
	if err := remove(u.Name, u.UID); err != nil {
		return err
	}
	// Unlinked under the exclusive lock: a holder waiting on this file
	// sees it is gone and opens the next one (lockShared).
	return errors.Join(os.Remove(created), os.Remove(lockPath(u.Name)))
}

// lockShared opens the user's lock file and takes its shared lock, waiting
// while a last holder elsewhere removes the user.
func lockShared(name string) (*os.File, error) {
	for {
		f, err := openLock(name)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
			f.Close()
			return nil, fmt.Errorf("hostuser: lock %s: %w", name, err)
		}
		held, err1 := f.Stat()
		now, err2 := os.Stat(lockPath(name))
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			return f, nil
		}
		f.Close() // removed with its user meanwhile: take the new one
	}
}

// hold takes the user's shared lock, then finds or creates the user.
func hold(name string, existingOK bool) (*User, error) {
	f, err := lockShared(name)
	if err != nil {
		return nil, err
	}
	accountMu.Lock()
	defer accountMu.Unlock()
	if existingOK {
		// One process at a time finds or creates a shared account: a
		// process that found it while another was between useradd and
		// usermod would hand out an account sshd still refuses. (A
		// fresh name is nobody else's.)
		cl, err := lockCreate(name)
		if err != nil {
			f.Close()
			return nil, err
		}
		defer cl.Close()
		if uid, gid, err := lookup(name); err == nil {
			return &User{Name: name, UID: uid, GID: gid, lock: f}, nil
		}
	}
	if err := create(name, existingOK); err != nil {
		f.Close()
		return nil, err
	}
	uid, gid, err := lookup(name)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &User{Name: name, UID: uid, GID: gid, lock: f}, nil
}

// create runs useradd and unlocks the account, and records that the user
// is ours. Called with accountMu and the user's shared lock held.
func create(name string, existingOK bool) error {
	var out []byte
	var err error
	for i := 0; ; i++ {
		out, err = exec.Command("useradd", "-m", "-s", "/bin/bash", name).CombinedOutput()
		if err == nil {
			break
		}
		if strings.Contains(string(out), "already exists") {
			if existingOK {
				// Another process created it under its shared lock; it
				// records that (or it is a host account).
				return nil
			}
			return fmt.Errorf("hostuser: useradd %s: %v: %s", name, err, out)
		}
		if !existingOK || i == tries {
			// A fresh name is retried by the caller under another name.
			return fmt.Errorf("hostuser: useradd %s: %v: %s", name, err, out)
		}
		time.Sleep(pause) // the host's passwd lock is busy
	}
	if err := os.WriteFile(createdPath(name), nil, 0o644); err != nil {
		_ = exec.Command("userdel", "-r", name).Run()
		return fmt.Errorf("hostuser: %w", err)
	}
	if afterUseradd != nil {
		afterUseradd()
	}
	// useradd leaves the account locked ("!"), which sshd refuses without
	// PAM; "*" allows key login only.
	for i := 0; ; i++ {
		out, err = exec.Command("usermod", "-p", "*", name).CombinedOutput()
		if err == nil {
			return nil
		}
		if i == tries {
			_ = exec.Command("userdel", "-r", name).Run()
			_ = os.Remove(createdPath(name))
			return fmt.Errorf("hostuser: usermod %s: %v: %s", name, err, out)
		}
		time.Sleep(pause)
	}
}

// remove kills the user's processes and deletes the user.
func remove(name string, uid int) error {
	var out []byte
	var err error
	for range tries {
		// Kill leftovers (e.g. commands orphaned by a client's signal).
		for _, pid := range Processes(uid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		RemoveSharedMemory(uid)
		out, err = exec.Command("userdel", "-r", name).CombinedOutput()
		if err == nil {
			return nil
		}
		// Lock contention or processes still exiting.
		time.Sleep(pause)
	}
	return fmt.Errorf("hostuser: userdel -r %s: %v: %s", name, err, out)
}

// RemoveSharedMemory marks for removal every System V shared memory
// segment owned by uid. Killed X servers, VNC servers, recorders and
// browsers leave their MIT-SHM segments behind (nothing else removes them,
// userdel included), and a machine that runs the desktop tests often
// enough reaches the kernel's segment limit (kernel.shmmni, 4096): every
// x11vnc and ffmpeg then fails with "shmget: No space left on device". A
// segment still attached goes when its last process detaches.
func RemoveSharedMemory(uid int) int {
	data, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return 0
	}
	var ids []string
	for _, line := range strings.Split(string(data), "\n")[1:] {
		// key shmid perms size cpid lpid nattch uid ...
		f := strings.Fields(line)
		if len(f) > 7 && f[7] == strconv.Itoa(uid) {
			ids = append(ids, f[1])
		}
	}
	n := 0
	for _, id := range ids {
		if exec.Command("ipcrm", "-m", id).Run() == nil {
			n++
		}
	}
	return n
}

// Processes lists the pids of the living processes whose real uid is uid.
func Processes(uid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, puid, state, ok := ProcInfo(pid); ok && state != "Z" && puid == uid {
			out = append(out, pid)
		}
	}
	return out
}

// ProcInfo reads the parent pid, real uid and state of pid from /proc.
func ProcInfo(pid int) (ppid, uid int, state string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, "", false
	}
	uid = -2
	for _, line := range strings.Split(string(b), "\n") {
		k, v, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "PPid":
			ppid, _ = strconv.Atoi(f[0])
		case "Uid":
			uid, _ = strconv.Atoi(f[0])
		case "State":
			state = f[0]
		}
	}
	return ppid, uid, state, true
}

// Exists reports whether the host has a user name.
func Exists(name string) bool {
	_, err := user.Lookup(name)
	return err == nil
}

func lookup(name string) (int, int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, err
	}
	return uid, gid, nil
}

func checkName(name string) error {
	if name == "" || len(name) > 32 || name[0] == '-' {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return fmt.Errorf("%w: %q", ErrInvalidName, name)
		}
	}
	return nil
}

func lockDir() string { return filepath.Join(os.TempDir(), "cbx-users") }

func lockPath(name string) string { return filepath.Join(lockDir(), name+".lock") }

func createdPath(name string) string { return filepath.Join(lockDir(), name+".created") }

// afterUseradd, when set (by tests), runs between useradd and usermod.
var afterUseradd func()

// lockCreate takes the exclusive lock under which an account is found or
// created (a file of its own, never removed).
func lockCreate(name string) (*os.File, error) {
	if err := os.MkdirAll(lockDir(), 0o755); err != nil {
		return nil, fmt.Errorf("hostuser: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(lockDir(), name+".create"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("hostuser: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("hostuser: lock %s: %w", name, err)
	}
	return f, nil
}

func openLock(name string) (*os.File, error) {
	if err := os.MkdirAll(lockDir(), 0o755); err != nil {
		return nil, fmt.Errorf("hostuser: %w", err)
	}
	f, err := os.OpenFile(lockPath(name), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("hostuser: %w", err)
	}
	return f, nil
}
