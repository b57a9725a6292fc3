package sshhost

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
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

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/provider"
)

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testHosts returns n hosts with fresh keys on loopback addresses that no
// test dials.
func testHosts(t testing.TB, n int) []Host {
	t.Helper()
	hosts := make([]Host, n)
	for i := range hosts {
		hosts[i] = Host{
			Addr:    fmt.Sprintf("127.0.0.%d:22", i+1),
			User:    fmt.Sprintf("user%d", i),
			Signer:  newSigner(t),
			HostKey: newSigner(t).PublicKey(),
		}
	}
	return hosts
}

func mustNew(t testing.TB, hosts []Host, opts ...Option) *Driver {
	t.Helper()
	d, err := New(hosts, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

func TestNewValidates(t *testing.T) {
	good := testHosts(t, 1)[0]
	mod := func(f func(h *Host)) []Host { h := good; f(&h); return []Host{h} }
	for name, tc := range map[string]struct {
		hosts []Host
		opts  []Option
	}{
		"no hosts":          {hosts: nil},
		"empty addr":        {hosts: mod(func(h *Host) { h.Addr = "" })},
		"bad port":          {hosts: mod(func(h *Host) { h.Addr = "127.0.0.1:99999" })},
		"non-numeric port":  {hosts: mod(func(h *Host) { h.Addr = "127.0.0.1:ssh" })},
		"no user":           {hosts: mod(func(h *Host) { h.User = "" })},
		"no signer":         {hosts: mod(func(h *Host) { h.Signer = nil })},
		"no host key":       {hosts: mod(func(h *Host) { h.HostKey = nil })},
		"relative workroot": {hosts: mod(func(h *Host) { h.WorkRoot = "work" })},
		"duplicate address": {hosts: []Host{good, mod(func(h *Host) { h.Addr = "127.0.0.1" })[0]}},
		"empty name":        {hosts: []Host{good}, opts: []Option{WithName("")}},
		"blank name":        {hosts: []Host{good}, opts: []Option{WithName("  ")}},
		"empty state file":  {hosts: []Host{good}, opts: []Option{WithStateFile("")}},
	} {
		t.Run(name, func(t *testing.T) {
			d, err := New(tc.hosts, tc.opts...)
			if !errors.Is(err, provider.ErrInvalidArgument) || d != nil {
				t.Fatalf("New = %v, %v: want nil, ErrInvalidArgument", d, err)
			}
		})
	}
}

func TestNormalizeAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":      "127.0.0.1:22",
		"127.0.0.1:2222": "127.0.0.1:2222",
		"box.example":    "box.example:22",
		"::1":            "[::1]:22",
		"[::1]:2200":     "[::1]:2200",
	} {
		got, err := normalizeAddr(in)
		if err != nil || got != want {
			t.Errorf("normalizeAddr(%q) = %q, %v: want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", " ", ":22", "a b:22", "h:0", "h:-1"} {
		if got, err := normalizeAddr(in); err == nil {
			t.Errorf("normalizeAddr(%q) = %q: want an error", in, got)
		}
	}
}

func TestInfoTypesImage(t *testing.T) {
	d := mustNew(t, testHosts(t, 1), WithName("lab"))
	if got := d.Info().Name; got != "lab" {
		t.Errorf("Info().Name = %q, want lab", got)
	}
	if got := mustNew(t, testHosts(t, 1)).Info().Name; got != DefaultName {
		t.Errorf("default Info().Name = %q, want %q", got, DefaultName)
	}
	for _, c := range provider.Classes() {
		types, err := d.MachineTypes(c, "arm64")
		if err != nil || len(types) != 1 || types[0] != MachineType {
			t.Errorf("MachineTypes(%q) = %q, %v", c, types, err)
		}
	}
	if _, err := d.MachineTypes("huge", "amd64"); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("MachineTypes(huge) error = %v, want ErrInvalidArgument", err)
	}
	if _, err := d.MachineTypes("small", "riscv"); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("MachineTypes(small, riscv) error = %v, want ErrInvalidArgument", err)
	}
	if img, err := d.BaseImage(t.Context(), "amd64"); err != nil || img != BaseImageID {
		t.Errorf("BaseImage = %q, %v", img, err)
	}
	var _ provider.Driver = d
	if _, ok := any(d).(provider.Images); ok {
		t.Error("sshhost must not implement provider.Images")
	}
	if _, ok := any(d).(provider.Channels); ok {
		t.Error("sshhost must not implement provider.Channels")
	}
}

// drivers returns an in-memory driver and a state-file driver over the same
// hosts, to run a test against both stores.
func forEachStore(t *testing.T, n int, f func(t *testing.T, hosts []Host, d *Driver)) {
	t.Run("memory", func(t *testing.T) {
		hosts := testHosts(t, n)
		f(t, hosts, mustNew(t, hosts))
	})
	t.Run("file", func(t *testing.T) {
		hosts := testHosts(t, n)
		f(t, hosts, mustNew(t, hosts, WithStateFile(filepath.Join(t.TempDir(), "state", "pool.json"))))
	})
}

