package sshd_test

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"golang.org/x/crypto/ssh"
)

func dial(t *testing.T, s *sshd.Server) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", s.Addr, &ssh.ClientConfig{
		User:            s.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(s.ClientKey.Signer)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatalf("dial %s: %v\n%s", s.Addr, err, s.Log())
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func output(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	out, err := sess.Output(cmd)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return string(out)
}

func TestLoginAsFreshUserOnCustomAddr(t *testing.T) {
	s := sshd.Start(t, sshd.Options{Addr: "127.77.0.5:22", Extra: []string{"MaxSessions 2"}})
	if s.Addr != "127.77.0.5:22" || !strings.HasPrefix(s.User, "cbxt") {
		t.Fatalf("server %+v", s)
	}
	c := dial(t, s)
	if got := output(t, c, "whoami; echo $HOME; echo $SHELL"); got != s.User+"\n/home/"+s.User+"\n/bin/bash\n" {
		t.Errorf("got %q", got)
	}
	// Extra lines take precedence: the third concurrent session is refused.
	var sessions []*ssh.Session
	var err error
	for range 3 {
		var sess *ssh.Session
		if sess, err = c.NewSession(); err != nil {
			break
		}
		sessions = append(sessions, sess)
	}
	for _, sess := range sessions {
		sess.Close()
	}
	if _, ok := err.(*ssh.OpenChannelError); !ok || len(sessions) != 2 {
		t.Errorf("MaxSessions 2: opened %d sessions, err %v", len(sessions), err)
	}
}

func TestStopKillsBoxAndRestartKeepsIdentity(t *testing.T) {
	s := sshd.Start(t, sshd.Options{})
	c := dial(t, s)
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	sess.Stdout = pw
	// A command that detaches from its parent must die too.
	if err := sess.Start("(setsid sleep 40 &); echo $$; sleep 30"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	line := make([]byte, 1)
	if _, err := pr.Read(line); err != nil { // the command is running
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	s.Stop()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("session survived Stop")
	}
	if s.Running() {
		t.Error("Running after Stop")
	}
	if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		c.Close()
		t.Error("still listening after Stop")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	c2 := dial(t, s) // FixedHostKey: same host key after restart
	// Nothing of the user survived the Stop (zombies are dead: this
	// machine's init reaps orphans late).
	if got := output(t, c2, `ps -u $(id -u) -o stat=,comm= | awk '$1 !~ /Z/ && $2 == "sleep"'`); got != "" {
		t.Errorf("sleep processes survived Stop: %q", got)
	}
}

func TestLateStart(t *testing.T) {
	s := sshd.New(t, sshd.Options{})
	if s.Running() {
		t.Fatal("New started sshd")
	}
	if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		c.Close()
		t.Fatal("listening before Start")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	dial(t, s)
}
