// Package sshx is crabbox's SSH transport: one lazily dialled SSH connection
// per box, shared by concurrent commands, with a strictly pinned host key,
// context-bounded handshakes, keepalives that detect a silent peer, retries
// when the server has no free session slot, and typed errors for a lost
// connection or a host key mismatch.
//
// Package sshx is internal; the root package crabbox wraps it.
package sshx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crabbox/crabbox-go/provider"
	"golang.org/x/crypto/ssh"
)

// Sentinel errors. Errors returned by this package wrap them so that
// errors.Is works.
var (
	// ErrHostKeyMismatch: the server presented a host key other than the
	// pinned one (or offers no key of the pinned key's type). Permanent:
	// never retried, never accepted.
	ErrHostKeyMismatch = errors.New("ssh host key mismatch")
	// ErrConnectionLost: the connection died (EOF, reset, missed keepalive
	// replies) while a command ran. Whether the command finished on the box
	// is unknown.
	ErrConnectionLost = errors.New("ssh connection lost")
	// ErrAuthFailed: the server rejected the client key. Errors carrying it
	// also carry provider.ErrUnavailable, because a booting box may not have
	// installed its authorized_keys yet; callers that wait for readiness
	// retry it until their deadline.
	ErrAuthFailed = errors.New("ssh authentication failed")
	// ErrSessionEnded: the server closed the session of a running command
	// (e.g. an idle-channel timeout, or the session process killed) while
	// the connection stayed up. Whether the command finished is unknown; the
	// connection keeps serving other commands.
	ErrSessionEnded = errors.New("ssh session ended by the server")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("ssh client closed")
)

// Defaults for zero Config fields. With the keepalive defaults a silent or
// frozen peer is declared lost between 15 s and 20 s after it stopped
// answering: (KeepAliveMax+1) x KeepAliveInterval at most.
const (
	DefaultKeepAliveInterval = 5 * time.Second
	DefaultKeepAliveMax      = 3
	DefaultSlotRetry         = 50 * time.Millisecond
	DefaultHandshakeTimeout  = 30 * time.Second
	maxSlotRetry             = time.Second
	fastSlotRetry            = time.Millisecond
	maxFastSlotRetry         = 64 * time.Millisecond
)

// Config describes one SSH endpoint.
type Config struct {
	// Addr is host:port.
	Addr string
	// User is the login user.
	User string
	// Signer is the client key.
	Signer ssh.Signer
	// HostKey is the box's host key. Required; pinned strictly.
	HostKey ssh.PublicKey
	// Dial opens the TCP connection. nil means (&net.Dialer{}).DialContext.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// KeepAliveInterval is the interval between keepalive@openssh.com
	// requests. 0 means DefaultKeepAliveInterval.
	KeepAliveInterval time.Duration
	// KeepAliveMax is the number of consecutive intervals without a reply
	// after which the connection is declared dead and closed. 0 means
	// DefaultKeepAliveMax.
	KeepAliveMax int
	// HandshakeTimeout bounds one dial plus SSH handshake, in addition to
	// the caller's context, so that a box that accepts TCP but never
	// completes the handshake yields a retryable error (wrapping
	// provider.ErrUnavailable) rather than eating the caller's whole
	// deadline. 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// SlotRetry is the fallback poll while the server refuses a session
	// channel (OpenSSH MaxSessions) and none of our sessions closes; it
	// doubles up to 1s (or stays, if larger). A waiting Run does not depend
	// on it: it retries as soon as one of our sessions closes. 0 means
	// DefaultSlotRetry.
	SlotRetry time.Duration
}

// Request is one command to run.
type Request struct {
	// Command is passed to the remote user's shell.
	Command string
	// Stdin, if not nil, is copied to the command's standard input, which
	// is closed at EOF. Run does not wait for the copy: if the command
	// exits before reading all of Stdin, Run returns and the copy may still
	// read from Stdin until it fails or ends.
	Stdin io.Reader
	// Stdout and Stderr receive the command's output as it arrives. Either
	// may be nil (discarded); they may be the same writer (writes are
	// serialised). Nothing is written to them after Run returns. They
	// should not block: a blocked write delays Run's return, even on
	// cancellation.
	Stdout io.Writer
	Stderr io.Writer
}

