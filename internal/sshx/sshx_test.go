package sshx_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/internal/sshx"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/internal/testenv/tcpproxy"
	"github.com/crabbox/crabbox-go/provider"
	"golang.org/x/crypto/ssh"
)

// testCtx bounds a test; hitting it is a failure (a hang), not a timing
// assertion.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func config(srv *sshd.Server) sshx.Config {
	return sshx.Config{Addr: srv.Addr, User: srv.User, Signer: srv.ClientKey.Signer, HostKey: srv.HostKey}
}

func newClient(t *testing.T, cfg sshx.Config) *sshx.Client {
	t.Helper()
	c, err := sshx.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// notifyWriter collects output and closes seen once it contains marker.
type notifyWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	seen   chan struct{}
	once   sync.Once
}

func newNotify(marker string) *notifyWriter {
	return &notifyWriter{marker: marker, seen: make(chan struct{})}
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.marker) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *notifyWriter) wait(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-w.seen:
	case <-ctx.Done():
		t.Fatalf("never saw %q in output", w.marker)
	}
}

type runResult struct {
	res sshx.Result
	err error
}

func goRun(ctx context.Context, c *sshx.Client, req sshx.Request) <-chan runResult {
	ch := make(chan runResult, 1)
	go func() {
		res, err := c.Run(ctx, req)
		ch <- runResult{res, err}
	}()
	return ch
}

func await(t *testing.T, ctx context.Context, ch <-chan runResult) runResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		t.Fatal("Run did not return: hang")
		return runResult{}
	}
}

