package crabboxtest

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/provider"
)

func TestRunCommandEnvAndExitCode(t *testing.T) {
	c := Start(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	cl := dial(t, m, l)

	out, errOut, err := run(t, cl, `echo out; echo err >&2; pwd -P; echo "$HOME|$USER|$CRABBOX_FS_ROOT|$LANG"; echo "$PATH"`)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if errOut != "err\n" {
		t.Errorf("stderr = %q, want %q", errOut, "err\n")
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || lines[0] != "out" {
		t.Fatalf("stdout = %q", out)
	}
	root, err := filepath.EvalSymlinks(m.FSRoot)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, cloudinit.DefaultWorkRoot); lines[1] != want {
		t.Errorf("cwd = %q, want %q", lines[1], want)
	}
	if want := filepath.Join(m.FSRoot, "home", "crabbox") + "|crabbox|" + m.FSRoot + "|C.UTF-8"; lines[2] != want {
		t.Errorf("env = %q, want %q", lines[2], want)
	}
	if want := filepath.Join(m.FSRoot, "usr/local/bin") + ":"; !strings.HasPrefix(lines[3], want) {
		t.Errorf("PATH = %q, want prefix %q", lines[3], want)
	}

	_, _, err = run(t, cl, "exit 7")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 7 {
		t.Fatalf("exit 7: err = %v, want exit status 7", err)
	}

	// env requests are honoured; stdin reaches the command.
	s, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Setenv("CRABBOX_TEST", "hello"); err != nil {
		t.Fatalf("setenv: %v", err)
	}
	s.Stdin = strings.NewReader("from-stdin\n")
	got, err := s.Output(`echo "$CRABBOX_TEST"; cat`)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello\nfrom-stdin\n" {
		t.Errorf("output = %q", got)
	}

	// A pty is refused, like a box without one would be for exec clients.
	s2, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.RequestPty("xterm", 80, 24, ssh.TerminalModes{}); err == nil {
		t.Error("pty request accepted, want refused")
	}
}

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
	cl := dial(t, m, l)
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
	cl := dial(t, m, l)
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
	marker := filepath.Join(b.FSRoot, cloudinit.BootstrapMarker)
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