// Result is how a command ended.
type Result struct {
	// ExitCode is the exit status, or -1 if the command died by a signal.
	ExitCode int
	// Signal is the signal name without "SIG" (e.g. "KILL") if the command
	// died by a signal.
	Signal string
}

// Client is one SSH connection to one box, dialled lazily and shared by
// concurrent Runs. It is safe for concurrent use.
type Client struct {
	cfg Config

	dialSem chan struct{} // held while dialling, so that dials respect ctx
	mu      sync.Mutex
	cur     *conn
	closed  bool
}

// conn is one established SSH connection.
type conn struct {
	client *ssh.Client
	dead   chan struct{} // closed when the connection is gone
	once   sync.Once
	mu     sync.Mutex
	err    error // why it died

	// Session slot accounting: OpenSSH's MaxSessions counts the sessions
	// of one connection, so a slot frees when one of our own sessions
	// closes. Waiters for a slot get a token per closed session.
	slotMu  sync.Mutex
	waiters int    // Runs between a refusal and their session
	open    int    // our sessions opened and not yet closed
	closes  uint64 // sessions closed so far
	freed   chan struct{}

	// A session opened right after the handshake, alongside whatever the
	// caller runs first, and kept for the next Run: that Run's channel
	// open has already made its round trip (on a fresh connection the
	// readiness command is the first Run, the caller's first command or
	// smoke the second). spareReady is closed once the open succeeded or
	// failed; spare is the session, until a Run takes it. The first Run
	// does not wait for the spare's open (its own runs beside it); later
	// Runs do, since that open was sent before theirs would be.
	spareMu    sync.Mutex
	spare      *ssh.Session
	spareReady chan struct{}
	runs       atomic.Int32 // Runs that asked for a session
}

// preopen opens the spare session in the background.
func (c *conn) preopen() {
	c.spareReady = make(chan struct{})
	go func() {
		defer close(c.spareReady)
		s, err := c.client.NewSession()
		if err != nil {
			return // refused (MaxSessions) or the connection died
		}
		c.sessionOpened()
		c.spareMu.Lock()
		c.spare = s
		c.spareMu.Unlock()
	}()
}

// takeSpare returns the spare session if it is open (waiting for its open
// to resolve when wait is set and ctx allows), or nil.
func (c *conn) takeSpare(ctx context.Context, wait bool) *ssh.Session {
	if c.spareReady == nil {
		return nil
	}
	if wait {
		select {
		case <-c.spareReady:
		case <-ctx.Done():
			return nil
		}
	} else {
		select {
		case <-c.spareReady:
		default:
			return nil
		}
	}
	c.spareMu.Lock()
	defer c.spareMu.Unlock()
	s := c.spare
	c.spare = nil
	return s
}

// sessionOpened counts a session we opened.
func (c *conn) sessionOpened() {
	c.slotMu.Lock()
	c.open++
	c.slotMu.Unlock()
}

// sessionClosed counts a closed session and wakes one slot waiter, if any.
// Our channel close was sent before this call, and messages on a connection
// stay in order, so a channel open sent after it reaches the server after
// the close.
func (c *conn) sessionClosed() {
	c.slotMu.Lock()
	c.open--
	c.closes++
	w := c.waiters
	c.slotMu.Unlock()
	if w > 0 {
		select {
		case c.freed <- struct{}{}:
		default:
		}
	}
}

// closed returns how many of our sessions have closed so far.
func (c *conn) closedSessions() uint64 {
	c.slotMu.Lock()
	defer c.slotMu.Unlock()
	return c.closes
}

// slotWait is one Run's wait for a session slot, from the server's first
// refusal until the Run has its session (done). While it lasts the Run is
// counted as a waiter, so a session closing meanwhile leaves it a token.
//
// A refusal while a slot is being freed (a session of ours closed since the
// refused open was sent, or none of ours is open at all, or a token woke the
// waiter) is the server still tearing the closed channel down: OpenSSH
// frees the slot after it has handled the close, a moment after our next
// open may arrive. The waiter then retries after short, doubling pauses
// (fastSlotRetry up to maxFastSlotRetry) rather than going back to the
// queue. Otherwise it waits for a token, with a fallback poll (SlotRetry
// doubling up to maxSlotRetry) for refusals that no close of ours ends.
type slotWait struct {
	nc       *conn
	fallback time.Duration
	fast     time.Duration // > 0 while retrying a slot being freed
}

