// Tests for holding, sharing and removing the test boxes' users.
package hostuser_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/internal/testenv/hostuser"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

func TestFreshIsRemovedWithItsProcesses(t *testing.T) {
	sshd.Require(t)
	u, err := hostuser.Fresh("cbxu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.Release() })
	if !hostuser.Exists(u.Name) || u.UID == 0 {
		t.Fatalf("user %+v not created", u)
	}
	cmd := exec.Command("sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID)}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if got := hostuser.Processes(u.UID); len(got) != 1 || got[0] != cmd.Process.Pid {
		t.Fatalf("Processes = %v, want [%d]", got, cmd.Process.Pid)
	}
	if err := u.Release(); err != nil {
		t.Fatal(err)
	}
	if err := u.Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if hostuser.Exists(u.Name) {
		t.Fatalf("user %s still exists", u.Name)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the user's process outlived it")
	}
}

func TestEnsureSharesAndKeepsHostUsers(t *testing.T) {
	sshd.Require(t)
	fresh, err := hostuser.Fresh("cbxu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fresh.Release() })
	// A second holder of a user created here keeps it alive.
	again, err := hostuser.Ensure(fresh.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Release() })
	if again.UID != fresh.UID {
		t.Fatalf("Ensure uid %d, Fresh uid %d", again.UID, fresh.UID)
	}
	if err := fresh.Release(); err != nil {
		t.Fatal(err)
	}
	if !hostuser.Exists(again.Name) {
		t.Fatal("user removed while still held")
	}
	if err := again.Release(); err != nil {
		t.Fatal(err)
	}
	if hostuser.Exists(again.Name) {
		t.Fatal("user outlived its last holder")
	}

	// A user the host had before is never removed.
	root, err := hostuser.Ensure("root")
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Release(); err != nil || !hostuser.Exists("root") || root.UID != 0 {
		t.Fatalf("root after Release: %v", err)
	}
}

func TestInvalidNames(t *testing.T) {
	for _, name := range []string{"", "-rf", "../etc", "a b", "abcdefghijklmnopqrstuvwxyz0123456789"} {
		if _, err := hostuser.Ensure(name); !errors.Is(err, hostuser.ErrInvalidName) {
			t.Errorf("Ensure(%q) = %v, want ErrInvalidName", name, err)
		}
	}
}

// A released user's System V shared memory goes with it: killed X servers
// and browsers leave their MIT-SHM segments, and enough of them exhaust
// the kernel's limit for every later desktop test on the machine.
func TestReleaseRemovesSharedMemory(t *testing.T) {
	sshd.Require(t)
	if _, err := exec.LookPath("ipcmk"); err != nil {
		t.Skipf("ipcmk not installed: %v", err)
	}
	u, err := hostuser.Fresh("cbxu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.Release() })
	cmd := exec.Command("ipcmk", "-M", "4096")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ipcmk: %v: %s", err, out)
	}
	id := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "Shared memory id:"))
	if !segmentExists(t, id) {
		t.Fatalf("segment %s (from %q) not found", id, out)
	}
	if err := u.Release(); err != nil {
		t.Fatal(err)
	}
	if segmentExists(t, id) {
		t.Errorf("shared memory segment %s of the released user %s is left behind", id, u.Name)
		_ = exec.Command("ipcrm", "-m", id).Run()
	}
}

func segmentExists(t *testing.T, id string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		t.Skipf("no /proc/sysvipc/shm: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 1 && f[1] == id {
			return true
		}
	}
	return false
}
