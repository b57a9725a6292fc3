// Tests of state.go: the state file, its lock, sharing it between drivers and processes.

package sshhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

func TestStateFileReattach(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "pool.json")
	hosts := testHosts(t, 3)
	a := mustNew(t, hosts, WithStateFile(path))
	m, err := a.CreateMachine(ctx, provider.CreateMachineRequest{Name: "lease", Token: "cbx_aaaaaaaaaaaa", Labels: map[string]string{"crabbox-lease": "cbx_aaaaaaaaaaaa"}})
	if err != nil {
		t.Fatal(err)
	}

	// Another driver (as in another process) sees the allocation.
	b := mustNew(t, hosts, WithStateFile(path))
	got, err := b.GetMachine(ctx, m.ID)
	if err != nil {
		t.Fatalf("re-attached GetMachine: %v", err)
	}
	if got.SSHAddr != m.SSHAddr || got.Name != "lease" || got.Labels["crabbox-lease"] != "cbx_aaaaaaaaaaaa" || !got.Created.Equal(m.Created) {
		t.Errorf("re-attached machine = %+v, created %+v", got, m)
	}
	list, err := b.ListMachines(ctx, map[string]string{"crabbox-lease": "cbx_aaaaaaaaaaaa"})
	if err != nil || len(list) != 1 {
		t.Errorf("re-attached ListMachines = %v, %v", list, err)
	}
	if acc, err := b.MachineAccess(ctx, got); err != nil || acc.User != hosts[0].User {
		t.Errorf("re-attached MachineAccess = %+v, %v", acc, err)
	}
	// The other driver does not hand out the same host.
	m2, err := b.CreateMachine(ctx, provider.CreateMachineRequest{})
	if err != nil || m2.SSHAddr == m.SSHAddr {
		t.Errorf("second driver allocated %v, %v: want a different host than %s", m2, err, m.SSHAddr)
	}
	if err := b.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetMachine(ctx, m.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("first driver still sees the machine the second freed: %v", err)
	}

	// The file is private, and no temporary files are left behind.
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "pool.json pool.json.lock" {
		t.Errorf("state directory holds %v: want only pool.json and pool.json.lock", names)
	}

	// A driver configured without the allocated host sees the allocation
	// but cannot give access to it.
	c := mustNew(t, hosts[2:], WithStateFile(path))
	if _, err := c.GetMachine(ctx, m2.ID); err != nil {
		t.Errorf("GetMachine of another pool's allocation: %v", err)
	}
	if _, err := c.MachineAccess(ctx, m2); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("MachineAccess of a host outside the pool: %v, want ErrInvalidArgument", err)
	}
}

func TestStateFileCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pool.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := mustNew(t, testHosts(t, 1), WithStateFile(path))
	if _, err := d.GetMachine(t.Context(), "sshhost-000000000000"); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("GetMachine with a corrupt state file: %v, want ErrInvalidArgument", err)
	}
	if m, err := d.CreateMachine(t.Context(), provider.CreateMachineRequest{}); !errors.Is(err, provider.ErrInvalidArgument) || m != nil {
		t.Errorf("CreateMachine with a corrupt state file: %v, %v, want ErrInvalidArgument", m, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "{not json" {
		t.Errorf("the corrupt state file was overwritten: %q", b)
	}
	if err := os.WriteFile(path, []byte(`{"version": 9, "allocations": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ListMachines(t.Context(), nil); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("ListMachines with a future state version: %v, want ErrInvalidArgument", err)
	}
}

// TestLockHonorsContext: while another process holds the lock, an update
// waits for it and gives up when its context ends; it proceeds once the
// lock is released.
func TestLockHonorsContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pool.json")
	d := mustNew(t, testHosts(t, 1), WithStateFile(path))
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if m, err := d.CreateMachine(ctx, provider.CreateMachineRequest{}); !errors.Is(err, context.DeadlineExceeded) || m != nil {
		t.Fatalf("CreateMachine while the state is locked = %v, %v: want context.DeadlineExceeded", m, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.CreateMachine(t.Context(), provider.CreateMachineRequest{})
		done <- err
	}()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("CreateMachine after the lock was released: %v", err)
	}
}

// TestConcurrentDriversShareFile: two drivers on one state file (each with
// its own in-process mutex, so only the flock serializes them) never hand
// out one host twice.
func TestConcurrentDriversShareFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pool.json")
	hosts := testHosts(t, 3)
	drivers := []*Driver{mustNew(t, hosts, WithStateFile(path)), mustNew(t, hosts, WithStateFile(path))}
	var (
		mu    sync.Mutex
		inUse = map[string]string{} // addr -> id
		wg    sync.WaitGroup
		fails = make(chan string, 100)
	)
	for g := range 8 {
		d := drivers[g%2]
		wg.Go(func() {
			for range 15 {
				m, err := d.CreateMachine(t.Context(), provider.CreateMachineRequest{})
				if errors.Is(err, provider.ErrCapacity) {
					continue
				}
				if err != nil {
					fails <- err.Error()
					return
				}
				mu.Lock()
				if other, ok := inUse[m.SSHAddr]; ok {
					fails <- fmt.Sprintf("host %s allocated as %s while still allocated as %s", m.SSHAddr, m.ID, other)
				}
				inUse[m.SSHAddr] = m.ID
				mu.Unlock()
				if _, err := d.GetMachine(t.Context(), m.ID); err != nil { // hold the host a while
					fails <- err.Error()
				}
				mu.Lock()
				delete(inUse, m.SSHAddr)
				mu.Unlock()
				if err := d.DeleteMachine(t.Context(), m.ID); err != nil {
					fails <- err.Error()
					return
				}
			}
		})
	}
	wg.Wait()
	close(fails)
	for f := range fails {
		t.Error(f)
	}
	if list, err := drivers[0].ListMachines(t.Context(), nil); err != nil || len(list) != 0 {
		t.Errorf("after every machine was deleted the state holds %v, %v", list, err)
	}
}

// TestConcurrentProcesses: processes racing for a pool through one state
// file get distinct hosts, and the rest get ErrCapacity.
func TestConcurrentProcesses(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "pool.json")
	const hosts, procs = 3, 8
	start := filepath.Join(dir, "start")
	cmds := make([]*exec.Cmd, procs)
	outs := make([]strings.Builder, procs)
	for i := range cmds {
		cmds[i] = exec.CommandContext(t.Context(), exe, "-test.run=^TestProcessHelper$", "-test.count=1")
		cmds[i].Env = append(os.Environ(), "SSHHOST_HELPER_STATE="+path, "SSHHOST_HELPER_HOSTS="+strconv.Itoa(hosts), "SSHHOST_HELPER_START="+start)
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	// Release them together.
	if err := os.WriteFile(start, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, capacity := map[string]int{}, 0
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper %d: %v\n%s", i, err, outs[i].String())
		}
		out := outs[i].String()
		switch {
		case strings.Contains(out, "ALLOCATED "):
			addr := strings.Fields(out[strings.Index(out, "ALLOCATED ")+len("ALLOCATED "):])[0]
			got[addr]++
		case strings.Contains(out, "CAPACITY"):
			capacity++
		default:
			t.Fatalf("helper %d said neither ALLOCATED nor CAPACITY:\n%s", i, out)
		}
	}
	if len(got) != hosts || capacity != procs-hosts {
		t.Errorf("allocations %v and %d capacity errors: want each of %d hosts once and %d capacity errors", got, capacity, hosts, procs-hosts)
	}
	for addr, n := range got {
		if n != 1 {
			t.Errorf("host %s allocated %d times", addr, n)
		}
	}
	d := mustNew(t, testHosts(t, hosts), WithStateFile(path))
	if list, err := d.ListMachines(t.Context(), nil); err != nil || len(list) != hosts {
		t.Errorf("state after the race holds %d machines, %v: want %d", len(list), err, hosts)
	}
}

// TestProcessHelper is the child of TestConcurrentProcesses.
func TestProcessHelper(t *testing.T) {
	path := os.Getenv("SSHHOST_HELPER_STATE")
	if path == "" {
		t.Skip("child process of TestConcurrentProcesses")
	}
	n, _ := strconv.Atoi(os.Getenv("SSHHOST_HELPER_HOSTS"))
	d := mustNew(t, testHosts(t, n), WithStateFile(path))
	for { // wait for the start signal
		if _, err := os.Stat(os.Getenv("SSHHOST_HELPER_START")); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	m, err := d.CreateMachine(t.Context(), provider.CreateMachineRequest{})
	switch {
	case errors.Is(err, provider.ErrCapacity):
		fmt.Println("CAPACITY")
	case err != nil:
		t.Fatal(err)
	default:
		fmt.Println("ALLOCATED", m.SSHAddr)
	}
}