func (c *conn) newSlotWait(fallback time.Duration) *slotWait {
	c.slotMu.Lock()
	c.waiters++
	c.slotMu.Unlock()
	return &slotWait{nc: c, fallback: fallback}
}

func (w *slotWait) done() {
	w.nc.slotMu.Lock()
	w.nc.waiters--
	w.nc.slotMu.Unlock()
}

// wait returns when the next open is worth trying, or ctx.Err(). sent is
// closedSessions() when the refused open was sent.
func (w *slotWait) wait(ctx context.Context, sent uint64) error {
	nc := w.nc
	nc.slotMu.Lock()
	freeing := nc.closes != sent || nc.open <= 0
	nc.slotMu.Unlock()
	if freeing && w.fast == 0 {
		w.fast = fastSlotRetry
	}
	if w.fast > 0 && w.fast <= maxFastSlotRetry {
		d := w.fast
		w.fast *= 2
		return sleepCtx(ctx, d, nc.dead)
	}
	w.fast = 0
	t := time.NewTimer(w.fallback)
	defer t.Stop()
	select {
	case <-t.C:
		w.fallback = min(2*w.fallback, max(maxSlotRetry, w.fallback))
	case <-nc.freed:
		w.fast = fastSlotRetry
	case <-nc.dead:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// sleepCtx waits d, or until dead is closed or ctx ends (ctx.Err()).
func sleepCtx(ctx context.Context, d time.Duration, dead <-chan struct{}) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-dead:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func (c *conn) kill(err error) {
	c.once.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.dead)
		c.client.Close()
	})
}