func TestNewValidates(t *testing.T) {
	k := sshd.MustKey(t)
	good := sshx.Config{Addr: "127.0.0.1:22", User: "u", Signer: k.Signer, HostKey: k.PublicKey()}
	for name, mod := range map[string]func(*sshx.Config){
		"no host key": func(c *sshx.Config) { c.HostKey = nil },
		"no signer":   func(c *sshx.Config) { c.Signer = nil },
		"no user":     func(c *sshx.Config) { c.User = "" },
		"no addr":     func(c *sshx.Config) { c.Addr = "" },
		"bad addr":    func(c *sshx.Config) { c.Addr = "127.0.0.1" },
		"negative":    func(c *sshx.Config) { c.KeepAliveInterval = -1 },
	} {
		cfg := good
		mod(&cfg)
		if _, err := sshx.New(cfg); !errors.Is(err, provider.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
	if _, err := sshx.New(good); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}

func TestRunOutputAndExitCodes(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	c := newClient(t, config(srv))
	ctx := testCtx(t)

	var out, errb bytes.Buffer
	res, err := c.Run(ctx, sshx.Request{Command: "echo out; echo err >&2; whoami", Stdout: &out, Stderr: &errb})
	if err != nil || res.ExitCode != 0 || res.Signal != "" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if got, want := out.String(), "out\n"+srv.User+"\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if errb.String() != "err\n" {
		t.Errorf("stderr = %q", errb.String())
	}

	res, err = c.Run(ctx, sshx.Request{Command: "exit 3"})
	if err != nil || res.ExitCode != 3 || res.Signal != "" {
		t.Errorf("exit 3: Run = %+v, %v", res, err)
	}

	res, err = c.Run(ctx, sshx.Request{Command: "kill -KILL $$"})
	if err != nil || res.ExitCode != -1 || res.Signal != "KILL" {
		t.Errorf("killed: Run = %+v, %v", res, err)
	}

	var cat bytes.Buffer
	res, err = c.Run(ctx, sshx.Request{Command: "cat; echo done", Stdin: strings.NewReader("from stdin\n"), Stdout: &cat})
	if err != nil || res.ExitCode != 0 || cat.String() != "from stdin\ndone\n" {
		t.Errorf("stdin: Run = %+v, %v, stdout %q", res, err, cat.String())
	}
}

// Stdout and stderr into the same writer must not race (run with -race).
func TestRunSameWriter(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	c := newClient(t, config(srv))
	var buf bytes.Buffer
	res, err := c.Run(testCtx(t), sshx.Request{
		Command: "for i in $(seq 500); do echo o$i; echo e$i >&2; done",
		Stdout:  &buf, Stderr: &buf,
	})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1000 {
		t.Fatalf("got %d lines, want 1000", len(lines))
	}
}

// Output is delivered while the command runs: the command waits for stdin
// that the test only sends after seeing the first line.
func TestRunStreams(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	c := newClient(t, config(srv))
	ctx := testCtx(t)
	out := newNotify("first\n")
	pr, pw := io.Pipe()
	defer pw.Close()
	ch := goRun(ctx, c, sshx.Request{Command: "echo first; read x; echo second $x", Stdin: pr, Stdout: out})
	out.wait(t, ctx)
	io.WriteString(pw, "go\n")
	r := await(t, ctx, ch)
	if r.err != nil || r.res.ExitCode != 0 {
		t.Fatalf("Run = %+v, %v", r.res, r.err)
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	if got := out.buf.String(); got != "first\nsecond go\n" {
		t.Errorf("stdout = %q", got)
	}
}

// 30 concurrent commands on one connection against sshd's default
// MaxSessions 10: the refused channels are retried, all succeed.
func TestConcurrentRunsDefaultMaxSessions(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	// Count TCP connections: all Runs must share one.
	px := tcpproxy.Start(t, srv.Addr, 0)
	cfg := config(srv)
	cfg.Addr = px.Addr
	c := newClient(t, cfg)
	ctx := testCtx(t)
	const n = 30
	var wg sync.WaitGroup
	errs := make([]error, n)
	outs := make([]bytes.Buffer, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Run(ctx, sshx.Request{Command: fmt.Sprintf("sleep 0.5; echo %d", i), Stdout: &outs[i]})
			if err == nil && res.ExitCode != 0 {
				err = fmt.Errorf("exit %d", res.ExitCode)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("run %d: %v", i, errs[i])
		} else if got := outs[i].String(); got != fmt.Sprintf("%d\n", i) {
			t.Errorf("run %d: stdout %q", i, got)
		}
	}
	if a := px.Accepted(); a != 1 {
		t.Errorf("%d TCP connections, want 1 shared", a)
	}
}

func TestHostKeyMismatch(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	cfg := config(srv)
	other := sshd.MustKey(t)
	cfg.HostKey = other.PublicKey()
	c := newClient(t, cfg)
	ctx := testCtx(t)
	err := c.Connect(ctx)
	if !errors.Is(err, sshx.ErrHostKeyMismatch) {
		t.Fatalf("Connect err = %v, want ErrHostKeyMismatch", err)
	}
	if errors.Is(err, provider.ErrUnavailable) {
		t.Errorf("mismatch must not look retryable: %v", err)
	}
	for _, fp := range []string{ssh.FingerprintSHA256(srv.HostKey), ssh.FingerprintSHA256(other.PublicKey())} {
		if !strings.Contains(err.Error(), fp) {
			t.Errorf("error %q lacks fingerprint %s", err, fp)
		}
	}
	if _, err := c.Run(ctx, sshx.Request{Command: "true"}); !errors.Is(err, sshx.ErrHostKeyMismatch) {
		t.Errorf("Run err = %v, want ErrHostKeyMismatch", err)
	}

	// A pinned key of a type the server does not offer is a mismatch too.
	rsaSigner := rsaKey(t)
	cfg.HostKey = rsaSigner.PublicKey()
	c2 := newClient(t, cfg)
	if err := c2.Connect(ctx); !errors.Is(err, sshx.ErrHostKeyMismatch) {
		t.Errorf("other key type: err = %v, want ErrHostKeyMismatch", err)
	}
}

func TestAuthFailed(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	cfg := config(srv)
	cfg.Signer = sshd.MustKey(t).Signer
	c := newClient(t, cfg)
	err := c.Connect(testCtx(t))
	if !errors.Is(err, sshx.ErrAuthFailed) || !errors.Is(err, provider.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrAuthFailed and ErrUnavailable", err)
	}
}

// The box dies (sshd and all its children killed) while a command runs.
func TestBoxDiesMidCommand(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	c := newClient(t, config(srv))
	ctx := testCtx(t)
	out := newNotify("started")
	ch := goRun(ctx, c, sshx.Request{Command: "echo started; sleep 30", Stdout: out})
	out.wait(t, ctx)
	srv.Stop()
	r := await(t, ctx, ch)
	if !errors.Is(r.err, sshx.ErrConnectionLost) {
		t.Fatalf("Run = %+v, %v; want ErrConnectionLost", r.res, r.err)
	}
	if ctx.Err() != nil {
		t.Fatal("test context ended: Run hung")
	}
}

// The peer goes silent mid-command (traffic blackholed, nothing closed):
// only keepalives can notice.
func TestSilentPeerKeepalive(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	px := tcpproxy.Start(t, srv.Addr, 0)
	cfg := config(srv)
	cfg.Addr = px.Addr
	cfg.KeepAliveInterval = 200 * time.Millisecond
	cfg.KeepAliveMax = 3
	c := newClient(t, cfg)
	ctx := testCtx(t)
	// Answered keepalives keep a quiet command alive.
	if res, err := c.Run(ctx, sshx.Request{Command: "sleep 1.5"}); err != nil || res.ExitCode != 0 {
		t.Fatalf("quiet command under keepalives: %+v, %v", res, err)
	}
	out := newNotify("started")
	ch := goRun(ctx, c, sshx.Request{Command: "echo started; sleep 60", Stdout: out})
	out.wait(t, ctx)
	px.SetBlackhole(true)
	r := await(t, ctx, ch)
	if !errors.Is(r.err, sshx.ErrConnectionLost) {
		t.Fatalf("Run = %+v, %v; want ErrConnectionLost", r.res, r.err)
	}
	if !strings.Contains(r.err.Error(), "keepalive") {
		t.Errorf("error %q does not name keepalives", r.err)
	}

	// Traffic flows again: the next Run re-dials and works.
	px.SetBlackhole(false)
	res, err := c.Run(ctx, sshx.Request{Command: "true"})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run after recovery = %+v, %v", res, err)
	}
}

// A server that accepts TCP but never speaks SSH: Connect returns when ctx
// ends (deadline or cancellation).
func TestHandshakeHang(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	k := sshd.MustKey(t)
	c := newClient(t, sshx.Config{Addr: ln.Addr().String(), User: "u", Signer: k.Signer, HostKey: k.PublicKey()})
	guard := testCtx(t)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		done <- c.Connect(ctx)
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("deadline: err = %v, want DeadlineExceeded", err)
		}
	case <-guard.Done():
		t.Fatal("Connect hung past its deadline")
	}

	// HandshakeTimeout without a caller deadline: a retryable error.
	cfg := sshx.Config{Addr: ln.Addr().String(), User: "u", Signer: k.Signer, HostKey: k.PublicKey(),
		HandshakeTimeout: 300 * time.Millisecond}
	c2 := newClient(t, cfg)
	go func() { done <- c2.Connect(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, provider.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("handshake timeout: err = %v, want ErrUnavailable (not the caller's deadline)", err)
		}
	case <-guard.Done():
		t.Fatal("Connect hung past HandshakeTimeout")
	}

	// Cancellation without a deadline.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- c.Connect(ctx) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancel: err = %v, want Canceled", err)
		}
	case <-guard.Done():
		t.Fatal("Connect hung after cancel")
	}
}