func TestHostKeyAndAuth(t *testing.T) {
	c := Start(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	other := newLease(t, nil)

	if _, err := dialAs(m.SSHAddr, "crabbox", l.signer, other.hostKey); err == nil {
		t.Fatal("dial pinned to another host key succeeded")
	}
	if _, err := dialAs(m.SSHAddr, "crabbox", other.signer, l.hostKey); err == nil {
		t.Fatal("dial with a key the user-data did not authorize succeeded")
	}
	cl, err := dialAs(m.SSHAddr, "crabbox", l.signer, l.hostKey)
	if err != nil {
		t.Fatalf("dial with the user-data's keys: %v", err)
	}
	defer cl.Close()
	if !slices.Equal(cl.ServerVersion(), []byte("SSH-2.0-OpenSSH_9.6 crabboxtest")) {
		t.Errorf("server version %q", cl.ServerVersion())
	}
	// Keepalives get an answer (a failure, like OpenSSH).
	ok, _, err := cl.SendRequest("keepalive@openssh.com", true, nil)
	if err != nil || ok {
		t.Errorf("keepalive: ok=%v err=%v, want a failure reply", ok, err)
	}
}

func TestMaxSessions(t *testing.T) {
	c := Start(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	cl := dial(t, m, l)

	var sessions []*ssh.Session
	for i := 0; i < MaxSessions; i++ {
		s, err := cl.NewSession()
		if err != nil {
			t.Fatalf("session %d: %v", i+1, err)
		}
		sessions = append(sessions, s)
	}
	_, err := cl.NewSession()
	var oe *ssh.OpenChannelError
	if !errors.As(err, &oe) || oe.Reason != ssh.Prohibited || oe.Message != "open failed" {
		t.Fatalf("session %d: err = %v, want OpenChannelError prohibited \"open failed\"", MaxSessions+1, err)
	}

	// Many concurrent commands on one connection: those past the limit are
	// refused, the others run.
	for _, s := range sessions {
		_ = s.Close()
	}
	eventually(t, "a free session slot", func() bool {
		s, err := cl.NewSession()
		if err != nil {
			return false
		}
		_ = s.Close()
		return true
	})
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused, ran := 0, 0
	start := make(chan struct{})
	for i := 0; i < 25; i++ {
		wg.Go(func() {
			<-start
			s, err := cl.NewSession()
			if err != nil {
				mu.Lock()
				refused++
				mu.Unlock()
				return
			}
			defer s.Close()
			if _, err := s.Output("sleep 0.3; echo ok"); err == nil {
				mu.Lock()
				ran++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if refused == 0 || ran == 0 || refused+ran != 25 {
		t.Fatalf("25 concurrent commands: %d ran, %d refused; want both and 25 in all", ran, refused)
	}
}

// pidFile runs cmd in the background of a session that writes its shell's
// pid first, and returns the session and the pid.
func startSleeper(t *testing.T, cl *ssh.Client, root string) (*ssh.Session, int) {
	t.Helper()
	pidPath := filepath.Join(root, "sleeper.pid")
	_ = os.Remove(pidPath)
	s, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(`echo $$ > "$CRABBOX_FS_ROOT/sleeper.pid.tmp" && mv "$CRABBOX_FS_ROOT/sleeper.pid.tmp" "$CRABBOX_FS_ROOT/sleeper.pid" && exec sleep 300`); err != nil {
		t.Fatal(err)
	}
	var pid int
	eventually(t, "the sleeper's pid", func() bool {
		b, err := os.ReadFile(pidPath)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	return s, pid
}

func alive(pid int) bool {
	// A zombie still answers signal 0; the cloud reaps its children, so
	// a killed command disappears.
	return syscall.Kill(pid, 0) == nil
}

func TestSignalAndChannelClose(t *testing.T) {
	c := Start(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	cl := dial(t, m, l)

	s, pid := startSleeper(t, cl, m.FSRoot)
	if err := s.Signal(ssh.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := s.Wait()
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.Signal() != "TERM" {
		t.Fatalf("wait after SIGTERM: %v, want exit signal TERM", err)
	}
	eventually(t, "the signalled command to be gone", func() bool { return !alive(pid) })

	s2, pid2 := startSleeper(t, cl, m.FSRoot)
	_ = s2.Close()
	eventually(t, "the command of a closed channel to be killed", func() bool { return !alive(pid2) })
}

func TestKillMachine(t *testing.T) {
	c := Start(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	cl := dial(t, m, l)
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

func TestImageRoundTrip(t *testing.T) {
	c := Start(t, WithImagePendingPolls(2))
	ctx := ctxT(t)
	la := newLease(t, nil)
	a := boot(t, c, la)
	cla := dial(t, a, la)
	mustRun(t, cla, `mkdir -p "$CRABBOX_FS_ROOT/opt/app" && echo baked > "$CRABBOX_FS_ROOT/opt/app/marker" && ln -s marker "$CRABBOX_FS_ROOT/opt/app/link"`)

	img, err := c.CreateImage(ctx, provider.CreateImageRequest{
		MachineID: a.ID, Name: "owner-product-test-20260101-0000",
		Labels: map[string]string{"crabbox": "true"}, Token: "tok-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if img.State != provider.ImagePending || !strings.HasPrefix(img.ID, "img-") ||
		len(img.Snapshots) != 1 || !strings.HasPrefix(img.Snapshots[0].ID, "snap-") || img.SizeGiB <= 0 {
		t.Fatalf("new image: %+v", img)
	}
	again, err := c.CreateImage(ctx, provider.CreateImageRequest{MachineID: a.ID, Name: "other-name", Token: "tok-1"})
	if err != nil || again.ID != img.ID {
		t.Fatalf("retried CreateImage with the same token: %+v, %v: want image %s", again, err, img.ID)
	}
	if _, err := c.CreateImage(ctx, provider.CreateImageRequest{MachineID: a.ID, Name: img.Name}); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("CreateImage with a taken name: %v, want ErrConflict", err)
	}
	if _, err := c.CreateMachine(ctx, provider.CreateMachineRequest{Image: img.ID, Type: "local-small-a", UserData: la.ud}); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("CreateMachine from a pending image: %v, want ErrConflict", err)
	}
	var states []provider.ImageState
	for i := 0; i < 3; i++ {
		got, err := c.GetImage(ctx, img.ID)
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, got.State)
	}
	if want := []provider.ImageState{provider.ImagePending, provider.ImagePending, provider.ImageAvailable}; !slices.Equal(states, want) {
		t.Fatalf("image states over polls = %v, want %v", states, want)
	}
	if c.ImageCount() != 1 {
		t.Fatalf("ImageCount = %d, want 1", c.ImageCount())
	}

	lb := newLease(t, nil)
	req := lb.request(nil)
	req.Image = img.ID
	b, err := c.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if b.Image != img.ID {
		t.Errorf("machine B image = %q", b.Image)
	}
	clb := dial(t, b, lb)
	if out := mustRun(t, clb, `cat "$CRABBOX_FS_ROOT/opt/app/marker" "$CRABBOX_FS_ROOT/opt/app/link"`); out != "baked\nbaked\n" {
		t.Fatalf("machine B sees %q, want the file baked on machine A", out)
	}
	// B's boot wrote its own lease over A's.
	env, err := os.ReadFile(filepath.Join(b.FSRoot, cloudinit.LeaseEnvFile))
	if err != nil || !strings.Contains(string(env), lb.cfg.LeaseID) {
		t.Errorf("machine B lease env = %q, %v", env, err)
	}

	// Protected images refuse deletion; deletion removes the tree.
	if err := c.ProtectImage(ctx, img.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteImage(ctx, img.ID); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("delete protected: %v", err)
	}
	if err := c.ProtectImage(ctx, img.ID, false); err != nil {
		t.Fatal(err)
	}
	imgDir := filepath.Join(c.Dir(), "images", img.ID)
	if err := c.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(imgDir); !os.IsNotExist(err) {
		t.Errorf("image dir still there: %v", err)
	}
	if err := c.DeleteImage(ctx, img.ID); err != nil {
		t.Errorf("second delete: %v", err)
	}
	if _, err := c.GetImage(ctx, img.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("GetImage after delete: %v", err)
	}
	if c.ImageCount() != 0 {
		t.Errorf("ImageCount = %d after delete", c.ImageCount())
	}
}

func TestImageFailed(t *testing.T) {
	c := Start(t)
	ctx := ctxT(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	c.FailNextImage("disk on fire")
	img, err := c.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "failing"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetImage(ctx, img.ID)
	if err != nil || got.State != provider.ImagePending {
		t.Fatalf("first poll: %+v, %v", got, err)
	}
	got, err = c.GetImage(ctx, img.ID)
	if err != nil || got.State != provider.ImageFailed || got.StateReason != "disk on fire" {
		t.Fatalf("second poll: %+v, %v: want failed with the reason", got, err)
	}
	req := l.request(nil)
	req.Image = img.ID
	if _, err := c.CreateMachine(ctx, req); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Fatalf("CreateMachine from a failed image: %v", err)
	}
	// Only the next image fails.
	ok, err := c.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "fine"})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.GetImage(ctx, ok.ID)
	if got, err := c.GetImage(ctx, ok.ID); err != nil || got.State != provider.ImageAvailable {
		t.Fatalf("image after the failed one: %+v, %v", got, err)
	}
	if _, err := c.CreateImage(ctx, provider.CreateImageRequest{MachineID: "m-missing", Name: "x"}); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("CreateImage of a missing machine: %v", err)
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

func TestBaseImage(t *testing.T) {
	c := Start(t)
	ctx := ctxT(t)
	id, err := c.BaseImage(ctx, "amd64")
	if err != nil || id != BaseImageID {
		t.Fatalf("BaseImage = %q, %v", id, err)
	}
	im, err := c.GetImage(ctx, id)
	if err != nil || im.State != provider.ImageAvailable {
		t.Fatalf("GetImage(base): %+v, %v", im, err)
	}
	if _, ok := im.Labels["crabbox"]; ok {
		t.Error("the base image carries crabbox ownership labels")
	}
	all, err := c.ListImages(ctx, nil)
	if err != nil || len(all) != 1 || all[0].ID != BaseImageID {
		t.Fatalf("ListImages(nil) = %v, %v", all, err)
	}
	if err := c.DeleteImage(ctx, id); !errors.Is(err, provider.ErrPermission) {
		t.Errorf("DeleteImage(base) = %v, want ErrPermission", err)
	}
	if err := c.UpdateImageLabels(ctx, id, map[string]string{"crabbox": "true"}); !errors.Is(err, provider.ErrPermission) {
		t.Errorf("UpdateImageLabels(base) = %v, want ErrPermission", err)
	}
	if c.ImageCount() != 0 {
		t.Errorf("ImageCount counts the base image")
	}
}

func TestChannels(t *testing.T) {
	c := Start(t)
	ctx := ctxT(t)
	if _, err := c.CurrentChannel(ctx, "default"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("unset channel: %v", err)
	}
	e, err := c.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: BaseImageID, IfVersion: -1, Operator: "me"})
	if err != nil || e.Version != 1 || e.Operator != "me" {
		t.Fatalf("first set: %+v, %v", e, err)
	}
	if _, err := c.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: BaseImageID, IfVersion: -1}); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("second never-set: %v", err)
	}
	if _, err := c.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: "img-nope"}); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("unknown image: %v", err)
	}
	if e, err := c.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: BaseImageID, IfVersion: 1}); err != nil || e.Version != 2 {
		t.Fatalf("conditional set: %+v, %v", e, err)
	}
	h, err := c.ChannelHistory(ctx, "default")
	if err != nil || len(h) != 2 || h[0].Version != 1 || h[1].Version != 2 {
		t.Fatalf("history: %+v, %v", h, err)
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

func TestCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	dir := c.Dir()
	var addrs []string
	for i := 0; i < 3; i++ {
		l := newLease(t, nil)
		m := boot(t, c, l)
		addrs = append(addrs, m.SSHAddr)
		cl, err := dialAs(m.SSHAddr, "crabbox", l.signer, l.hostKey)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		s, _ := startSleeper(t, cl, m.FSRoot)
		defer s.Close()
	}
	if c.MachineCount() != 3 {
		t.Fatalf("MachineCount = %d", c.MachineCount())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if nc, err := net.DialTimeout("tcp", a, 5*time.Second); err == nil {
			nc.Close()
			t.Errorf("%s still accepts connections after Close", a)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cloud dir %s still exists: %v", dir, err)
	}
	if _, err := c.GetMachine(ctxT(t), "x"); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("call after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Client-side goroutines end when the clients notice; allow some slack.
	eventually(t, "goroutines to wind down", func() bool { return runtime.NumGoroutine() <= before+12 })
}

func TestDesktopAndBrowser(t *testing.T) {
	var missing []string
	for _, tool := range append(cloudinit.ReadyTools(), "Xvfb", "xdotool", "chromium") {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("desktop tools missing: %v", missing)
		}
		t.Skipf("desktop tools missing: %v (install them)", missing)
	}
	c := Start(t)
	l := newLease(t, func(cfg *cloudinit.Config) { cfg.Desktop, cfg.Browser = true, true })
	m := boot(t, c, l)
	cl := dial(t, m, l)
	out := mustRun(t, cl, `echo "$DISPLAY $CRABBOX_DISPLAY"; xdotool getdisplaygeometry`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], ":") || lines[1] != "1280 800" {
		t.Fatalf("display check printed %q", out)
	}
	if out := mustRun(t, cl, cloudinit.ReadyShellCommand); strings.TrimSpace(out) != "ready" {
		t.Fatalf("ready command printed %q", out)
	}
	c.mu.Lock()
	xvfb := c.machines[m.ID].xvfb
	c.mu.Unlock()
	if err := c.DeleteMachine(ctxT(t), m.ID); err != nil {
		t.Fatal(err)
	}
	// The display server went with the machine (Delete waits for it).
	if xvfb.ProcessState == nil || alive(xvfb.Process.Pid) {
		t.Error("the machine's Xvfb still runs after delete")
	}
}

func TestPartitionMachine(t *testing.T) {
	c := Start(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	cl := dial(t, m, l)
	mustRun(t, cl, "true")

	if err := c.PartitionMachine(m.ID, true); err != nil {
		t.Fatal(err)
	}
	replied := make(chan error, 1)
	go func() {
		_, _, err := cl.SendRequest("keepalive@openssh.com", true, nil)
		replied <- err
	}()
	select {
	case err := <-replied:
		t.Fatalf("keepalive answered through a partition (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := c.PartitionMachine(m.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := <-replied; err != nil {
		t.Fatalf("keepalive after the partition healed: %v", err)
	}
	if out := mustRun(t, cl, "echo back"); out != "back\n" {
		t.Fatalf("after healing: %q", out)
	}

	// Close ends a partitioned machine too.
	if err := c.PartitionMachine(m.ID, true); err != nil {
		t.Fatal(err)
	}
	go func() { _, _, _ = cl.SendRequest("keepalive@openssh.com", true, nil) }()
	if err := c.PartitionMachine("m-missing", true); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("partition of a missing machine: %v", err)
	}
}