func (c *conn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

func (c *conn) deathErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// ClientVersion is the identification line the client sends (RFC 4253
// section 4.2), without its CR LF. A caller that probes the port may send
// it first, before reading the server's line, and hand ConnectOver a
// connection that drops the client's own identical first write: the
// server's key exchange then starts a round trip sooner.
const ClientVersion = "SSH-2.0-Go"

// New validates cfg and returns a Client. It does not dial.
func New(cfg Config) (*Client, error) {
	switch {
	case cfg.Addr == "":
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshx: empty address")
	case cfg.User == "":
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshx: empty user")
	case cfg.Signer == nil:
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshx: no client key")
	case cfg.HostKey == nil:
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshx: no pinned host key for %s", cfg.Addr)
	case cfg.KeepAliveInterval < 0 || cfg.KeepAliveMax < 0 || cfg.SlotRetry < 0 || cfg.HandshakeTimeout < 0:
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshx: negative keepalive or retry setting")
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshx: address %q: %v", cfg.Addr, err)
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	if cfg.KeepAliveInterval == 0 {
		cfg.KeepAliveInterval = DefaultKeepAliveInterval
	}
	if cfg.KeepAliveMax == 0 {
		cfg.KeepAliveMax = DefaultKeepAliveMax
	}
	if cfg.SlotRetry == 0 {
		cfg.SlotRetry = DefaultSlotRetry
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	return &Client{cfg: cfg, dialSem: make(chan struct{}, 1)}, nil
}

// Connect dials and authenticates if the Client has no live connection. The
// whole dial and handshake is bounded by ctx. A host key other than the pinned
// one yields an error wrapping ErrHostKeyMismatch; a rejected client key an
// error wrapping ErrAuthFailed and provider.ErrUnavailable; other network and
// handshake failures wrap provider.ErrUnavailable.
func (c *Client) Connect(ctx context.Context) error {
	_, err := c.conn(ctx, nil)
	return err
}

// Connected reports whether the Client has a live connection.
func (c *Client) Connected() bool {
	cur, _ := c.live(nil)
	return cur != nil
}

// ConnectOver is Connect over tcp, a connection the caller already dialled
// (e.g. by a readiness probe that saw the server's banner), saving a dial.
// If the Client already has a live connection, tcp is closed and nil
// returned. The handshake is bounded by ctx and HandshakeTimeout; errors are
// classified as Connect's. tcp is closed on any error.
func (c *Client) ConnectOver(ctx context.Context, tcp net.Conn) error {
	if cur, err := c.live(nil); cur != nil || err != nil {
		tcp.Close()
		return err
	}
	select {
	case c.dialSem <- struct{}{}:
	case <-ctx.Done():
		tcp.Close()
		return fmt.Errorf("sshx: connect %s: %w", c.cfg.Addr, ctx.Err())
	}
	defer func() { <-c.dialSem }()
	if cur, err := c.live(nil); cur != nil || err != nil {
		tcp.Close()
		return err
	}
	hctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	if dl, ok := hctx.Deadline(); ok {
		_ = tcp.SetDeadline(dl)
	}
	nc, err := c.boundHandshake(ctx, func() (*conn, error) { return c.handshakeOver(hctx, tcp) })
	if err != nil {
		return err
	}
	return c.install(nc)
}

// install makes nc the live connection.
func (c *Client) install(nc *conn) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		nc.kill(ErrClosed)
		return ErrClosed
	}
	if c.cur != nil {
		c.cur.kill(ErrConnectionLost)
	}
	nc.preopen()
	c.cur = nc
	return nil
}

// conn returns the live connection, dialling if there is none or if the
// current one is broken (or is stale, the one the caller found broken).
func (c *Client) conn(ctx context.Context, stale *conn) (*conn, error) {
	if cur, err := c.live(stale); cur != nil || err != nil {
		return cur, err
	}
	select {
	case c.dialSem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("sshx: connect %s: %w", c.cfg.Addr, ctx.Err())
	}
	defer func() { <-c.dialSem }()
	// Someone else may have dialled while we waited.
	if cur, err := c.live(stale); cur != nil || err != nil {
		return cur, err
	}
	nc, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.install(nc); err != nil {
		return nil, err
	}
	return nc, nil
}

func (c *Client) live(stale *conn) (*conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.cur != nil && c.cur != stale && !c.cur.isDead() {
		return c.cur, nil
	}
	return nil, nil
}

// ctxExpired reports whether ctx has ended or its deadline has passed (the
// connection deadline may fire a moment before ctx notices).
func ctxExpired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

func hostKeyAlgorithms(k ssh.PublicKey) []string {
	if k.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{k.Type()}
}

// dial connects, bounded by ctx and by HandshakeTimeout.
func (c *Client) dial(ctx context.Context) (*conn, error) {
	hctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	return c.boundHandshake(ctx, func() (*conn, error) { return c.handshake(hctx) })
}

// boundHandshake runs hs, bounded by HandshakeTimeout below ctx, and turns
// the expiry of that bound into a retryable error.
func (c *Client) boundHandshake(ctx context.Context, hs func() (*conn, error)) (*conn, error) {
	nc, err := hs()
	// A deadline error while the caller's own deadline has not passed is
	// our bound. (Timers fire a little late, so compare times rather than
	// asking the contexts whether they are done yet.)
	callerDL, hasCallerDL := ctx.Deadline()
	ours := ctx.Err() == nil && (!hasCallerDL || time.Now().Before(callerDL))
	if err != nil && ours && errors.Is(err, context.DeadlineExceeded) {
		// Our own bound, not the caller's: a retryable failure.
		return nil, provider.Wrap(provider.ErrUnavailable,
			fmt.Errorf("sshx: connect %s: no SSH session within %v", c.cfg.Addr, c.cfg.HandshakeTimeout))
	}
	return nc, err
}

// handshake dials and runs the SSH handshake, bounded by ctx, and returns
// the established connection with its watchers started.
func (c *Client) handshake(ctx context.Context) (*conn, error) {
	tcp, err := c.dialTCP(ctx)
	if err != nil {
		return nil, err
	}
	return c.handshakeOver(ctx, tcp)
}

// handshakeOver runs the SSH handshake on tcp, bounded by ctx.
func (c *Client) handshakeOver(ctx context.Context, tcp net.Conn) (*conn, error) {
	// Close the connection if ctx ends mid-handshake, so that a server that
	// accepts but never speaks cannot hang us.
	stop := context.AfterFunc(ctx, func() { tcp.Close() })

	pin := &hostKeyPin{addr: c.cfg.Addr, want: c.cfg.HostKey}
	cc := &ssh.ClientConfig{
		ClientVersion:     ClientVersion,
		User:              c.cfg.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(c.cfg.Signer)},
		HostKeyCallback:   pin.check,
		HostKeyAlgorithms: hostKeyAlgorithms(c.cfg.HostKey),
	}
	sc, chans, reqs, err := ssh.NewClientConn(tcp, c.cfg.Addr, cc)
	ctxFired := !stop()
	switch mm := pin.mismatch(); {
	case mm != nil:
		tcp.Close()
		return nil, mm
	case ctxFired || (err != nil && ctxExpired(ctx)):
		if err == nil {
			sc.Close()
		}
		tcp.Close()
		cerr := ctx.Err()
		if cerr == nil {
			cerr = context.DeadlineExceeded
		}
		return nil, fmt.Errorf("sshx: ssh handshake with %s: %w", c.cfg.Addr, cerr)
	case err != nil:
		tcp.Close()
		return nil, c.handshakeError(err)
	}
	_ = tcp.SetDeadline(time.Time{})
	return c.startConn(sc, chans, reqs), nil
}

