// Tests of machines.go: boot, readiness, kill, errors, boot delay, shutdown.

package crabboxtest

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/provider"
)

func TestBootWritesUserDataFiles(t *testing.T) {
	c := Start(t)
	l := newLease(t, func(cfg *cloudinit.Config) {
		cfg.WorkRoot = "/srv/work"
		cfg.User = "tester"
		cfg.Files = []cloudinit.File{{Path: "/etc/crabbox/extra.txt", Content: []byte("extra"), Mode: 0o600}}
	})
	m := boot(t, c, l)
	dir, err := c.MachineDir(m.ID)
	if err != nil || dir != m.FSRoot {
		t.Fatalf("MachineDir = %q, %v; want %q", dir, err, m.FSRoot)
	}
	for _, p := range []string{cloudinit.BootstrapMarker, cloudinit.ReadyCommand, cloudinit.LeaseEnvFile,
		cloudinit.SSHDConfigFile, cloudinit.HostKeyFile, "/home/tester/.ssh/authorized_keys"} {
		if _, err := os.Stat(filepath.Join(m.FSRoot, p)); err != nil {
			t.Errorf("boot did not write %s: %v", p, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(m.FSRoot, "srv/work")); err != nil || !fi.IsDir() {
		t.Errorf("work root missing: %v", err)
	}
	fi, err := os.Stat(filepath.Join(m.FSRoot, "etc/crabbox/extra.txt"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("extra file: %v, mode %v", err, fi)
	}
	if fi, err := os.Stat(filepath.Join(m.FSRoot, cloudinit.ReadyCommand)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("ready command not executable: %v", err)
	}

	// Only the user-data's user logs in, and the work root is the cwd.
	cl := dial(t, m.Machine, l)
	if out := mustRun(t, cl, "pwd"); strings.TrimSpace(out) != filepath.Join(m.FSRoot, "srv/work") {
		t.Errorf("pwd = %q", out)
	}
	if _, err := dialAs(m.SSHAddr, "crabbox", l.signer, l.hostKey); err == nil {
		t.Error("login as a user the user-data did not create succeeded")
	}
}

func TestReadyCommand(t *testing.T) {
	var missing []string
	for _, tool := range cloudinit.ReadyTools() {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("tools the readiness check needs are missing: %v", missing)
		}
		t.Skipf("tools the readiness check needs are missing: %v (install them)", missing)
	}
	c := Start(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	cl := dial(t, m.Machine, l)
	if out := mustRun(t, cl, cloudinit.ReadyShellCommand); strings.TrimSpace(out) != "ready" {
		t.Fatalf("ready command printed %q", out)
	}
	// Without the bootstrap marker the box is not ready.
	if err := os.Remove(filepath.Join(m.FSRoot, cloudinit.BootstrapMarker)); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := run(t, cl, cloudinit.ReadyShellCommand)
	if err == nil || !strings.Contains(errOut, "bootstrap not finished") {
		t.Fatalf("ready without marker: err %v, stderr %q", err, errOut)
	}
}

// TestImageMarkerIsNotReady: an image keeps the bootstrap marker of the
// lease that baked it; a machine booted from that image is ready only once
// its own boot wrote its own lease id there, never on the image's marker.
func TestImageMarkerIsNotReady(t *testing.T) {
	var missing []string
	for _, tool := range cloudinit.ReadyTools() {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("tools the readiness check needs are missing: %v", missing)
		}
		t.Skipf("tools the readiness check needs are missing: %v (install them)", missing)
	}
	c := Start(t)
	ctx := ctxT(t)
	la := newLease(t, nil)
	a := boot(t, c, la)
	img, err := c.CreateImage(ctx, provider.CreateImageRequest{MachineID: a.ID, Name: "marker-image"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "image available", func() bool {
		got, err := c.GetImage(ctx, img.ID)
		return err == nil && got.State == provider.ImageAvailable
	})
	stale, err := os.ReadFile(filepath.Join(a.FSRoot, cloudinit.BootstrapMarker))
	if err != nil {
		t.Fatal(err)
	}
	if string(stale) != string(cloudinit.BootstrapMarkerContent(la.cfg.LeaseID)) {
		t.Fatalf("machine A's marker = %q, want its lease id %s", stale, la.cfg.LeaseID)
	}

	lb := newLease(t, nil)
	req := lb.request(nil)
	req.Image = img.ID
	b, err := c.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	clb := dial(t, b, lb)
	if out := mustRun(t, clb, cloudinit.ReadyShellCommand); strings.TrimSpace(out) != "ready" {
		t.Fatalf("machine B after its boot: ready printed %q", out)
	}
	marker := filepath.Join(running(t, c, b).FSRoot, cloudinit.BootstrapMarker)
	if got, err := os.ReadFile(marker); err != nil || string(got) != string(cloudinit.BootstrapMarkerContent(lb.cfg.LeaseID)) {
		t.Fatalf("machine B's marker = %q, %v; want its lease id %s", got, err, lb.cfg.LeaseID)
	}
	// Before B's own bootstrap finishes, its disk holds the image's marker
	// (A's): B must not be ready.
	if err := os.WriteFile(marker, stale, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := run(t, clb, cloudinit.ReadyShellCommand)
	if err == nil || !strings.Contains(errOut, "bootstrap not finished") {
		t.Fatalf("machine B with the image's marker of lease %s: err %v, stderr %q; want not ready", la.cfg.LeaseID, err, errOut)
	}
}

func TestKillMachine(t *testing.T) {
	c := Start(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	cl := dial(t, m.Machine, l)
	s, pid := startSleeper(t, cl, m.FSRoot)

	if err := c.KillMachine(m.ID); err != nil {
		t.Fatal(err)
	}
	err := s.Wait()
	if err == nil {
		t.Fatal("command on a killed machine ended without error")
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("command on a killed machine reported an exit status: %v, want a lost connection", err)
	}
	if alive(pid) {
		t.Error("the killed machine's command still runs")
	}
	if _, err := net.DialTimeout("tcp", m.SSHAddr, 5*time.Second); err == nil {
		t.Error("the killed machine still accepts connections")
	}
	got, err := c.GetMachine(ctxT(t), m.ID)
	if err != nil || got.State != provider.MachineStopped {
		t.Errorf("killed machine: %+v, %v: want stopped", got, err)
	}
	if err := c.KillMachine("m-missing"); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("KillMachine of a missing machine: %v", err)
	}
}

func TestMachineErrors(t *testing.T) {
	c := Start(t)
	ctx := ctxT(t)
	l := newLease(t, nil)

	c.SetCapacity("local-small-a", false)
	if _, err := c.CreateMachine(ctx, l.request(nil)); !errors.Is(err, provider.ErrCapacity) {
		t.Fatalf("no capacity: %v", err)
	}
	req := l.request(nil)
	req.Type = "local-small-b"
	if _, err := c.CreateMachine(ctx, req); err != nil {
		t.Fatalf("other type: %v", err)
	}
	c.SetCapacity("local-small-a", true)

	bad := l.request(nil)
	bad.UserData = []byte("#!/bin/sh\necho hi\n")
	if _, err := c.CreateMachine(ctx, bad); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("invalid user-data: %v", err)
	}
	bad = l.request(nil)
	bad.Type = "m5.large"
	if _, err := c.CreateMachine(ctx, bad); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("unknown type: %v", err)
	}
	bad = l.request(nil)
	bad.Image = "img-missing"
	if _, err := c.CreateMachine(ctx, bad); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("unknown image: %v", err)
	}
	if _, err := c.GetMachine(ctx, "m-missing"); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("GetMachine missing: %v", err)
	}
	if err := c.DeleteMachine(ctx, "m-missing"); err != nil {
		t.Errorf("DeleteMachine missing: %v", err)
	}
	if err := c.UpdateMachineLabels(ctx, "m-missing", map[string]string{"a": "b"}); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("UpdateMachineLabels missing: %v", err)
	}

	// Token idempotency.
	tr := newLease(t, nil).request(map[string]string{"k": "v"})
	tr.Token = "cbx_token"
	first, err := c.CreateMachine(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.CreateMachine(ctx, tr)
	if err != nil || second.ID != first.ID {
		t.Fatalf("retried create: %+v, %v: want %s", second, err, first.ID)
	}
	if ms, err := c.ListMachines(ctx, map[string]string{"k": "v"}); err != nil || len(ms) != 1 {
		t.Fatalf("ListMachines: %v, %v", ms, err)
	}
	if types, err := c.MachineTypes("beast", "amd64"); err != nil || len(types) != 2 {
		t.Errorf("MachineTypes: %v, %v", types, err)
	}
	if _, err := c.MachineTypes("huge", "amd64"); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("unknown class: %v", err)
	}
}