// Cancelling a running command returns the ctx error, kills the remote
// command and leaves the shared connection usable.
func TestCancelRunningCommand(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	px := tcpproxy.Start(t, srv.Addr, 0)
	cfg := config(srv)
	cfg.Addr = px.Addr
	c := newClient(t, cfg)
	guard := testCtx(t)

	ctx, cancel := context.WithCancel(guard)
	out := newNotify("started")
	ch := goRun(ctx, c, sshx.Request{Command: "echo started; exec sleep 31", Stdout: out})
	out.wait(t, guard)
	cancel()
	r := await(t, guard, ch)
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Run = %+v, %v; want context.Canceled", r.res, r.err)
	}

	// Same connection still works.
	var ps bytes.Buffer
	for {
		ps.Reset()
		res, err := c.Run(guard, sshx.Request{Command: `ps -u $(id -u) -o stat=,comm= | awk '$1 !~ /Z/ && $2 == "sleep"'`, Stdout: &ps})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("Run after cancel = %+v, %v", res, err)
		}
		if ps.Len() == 0 {
			break // the remote sleep was killed
		}
		select {
		case <-guard.Done():
			t.Fatalf("remote command still running after cancel: pids %q", ps.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if a := px.Accepted(); a != 1 {
		t.Errorf("%d TCP connections, want the first one reused", a)
	}
}

// sshd restarts (same host key, same address): the next Run re-dials.
func TestRedialAfterRestart(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	c := newClient(t, config(srv))
	ctx := testCtx(t)
	if res, err := c.Run(ctx, sshx.Request{Command: "true"}); err != nil || res.ExitCode != 0 {
		t.Fatalf("first Run = %+v, %v", res, err)
	}
	srv.Stop()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if res, err := c.Run(ctx, sshx.Request{Command: "echo again", Stdout: &out}); err != nil || res.ExitCode != 0 {
		t.Fatalf("Run after restart = %+v, %v", res, err)
	}
	if out.String() != "again\n" {
		t.Errorf("stdout = %q", out.String())
	}
}

// breakableConn fails all writes once broken, while reads just block: a
// connection that is dead but not yet noticed.
type breakableConn struct {
	net.Conn
	broken *atomic.Bool
}

func (b breakableConn) Write(p []byte) (int, error) {
	if b.broken.Load() {
		return 0, errors.New("broken pipe (test)")
	}
	return b.Conn.Write(p)
}

// A connection found broken when a new command starts is re-dialled once.
func TestRedialOnceWhenFoundBroken(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	cfg := config(srv)
	var dials atomic.Int32
	var broken []*atomic.Bool
	var mu sync.Mutex
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		b := &atomic.Bool{}
		mu.Lock()
		broken = append(broken, b)
		mu.Unlock()
		return breakableConn{nc, b}, nil
	}
	c := newClient(t, cfg)
	ctx := testCtx(t)
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	broken[0].Store(true)
	mu.Unlock()
	res, err := c.Run(ctx, sshx.Request{Command: "true"})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if d := dials.Load(); d != 2 {
		t.Errorf("%d dials, want 2", d)
	}

}