// dialTCP opens the TCP connection, its deadline set to ctx's.
func (c *Client) dialTCP(ctx context.Context) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sshx: connect %s: %w", c.cfg.Addr, err)
	}
	tcp, err := c.cfg.Dial(ctx, "tcp", c.cfg.Addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("sshx: connect %s: %w", c.cfg.Addr, ctx.Err())
		}
		return nil, provider.Wrap(provider.ErrUnavailable, fmt.Errorf("sshx: dial %s: %w", c.cfg.Addr, err))
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = tcp.SetDeadline(dl)
	}
	return tcp, nil
}

// hostKeyPin is the host key callback of one handshake: it accepts only the
// pinned key and remembers a mismatch, which the handshake reports rather
// than the SSH library's wrapping of it.
type hostKeyPin struct {
	addr string
	want ssh.PublicKey

	mu  sync.Mutex
	err error
}

func (p *hostKeyPin) check(_ string, _ net.Addr, got ssh.PublicKey) error {
	if bytes.Equal(got.Marshal(), p.want.Marshal()) {
		return nil
	}
	err := fmt.Errorf("%w: %s presented %s %s, pinned %s %s", ErrHostKeyMismatch, p.addr,
		got.Type(), ssh.FingerprintSHA256(got), p.want.Type(), ssh.FingerprintSHA256(p.want))
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
	return err
}

// mismatch returns the mismatch check saw, if any.
func (p *hostKeyPin) mismatch() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// handshakeError classifies a failed handshake (not a mismatch seen by the
// host key callback, nor the end of ctx).
func (c *Client) handshakeError(err error) error {
	msg := err.Error()
	if strings.Contains(msg, "no common algorithm for host key") {
		return fmt.Errorf("%w: %s offers no %s host key (pinned %s): %v", ErrHostKeyMismatch,
			c.cfg.Addr, c.cfg.HostKey.Type(), ssh.FingerprintSHA256(c.cfg.HostKey), err)
	}
	if strings.Contains(msg, "unable to authenticate") {
		return provider.Wrap(provider.ErrUnavailable,
			fmt.Errorf("%w: %s as %q: %v", ErrAuthFailed, c.cfg.Addr, c.cfg.User, err))
	}
	return provider.Wrap(provider.ErrUnavailable, fmt.Errorf("sshx: ssh handshake with %s: %w", c.cfg.Addr, err))
}

// startConn wraps an established SSH connection and starts its watchers:
// one records why it ended, one sends keepalives.
func (c *Client) startConn(sc ssh.Conn, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) *conn {
	nc := &conn{client: ssh.NewClient(sc, chans, reqs), dead: make(chan struct{}), freed: make(chan struct{}, 64)}
	go func() {
		err := nc.client.Wait()
		if err == nil {
			err = io.EOF
		}
		nc.kill(fmt.Errorf("%w: %v", ErrConnectionLost, err))
	}()
	go c.keepAlive(nc)
	return nc
}