func TestBootDelay(t *testing.T) {
	c := Start(t, WithBootDelay(time.Hour))
	l := newLease(t, nil)
	m, err := c.CreateMachine(ctxT(t), l.request(nil))
	if err != nil {
		t.Fatal(err)
	}
	if m.State != provider.MachinePending || m.SSHAddr == "" {
		t.Fatalf("machine during boot delay: %+v", m)
	}
	if nc, err := net.DialTimeout("tcp", m.SSHAddr, 5*time.Second); err == nil {
		nc.Close()
		t.Fatal("SSH answered during the boot delay")
	}

	c2 := Start(t, WithBootDelay(50*time.Millisecond))
	m2, err := c2.CreateMachine(ctxT(t), l.request(nil))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the machine to finish booting", func() bool {
		got, err := c2.GetMachine(ctxT(t), m2.ID)
		return err == nil && got.State == provider.MachineRunning
	})
	got, _ := c2.GetMachine(ctxT(t), m2.ID)
	cl := dial(t, got, l)
	mustRun(t, cl, "true")
}

func TestShutdownAfter(t *testing.T) {
	c := Start(t)
	ctx := ctxT(t)
	l := newLease(t, func(cfg *cloudinit.Config) { cfg.ShutdownAfter = 50 * time.Millisecond })
	keep, err := c.CreateMachine(ctx, l.request(map[string]string{"which": "keep"}))
	if err != nil {
		t.Fatal(err)
	}
	req := l.request(map[string]string{"which": "terminate"})
	req.TerminateOnShutdown = true
	gone, err := c.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the TTL shutdown", func() bool {
		m, err := c.GetMachine(ctx, keep.ID)
		return err == nil && m.State == provider.MachineStopped
	})
	eventually(t, "the terminate-on-shutdown machine to disappear", func() bool {
		_, err := c.GetMachine(ctx, gone.ID)
		return errors.Is(err, provider.ErrNotFound)
	})
}
