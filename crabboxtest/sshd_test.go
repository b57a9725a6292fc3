// Tests of sshd.go: commands, environment, auth, sessions, signals.

package crabboxtest

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
)

func TestRunCommandEnvAndExitCode(t *testing.T) {
	c := Start(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	cl := dial(t, m.Machine, l)

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
	cl := dial(t, m.Machine, l)

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
	cl := dial(t, m.Machine, l)

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