// keepAlive sends keepalive@openssh.com requests, one outstanding at a time,
// and kills the connection after KeepAliveMax intervals without a reply.
func (c *Client) keepAlive(nc *conn) {
	interval := c.cfg.KeepAliveInterval
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-nc.dead:
			return
		case <-t.C:
		}
		reply := make(chan error, 1)
		go func() {
			_, _, err := nc.client.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		missed := 0
	wait:
		for {
			t.Reset(interval)
			select {
			case <-nc.dead:
				return
			case err := <-reply:
				if err != nil {
					nc.kill(fmt.Errorf("%w: keepalive: %v", ErrConnectionLost, err))
					return
				}
				break wait
			case <-t.C:
				missed++
				if missed >= c.cfg.KeepAliveMax {
					nc.kill(fmt.Errorf("%w: no reply to %d keepalives in %v", ErrConnectionLost,
						missed, time.Duration(missed)*interval))
					return
				}
			}
		}
		// t was reset before the reply came; the next request goes out
		// when it fires.
	}
}

// Run runs one command on a session of the shared connection, connecting
// first if needed.
//
// A refused session channel (the server's MaxSessions is reached) is retried
// with backoff until ctx ends. If the connection turns out broken before the
// command starts, Run re-dials once. A command that exits non-zero returns
// its code with a nil error; one killed by a signal returns ExitCode -1 and
// Signal. If the connection dies while the command runs, the error wraps
// ErrConnectionLost; if the server ends the command's session while the
// connection stays up (the reply to a keepalive tells them apart), the error
// wraps ErrSessionEnded. If ctx ends while the command runs, the command is sent
// SIGKILL, its session closed, and the error wraps ctx.Err().
func (c *Client) Run(ctx context.Context, req Request) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("sshx: run on %s: %w", c.cfg.Addr, err)
	}
	nc, sess, spare, err := c.openSession(ctx)
	if err != nil {
		return Result{}, err
	}
	res, err := c.run(ctx, nc, sess, req, spare)
	if errors.Is(err, errStaleSpare) {
		// The server closed the idle spare session (ChannelTimeout, say):
		// a session of its own, once.
		sess.Close()
		nc.sessionClosed()
		if nc, sess, _, err = c.openSession(ctx); err != nil {
			return Result{}, err
		}
		res, err = c.run(ctx, nc, sess, req, false)
	}
	// Signalling and closing write to the connection; a stuck peer must not
	// block us.
	interrupted := ctx.Err() != nil && err != nil && errors.Is(err, ctx.Err())
	go func() {
		if interrupted {
			_ = sess.Signal(ssh.SIGKILL)
		}
		sess.Close()
		nc.sessionClosed()
	}()
	return res, err
}

// errStaleSpare: the spare session could not start a command although the
// connection lives.
var errStaleSpare = errors.New("sshx: spare session closed by the server")