// Readiness: Connect fails cleanly (retryably) while nothing listens, then
// succeeds once sshd starts late. The caller owns the loop.
func TestConnectWhileSSHDStartsLate(t *testing.T) {
	srv := sshd.New(t, sshd.Options{})
	c := newClient(t, config(srv))
	guard := testCtx(t)
	failures := 0
	started := false
	for {
		ctx, cancel := context.WithTimeout(guard, 2*time.Second)
		err := c.Connect(ctx)
		cancel()
		if err == nil {
			break
		}
		if !errors.Is(err, provider.ErrUnavailable) || errors.Is(err, sshx.ErrHostKeyMismatch) {
			t.Fatalf("Connect before sshd runs: %v; want a retryable ErrUnavailable", err)
		}
		failures++
		if failures == 3 && !started {
			started = true
			go func() {
				if err := srv.Start(); err != nil {
					t.Errorf("late start: %v", err)
				}
			}()
		}
		select {
		case <-guard.Done():
			t.Fatalf("never connected: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if failures < 3 {
		t.Fatalf("connected after %d failures before sshd was started", failures)
	}
	if res, err := c.Run(guard, sshx.Request{Command: "true"}); err != nil || res.ExitCode != 0 {
		t.Fatalf("Run = %+v, %v", res, err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	c := newClient(t, config(srv))
	ctx := testCtx(t)
	out := newNotify("started")
	ch := goRun(ctx, c, sshx.Request{Command: "echo started; sleep 30", Stdout: out})
	out.wait(t, ctx)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if r := await(t, ctx, ch); r.err == nil {
		t.Errorf("running command survived Close: %+v", r.res)
	}
	if _, err := c.Run(ctx, sshx.Request{Command: "true"}); !errors.Is(err, sshx.ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
}

func rsaKey(t *testing.T) ssh.Signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The server closes a quiet session (ChannelTimeout) while the connection
// stays up: the Run reports that the session ended, not a lost connection,
// and the connection keeps serving.
func TestSessionClosedByServerIsNotConnectionLost(t *testing.T) {
	// OpenSSH 9.2's spelling of "close a command's session after 1 s
	// without traffic".
	for _, timeout := range []string{"session:command=1"} {
		t.Run(timeout, func(t *testing.T) {
			srv := sshd.Start(t, sshd.Options{Extra: []string{"ChannelTimeout " + timeout}})
			px := tcpproxy.Start(t, srv.Addr, 0)
			cfg := config(srv)
			cfg.Addr = px.Addr
			c := newClient(t, cfg)
			ctx := testCtx(t)
			r := await(t, ctx, goRun(ctx, c, sshx.Request{Command: "sleep 4"}))
			if r.err == nil {
				t.Skipf("sshd did not close the quiet session (%s unsupported): %+v", timeout, r.res)
			}
			if errors.Is(r.err, sshx.ErrConnectionLost) {
				t.Fatalf("Run err = %v: a session the server closed is not a lost connection", r.err)
			}
			if !errors.Is(r.err, sshx.ErrSessionEnded) {
				t.Fatalf("Run err = %v, want ErrSessionEnded", r.err)
			}
			if !strings.Contains(r.err.Error(), "session") {
				t.Errorf("error %q does not say the session ended", r.err)
			}
			res, err := c.Run(ctx, sshx.Request{Command: "true"})
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("next Run = %+v, %v", res, err)
			}
			if a := px.Accepted(); a != 1 {
				t.Errorf("%d TCP connections, want the one connection kept", a)
			}
		})
	}
}

// MaxSessions 1: a Run waiting for the one slot proceeds when the command
// holding it ends, on that signal alone (the fallback poll is set far
// beyond the test's bound, so it cannot be what lets the waiter through).
func TestSlotWaiterProceedsWhenSlotFrees(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{Extra: []string{"MaxSessions 1"}})
	cfg := config(srv)
	cfg.SlotRetry = time.Hour
	c := newClient(t, cfg)
	ctx := testCtx(t)
	for round := range 5 {
		release := make(chan struct{})
		out := newNotify("holding")
		holder := goRun(ctx, c, sshx.Request{Command: "echo holding; read line", Stdout: out, Stdin: chanReader(release)})
		out.wait(t, ctx)
		waiter := goRun(ctx, c, sshx.Request{Command: "echo waited"})
		close(release)
		if r := await(t, ctx, holder); r.err != nil || r.res.ExitCode != 0 {
			t.Fatalf("round %d: holder = %+v, %v", round, r.res, r.err)
		}
		if r := await(t, ctx, waiter); r.err != nil || r.res.ExitCode != 0 {
			t.Fatalf("round %d: waiter = %+v, %v", round, r.res, r.err)
		}
	}
}

// chanReader returns a reader that yields one line once release is closed,
// then EOF.
func chanReader(release <-chan struct{}) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		<-release
		_, _ = pw.Write([]byte("go\n"))
		pw.Close()
	}()
	return pr
}