func TestAllocation(t *testing.T) {
	forEachStore(t, 2, func(t *testing.T, hosts []Host, d *Driver) {
		ctx := t.Context()
		m1, err := d.CreateMachine(ctx, provider.CreateMachineRequest{Name: "one", Labels: map[string]string{"k": "1"}, UserData: []byte("ignored")})
		if err != nil {
			t.Fatal(err)
		}
		m2, err := d.CreateMachine(ctx, provider.CreateMachineRequest{Name: "two", Type: MachineType, Image: BaseImageID, Labels: map[string]string{"k": "2"}})
		if err != nil {
			t.Fatal(err)
		}
		if m1.SSHAddr != hosts[0].Addr || m2.SSHAddr != hosts[1].Addr {
			t.Errorf("allocated %s and %s, want %s and %s in pool order", m1.SSHAddr, m2.SSHAddr, hosts[0].Addr, hosts[1].Addr)
		}
		if m1.ID == m2.ID || !strings.HasPrefix(m1.ID, idPrefix) {
			t.Errorf("ids %q and %q: want distinct ids with prefix %q", m1.ID, m2.ID, idPrefix)
		}
		if m1.State != provider.MachineRunning || m1.Type != MachineType || m1.Image != BaseImageID || m1.Name != "one" || m1.Labels["k"] != "1" {
			t.Errorf("machine = %+v", m1)
		}
		_, err = d.CreateMachine(ctx, provider.CreateMachineRequest{Name: "three"})
		if !errors.Is(err, provider.ErrCapacity) {
			t.Fatalf("third CreateMachine on a pool of 2: %v, want ErrCapacity", err)
		}
		if err := d.DeleteMachine(ctx, m1.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := d.GetMachine(ctx, m1.ID); !errors.Is(err, provider.ErrNotFound) {
			t.Errorf("GetMachine of a freed host: %v, want ErrNotFound", err)
		}
		m3, err := d.CreateMachine(ctx, provider.CreateMachineRequest{Name: "three"})
		if err != nil {
			t.Fatalf("CreateMachine after freeing a host: %v", err)
		}
		if m3.SSHAddr != hosts[0].Addr || m3.ID == m1.ID {
			t.Errorf("re-allocated %s as %s: want host %s under a new id", m3.SSHAddr, m3.ID, hosts[0].Addr)
		}
		list, err := d.ListMachines(ctx, map[string]string{"k": "2"})
		if err != nil || len(list) != 1 || list[0].ID != m2.ID {
			t.Errorf("ListMachines(k=2) = %v, %v: want only %s", list, err, m2.ID)
		}
		all, err := d.ListMachines(ctx, nil)
		if err != nil || len(all) != 2 {
			t.Errorf("ListMachines(nil) = %d machines, %v: want 2", len(all), err)
		}
		if err := d.UpdateMachineLabels(ctx, m2.ID, map[string]string{"k": "", "x": "y"}); err != nil {
			t.Fatal(err)
		}
		got, err := d.GetMachine(ctx, m2.ID)
		if err != nil || len(got.Labels) != 1 || got.Labels["x"] != "y" {
			t.Errorf("labels after update = %v, %v: want only x=y", got.Labels, err)
		}
	})
}

func TestCreateValidatesRequest(t *testing.T) {
	d := mustNew(t, testHosts(t, 1))
	for _, req := range []provider.CreateMachineRequest{
		{Type: "cx22"},
		{Image: "ami-0123456789abcdef0"},
	} {
		if m, err := d.CreateMachine(t.Context(), req); !errors.Is(err, provider.ErrInvalidArgument) || m != nil {
			t.Errorf("CreateMachine(%+v) = %v, %v: want ErrInvalidArgument", req, m, err)
		}
	}
	if list, _ := d.ListMachines(t.Context(), nil); len(list) != 0 {
		t.Errorf("a refused create allocated %v", list)
	}
}

func TestCreateIdempotentToken(t *testing.T) {
	forEachStore(t, 2, func(t *testing.T, hosts []Host, d *Driver) {
		req := provider.CreateMachineRequest{Token: "cbx_0123456789ab", Name: "n"}
		a, err := d.CreateMachine(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := d.CreateMachine(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if a.ID != b.ID || a.SSHAddr != b.SSHAddr {
			t.Errorf("retried create with the same token gave %s on %s, first was %s on %s", b.ID, b.SSHAddr, a.ID, a.SSHAddr)
		}
		if list, _ := d.ListMachines(t.Context(), nil); len(list) != 1 {
			t.Errorf("%d allocations after a retried create: want 1", len(list))
		}
	})
}

func TestMachineAccess(t *testing.T) {
	for name, opts := range map[string][]Option{
		"memory": nil,
		"file":   {WithStateFile(filepath.Join(t.TempDir(), "s.json"))},
	} {
		t.Run(name, func(t *testing.T) { testMachineAccess(t, opts) })
	}
}

func testMachineAccess(t *testing.T, opts []Option) {
	ctx := t.Context()
	hosts := testHosts(t, 2)
	hosts[1].WorkRoot = "/srv/work"
	d := mustNew(t, hosts, opts...)
	m1, _ := d.CreateMachine(ctx, provider.CreateMachineRequest{})
	m2, _ := d.CreateMachine(ctx, provider.CreateMachineRequest{})
	for i, m := range []*provider.Machine{m1, m2} {
		acc, err := d.MachineAccess(ctx, m)
		if err != nil {
			t.Fatalf("MachineAccess(%s): %v", m.ID, err)
		}
		h := hosts[i]
		if acc.User != h.User || acc.Signer != h.Signer || string(acc.HostKey.Marshal()) != string(h.HostKey.Marshal()) || acc.WorkRoot != h.WorkRoot {
			t.Errorf("MachineAccess(%s) = %+v: want host %d's credentials %+v", m.ID, acc, i, h)
		}
	}
	if err := d.DeleteMachine(ctx, m1.ID); err != nil {
		t.Fatal(err)
	}
	if acc, err := d.MachineAccess(ctx, m1); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("MachineAccess of a freed machine = %+v, %v: want ErrNotFound", acc, err)
	}
	if acc, err := d.MachineAccess(ctx, nil); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("MachineAccess(nil) = %+v, %v: want ErrInvalidArgument", acc, err)
	}
}

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