func (c *Client) run(ctx context.Context, nc *conn, sess *ssh.Session, req Request, spare bool) (Result, error) {
	out := &gate{}
	if req.Stdout != nil {
		sess.Stdout = &gatedWriter{g: out, w: req.Stdout}
	}
	if req.Stderr != nil {
		sess.Stderr = &gatedWriter{g: out, w: req.Stderr}
	}
	defer out.shut()
	var stdin io.WriteCloser
	if req.Stdin != nil {
		var err error
		if stdin, err = sess.StdinPipe(); err != nil {
			return Result{}, fmt.Errorf("sshx: stdin: %w", err)
		}
	}
	if err := sess.Start(req.Command); err != nil {
		if err := ctx.Err(); err != nil {
			return Result{}, fmt.Errorf("sshx: command interrupted: %w", err)
		}
		if spare && !nc.isDead() {
			return Result{}, errStaleSpare
		}
		if nc.isDead() || errors.Is(err, io.EOF) {
			return Result{}, fmt.Errorf("%w: starting command: %v", ErrConnectionLost, err)
		}
		return Result{}, provider.Wrap(provider.ErrUnavailable, fmt.Errorf("sshx: start command: %w", err))
	}
	if stdin != nil {
		// Not waited for: a stdin that never ends must not keep Run
		// from returning once the command has exited.
		go func() {
			_, _ = io.Copy(stdin, req.Stdin)
			stdin.Close()
		}()
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()

	select {
	case err := <-done:
		return c.result(ctx, nc, err)
	case <-nc.dead:
		select {
		case err := <-done: // the command ended just before
			return c.result(ctx, nc, err)
		default:
			return Result{}, nc.deathErr()
		}
	case <-ctx.Done():
		return Result{}, fmt.Errorf("sshx: command interrupted: %w", ctx.Err())
	}
}

func (c *Client) result(ctx context.Context, nc *conn, err error) (Result, error) {
	if err == nil {
		return Result{}, nil
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		if ee.Signal() != "" {
			return Result{ExitCode: -1, Signal: ee.Signal()}, nil
		}
		return Result{ExitCode: ee.ExitStatus()}, nil
	}
	// No exit status: the channel or the connection went away. Both look
	// alike from the session, so ask the connection: a server that answers
	// a keepalive closed only the session.
	if nc.isDead() || !nc.answers(ctx) {
		if nc.isDead() {
			return Result{}, nc.deathErr()
		}
		return Result{}, fmt.Errorf("%w: %v", ErrConnectionLost, err)
	}
	return Result{}, fmt.Errorf("%w (the connection is alive): %v", ErrSessionEnded, err)
}

// answers reports whether the server replies to a keepalive before the
// connection dies or ctx ends. A silent server is left to the keepalive
// watcher, which kills the connection after KeepAliveMax intervals, so
// answers returns by then at the latest.
func (nc *conn) answers(ctx context.Context) bool {
	reply := make(chan error, 1)
	go func() {
		_, _, err := nc.client.SendRequest("keepalive@openssh.com", true, nil)
		reply <- err
	}()
	select {
	case err := <-reply:
		return err == nil
	case <-nc.dead:
		return false
	case <-ctx.Done():
		return false
	}
}

// openSession opens a session channel, waiting for a free slot while the
// server refuses one, and re-dialling once if the connection is broken.
func (c *Client) openSession(ctx context.Context) (*conn, *ssh.Session, bool, error) {
	nc, err := c.conn(ctx, nil)
	if err != nil {
		return nil, nil, false, err
	}
	if sess := nc.takeSpare(ctx, nc.runs.Add(1) > 1); sess != nil {
		return nc, sess, true, nil
	}
	redialled := false
	var w *slotWait // set once the server refused a channel
	defer func() {
		if w != nil {
			w.done()
		}
	}()
	for {
		if sess := nc.takeSpare(ctx, false); sess != nil {
			return nc, sess, true, nil
		}
		sent := nc.closedSessions()
		sess, err := newSession(ctx, nc)
		if err == nil {
			nc.sessionOpened()
			return nc, sess, false, nil
		}
		if ctx.Err() != nil {
			return nil, nil, false, fmt.Errorf("sshx: open session on %s: %w", c.cfg.Addr, ctx.Err())
		}
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			// The spare may hold the slot the server refused.
			if sess := nc.takeSpare(ctx, true); sess != nil {
				return nc, sess, true, nil
			}
			// MaxSessions reached (or a transient refusal): wait for one
			// of our sessions to close (see slotWait).
			if w == nil {
				w = nc.newSlotWait(c.cfg.SlotRetry)
			}
			if werr := w.wait(ctx, sent); werr != nil {
				return nil, nil, false, fmt.Errorf("sshx: waiting for a session slot on %s (%v): %w", c.cfg.Addr, err, werr)
			}
			continue
		}
		// The connection is broken.
		nc.kill(fmt.Errorf("%w: %v", ErrConnectionLost, err))
		if redialled {
			return nil, nil, false, fmt.Errorf("%w: open session: %v", ErrConnectionLost, err)
		}
		redialled = true
		if nc, err = c.conn(ctx, nc); err != nil {
			return nil, nil, false, err
		}
	}
}

// newSession is ssh.Client.NewSession bounded by ctx.
func newSession(ctx context.Context, nc *conn) (*ssh.Session, error) {
	type res struct {
		s   *ssh.Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := nc.client.NewSession()
		ch <- res{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// Close closes the connection. Running commands fail. Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.cur != nil {
		c.cur.kill(ErrClosed)
	}
	return nil
}

// gate serialises writes to the caller's writers (which may be the same
// writer) and stops them once Run returns.
type gate struct {
	mu     sync.Mutex
	closed bool
}

func (g *gate) shut() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

type gatedWriter struct {
	g *gate
	w io.Writer
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	w.g.mu.Lock()
	defer w.g.mu.Unlock()
	if w.g.closed {
		return len(p), nil
	}
	return w.w.Write(p)
}
