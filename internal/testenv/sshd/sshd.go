// Package sshd runs a real OpenSSH sshd on a loopback address for tests.
//
// Each Server has its own config, host key, authorized_keys and pid file in
// a temporary directory, and (unless Options.User is set) its own freshly
// created Unix user (internal/testenv/hostuser), removed on cleanup. Tests
// must run as root. If sshd is missing, Start skips the test, or fails it
// when the environment variable CI is "true". Prepare is the same outside
// of a test, returning errors; its caller closes the Server.
//
//	srv := sshd.Start(t, sshd.Options{})
//	// srv.Addr, srv.User, srv.HostKey, srv.ClientKey.Signer
package sshd

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
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

	"github.com/crabbox/crabbox-go/internal/testenv/hostuser"
	"github.com/crabbox/crabbox-go/internal/testenv/ports"
)

// Binary is the sshd used.
const Binary = "/usr/sbin/sshd"

// Key is an ed25519 key pair usable as a host key or a client key.
type Key struct {
	Signer ssh.Signer
	// PEM is the private key in OpenSSH format.
	PEM []byte
}

// PublicKey returns the public half.
func (k *Key) PublicKey() ssh.PublicKey { return k.Signer.PublicKey() }

// AuthorizedKey returns the public key as an authorized_keys line.
func (k *Key) AuthorizedKey() []byte { return ssh.MarshalAuthorizedKey(k.Signer.PublicKey()) }

// NewKey generates an ed25519 key.
func NewKey() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "crabbox-test")
	if err != nil {
		return nil, err
	}
	return &Key{Signer: signer, PEM: pem.EncodeToMemory(block)}, nil
}

// MustKey is NewKey that fails t on error.
func MustKey(t testing.TB) *Key {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatalf("sshd: generate key: %v", err)
	}
	return k
}

// Options configure a Server.
type Options struct {
	// User is the login user. "" creates a fresh user (cbxt + digits, home
	// directory, /bin/bash, unlocked for key login) removed on cleanup.
	User string
	// AuthorizedKeys are authorized_keys lines. If empty, a client key is
	// generated, authorized and returned as Server.ClientKey.
	AuthorizedKeys [][]byte
	// HostKey is the server's host key; nil generates one.
	HostKey *Key
	// Addr is the listen address; "" picks 127.0.0.1 and a free port.
	// Any 127.0.0.0/8 address works, e.g. "127.77.0.5:22".
	Addr string
	// Extra sshd_config lines. They are written before the harness's own
	// lines, so they take precedence (sshd uses the first value it reads).
	// OpenSSH defaults apply otherwise, notably MaxSessions 10 and
	// MaxStartups 10:30:100: tests that change them should say why.
	Extra []string
}

// Server is one sshd. Its methods are safe for concurrent use.
type Server struct {
	// Addr is host:port of the listener.
	Addr string
	// User is the login user.
	User string
	// HostKey is the server's public host key, to pin in clients.
	HostKey ssh.PublicKey
	// HostKeyPair is the server's host key pair.
	HostKeyPair *Key
	// ClientKey is the generated client key, when Options.AuthorizedKeys
	// was empty; nil otherwise.
	ClientKey *Key
	// Dir is the server's temporary directory.
	Dir string

	cfgPath string
	uid     int            // of a user we created, else -1
	owned   *hostuser.User // the user we created, released by Close

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncBuffer
}

// Available reports whether a usable sshd is installed.
func Available() error {
	fi, err := os.Stat(Binary)
	if err != nil {
		return fmt.Errorf("sshd not installed (apt-get install -y openssh-server): %w", err)
	}
	if fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", Binary)
	}
	if os.Geteuid() != 0 {
		return errors.New("the sshd test harness must run as root")
	}
	for _, tool := range []string{"useradd", "usermod", "userdel"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: %w", tool, err)
		}
	}
	return nil
}

// Require skips t (or fails it if CI=true) when sshd is not available.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("sshd required in CI: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
}

// Start prepares and starts an sshd, waits until it accepts connections,
// and registers its shutdown with t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := New(t, opts)
	if err := s.Start(); err != nil {
		t.Fatalf("sshd: %v", err)
	}
	return s
}

// New prepares an sshd (user, keys, config, address) without starting it,
// so that a test can start it late with Start. Cleanup (Close) is
// registered with t; a failed test logs sshd's output first.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	Require(t)
	s, err := Prepare(opts)
	if err != nil {
		t.Fatalf("sshd: %v", err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshd %s log:\n%s", s.Addr, s.Log())
		}
		if err := s.Close(); err != nil {
			t.Logf("sshd: %v", err)
		}
	})
	return s
}

// Prepare is New outside of a test: it returns errors (Available's when
// sshd is unusable) instead of failing a test, and the caller must Close
// the server.
func Prepare(opts Options) (s *Server, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cbx-sshd-")
	if err != nil {
		return nil, err
	}
	s = &Server{Dir: dir, uid: -1, HostKeyPair: opts.HostKey}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
			s = nil
		}
	}()
	// The session child reads authorized_keys as the login user.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	if s.HostKeyPair == nil {
		if s.HostKeyPair, err = NewKey(); err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
	}
	s.HostKey = s.HostKeyPair.PublicKey()
	authorized := opts.AuthorizedKeys
	if len(authorized) == 0 {
		if s.ClientKey, err = NewKey(); err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
		authorized = [][]byte{s.ClientKey.AuthorizedKey()}
	}

	s.User = opts.User
	if s.User == "" {
		u, err := hostuser.Fresh("cbxt")
		if err != nil {
			return nil, err
		}
		s.User, s.uid, s.owned = u.Name, u.UID, u
	}

	s.Addr = opts.Addr
	if s.Addr == "" {
		if s.Addr, err = freeAddr("127.0.0.1"); err != nil {
			return nil, err
		}
	}
	host, port, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", s.Addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%q is not a loopback address", s.Addr)
	}

	hostKeyPath := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := os.WriteFile(hostKeyPath, s.HostKeyPair.PEM, 0o600); err != nil {
		return nil, err
	}
	var ak bytes.Buffer
	for _, line := range authorized {
		ak.Write(bytes.TrimRight(line, "\n"))
		ak.WriteByte('\n')
	}
	akPath := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(akPath, ak.Bytes(), 0o644); err != nil {
		return nil, err
	}
	var cfg strings.Builder
	for _, l := range opts.Extra {
		cfg.WriteString(l + "\n")
	}
	fmt.Fprintf(&cfg, `ListenAddress %s
HostKey %s
PidFile %s
AuthorizedKeysFile %s
AllowUsers %s
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
PermitRootLogin prohibit-password
UseDNS no
PrintMotd no
Subsystem sftp internal-sftp
`, net.JoinHostPort(host, port), hostKeyPath, filepath.Join(dir, "sshd.pid"), akPath, s.User)
	s.cfgPath = filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(s.cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return nil, err
	}
	return s, nil
}

// Close stops sshd (Stop), removes the user the harness created (with
// everything still running as it) and the server's directory. Close is
// idempotent; the server cannot be started again.
func (s *Server) Close() error {
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.owned != nil {
		err = s.owned.Release()
	}
	return errors.Join(err, os.RemoveAll(s.Dir))
}

// Start starts the prepared sshd (again, after Stop: same address, same
// host key) and waits until it accepts connections. It may be called from
// any goroutine.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("sshd already running")
	}
	if s.log == nil {
		s.log = &syncBuffer{}
	}
	cmd := exec.Command(Binary, "-D", "-e", "-f", s.cfgPath)
	cmd.Stdout = s.log
	cmd.Stderr = s.log
	// Own process group, so that Stop can find what it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", Binary, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("sshd on %s exited: %s", s.Addr, s.log.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.killLocked()
			return fmt.Errorf("sshd on %s not listening after 15s: %s", s.Addr, s.log.String())
		}
	}
}

// Stop kills sshd and every process it started (connection handlers, the
// user's commands, and, for a user the harness created, everything running
// as that user): the box dies, clients see their connections drop. Stop is
// idempotent; Start brings sshd back.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

// Running reports whether sshd is running.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Log returns what sshd wrote to stderr so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

func (s *Server) killLocked() {
	if s.cmd == nil {
		return
	}
	root := s.cmd.Process.Pid
	// Repeat: processes may fork while we kill.
	for range 5 {
		pids := descendants(root, s.uid)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(5 * time.Millisecond)
	}
	<-s.done
	s.cmd = nil
}

// descendants lists root and its living descendants, plus every process of
// uid if uid >= 0.
func descendants(root, uid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{root}
	}
	children := map[int][]int{}
	var out []int
	seen := map[int]bool{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, puid, state, ok := hostuser.ProcInfo(pid)
		if !ok || state == "Z" {
			continue
		}
		children[ppid] = append(children[ppid], pid)
		if uid >= 0 && puid == uid && !seen[pid] {
			seen[pid] = true
			out = append(out, pid)
		}
	}
	if _, _, state, ok := hostuser.ProcInfo(root); ok && state != "Z" && !seen[root] {
		seen[root] = true
		out = append(out, root)
	}
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
			queue = append(queue, c)
		}
	}
	return out
}

// freeAddr returns host:port with a port that was free a moment ago and
// that no ":0" listener of another test can be given before sshd binds it.
func freeAddr(host string) (string, error) { return ports.Addr(host) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
