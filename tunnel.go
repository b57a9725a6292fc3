// Tunnels over the lease's one SSH connection: Lease.DialContext to reach an
// address on the box, Lease.Forward (a local listener on 127.0.0.1 that
// forwards to the box; Lease.ForwardVNC to the box's VNC server) and
// Lease.Reverse (a listener on the box that forwards to the harness), and
// the Tunnel they return.

package crabbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DialContext opens a stream to addr as the box reaches it ("127.0.0.1:9222"
// is the box's own loopback), over the lease's SSH connection with its
// pinned host key. network is "tcp", "tcp4", "tcp6" or "unix" (a socket
// path on the box). A box whose sshd disables forwarding yields an error
// matching ErrUnsupported; nothing listening at addr, ErrUnavailable; a
// dead connection, ErrConnectionLost, which is also what reads and writes
// on the stream return once the connection is gone (the lease closed or
// the network lost). The stream has no deadlines: SetDeadline is accepted
// and ignored; bound it with ctx-aware code or close it.
func (l *Lease) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := l.usable("dial"); err != nil {
		return nil, err
	}
	s, err := l.dial(ctx, network, addr)
	if err != nil {
		return nil, l.c.opErr("dial", l.ID, err)
	}
	return s, nil
}

// dial is DialContext without the OpError.
func (l *Lease) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	client, err := l.sshClient(ctx)
	if err != nil {
		return nil, err
	}
	return client.Dial(ctx, network, addr)
}

// Tunnel is a forward (Lease.Forward) or a reverse forward (Lease.Reverse).
// It ends when Close is called, when the lease is closed or released, or
// (a reverse tunnel) when the SSH connection dies. Its methods are safe for
// concurrent use.
type Tunnel struct {
	local, remote string
	ln            net.Listener
	dial          func(ctx context.Context) (net.Conn, error)
	set           *tunnelSet

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{}

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	err   error
	ended bool
}

// LocalAddr is the harness side: for a forward, the 127.0.0.1 address to
// connect to; for a reverse forward, the address the box's connections are
// forwarded to.
func (t *Tunnel) LocalAddr() string { return t.local }

// RemoteAddr is the box side: for a forward, the address on the box it
// reaches; for a reverse forward, the address the box listens on (with the
// port the box picked, if 0 was asked for).
func (t *Tunnel) RemoteAddr() string { return t.remote }

// Done is closed when the tunnel has ended and its streams are closed.
func (t *Tunnel) Done() <-chan struct{} { return t.done }

// Err reports why the tunnel ended: nil while it runs or after Close;
// an error matching ErrConnectionLost when the SSH connection died under a
// reverse tunnel.
func (t *Tunnel) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Close stops the tunnel: its listener and every stream it carries. It
// waits for them to end. Close is idempotent.
func (t *Tunnel) Close() error {
	t.end(nil)
	t.wg.Wait()
	return nil
}

// end stops the tunnel once, recording why.
func (t *Tunnel) end(err error) {
	t.mu.Lock()
	if t.ended {
		t.mu.Unlock()
		return
	}
	t.ended, t.err = true, err
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	t.cancel()
	_ = t.ln.Close()
	for c := range conns {
		_ = c.Close()
	}
	t.set.remove(t)
	go func() {
		t.wg.Wait()
		close(t.done)
	}()
}

// track registers a stream, or closes it if the tunnel has ended.
func (t *Tunnel) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		_ = c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *Tunnel) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	_ = c.Close()
}

// serve accepts streams until the listener fails and pipes each to a new
// stream from dial.
func (t *Tunnel) serve() {
	defer t.wg.Done()
	for {
		in, err := t.ln.Accept()
		if err != nil {
			if errors.Is(err, ErrConnectionLost) {
				t.end(err)
			} else {
				t.end(nil)
			}
			return
		}
		if !t.track(in) {
			continue
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer t.untrack(in)
			out, err := t.dial(t.ctx)
			if err != nil {
				return
			}
			if !t.track(out) {
				return
			}
			defer t.untrack(out)
			pipe(in, out)
		}()
	}
}

// pipe copies both ways, passing each side's EOF on as a half close, and
// returns when both directions have ended.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	one := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
			_ = cw.CloseWrite()
			return
		}
		// An error (or a side without half close) ends both directions.
		_ = a.Close()
		_ = b.Close()
	}
	wg.Add(2)
	go one(a, b)
	go one(b, a)
	wg.Wait()
}

// tunnelSet is the lease's open tunnels, closed with the lease.
type tunnelSet struct {
	mu sync.Mutex
	ts map[*Tunnel]struct{}
}

func (s *tunnelSet) add(t *Tunnel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ts == nil {
		s.ts = map[*Tunnel]struct{}{}
	}
	s.ts[t] = struct{}{}
}

func (s *tunnelSet) remove(t *Tunnel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ts, t)
}

// closeAll closes every open tunnel.
func (s *tunnelSet) closeAll() {
	s.mu.Lock()
	ts := make([]*Tunnel, 0, len(s.ts))
	for t := range s.ts {
		ts = append(ts, t)
	}
	s.mu.Unlock()
	for _, t := range ts {
		_ = t.Close()
	}
}

func (l *Lease) newTunnel(ln net.Listener, local, remote string, dial func(context.Context) (net.Conn, error)) *Tunnel {
	ctx, cancel := context.WithCancel(context.Background())
	t := &Tunnel{local: local, remote: remote, ln: ln, dial: dial, set: &l.tunnels,
		ctx: ctx, cancel: cancel, done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	l.tunnels.add(t)
	t.wg.Add(1)
	go t.serve()
	return t
}

// Forward listens on 127.0.0.1 (a random port: see Tunnel.LocalAddr) and
// forwards every connection to remoteAddr as the box reaches it, each over
// its own channel of the lease's SSH connection. Forward first opens (and
// closes) one stream to remoteAddr, so that a box refusing forwarding fails
// here with ErrUnsupported; nothing listening at remoteAddr yet is not an
// error. The tunnel ends on Close, or when the lease is closed or released;
// a dropped connection is re-dialled for the next stream.
func (l *Lease) Forward(ctx context.Context, remoteAddr string) (*Tunnel, error) {
	if err := l.usable("forward"); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(remoteAddr); err != nil {
		return nil, l.c.opErr("forward", l.ID, fmt.Errorf("%w: remote address %q: %v", ErrInvalidArgument, remoteAddr, err))
	}
	probe, err := l.dial(ctx, "tcp", remoteAddr)
	switch {
	case err == nil:
		_ = probe.Close()
	case errors.Is(err, ErrUnsupported) || !errors.Is(err, ErrUnavailable):
		return nil, l.c.opErr("forward", l.ID, err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, l.c.opErr("forward", l.ID, fmt.Errorf("%w: local listener: %v", ErrUnavailable, err))
	}
	return l.newTunnel(ln, ln.Addr().String(), remoteAddr, func(ctx context.Context) (net.Conn, error) {
		return l.dial(ctx, "tcp", remoteAddr)
	}), nil
}

// Reverse asks the box to listen on remoteAddr (e.g. "127.0.0.1:0"; the
// box's sshd binds loopback unless its GatewayPorts says otherwise) and
// forwards every connection the box accepts there to localAddr, dialled
// from the harness's process. A box refusing (sshd AllowTcpForwarding no,
// or remoteAddr taken on the box) yields ErrUnsupported. The tunnel ends on
// Close, when the lease is closed or released, or when the SSH connection
// dies (Err then matches ErrConnectionLost).
func (l *Lease) Reverse(ctx context.Context, remoteAddr, localAddr string) (*Tunnel, error) {
	if err := l.usable("reverse"); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(localAddr); err != nil {
		return nil, l.c.opErr("reverse", l.ID, fmt.Errorf("%w: local address %q: %v", ErrInvalidArgument, localAddr, err))
	}
	client, err := l.sshClient(ctx)
	if err != nil {
		return nil, l.c.opErr("reverse", l.ID, err)
	}
	ln, err := client.Listen(ctx, remoteAddr)
	if err != nil {
		return nil, l.c.opErr("reverse", l.ID, err)
	}
	d := net.Dialer{Timeout: 30 * time.Second}
	return l.newTunnel(ln, localAddr, ln.Addr().String(), func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", localAddr)
	}), nil
}

// ForwardVNC forwards a random port on the harness's 127.0.0.1 to the
// box's VNC server (x11vnc, bound to the box's loopback on
// ${CRABBOX_VNC_PORT:-5900}, which desktop leases start), for a person to
// look at the live desktop with any VNC viewer pointed at
// Tunnel.LocalAddr. The VNC server has no password: the tunnel is the
// access control, and it listens on the harness's loopback only. The
// desktop starts its VNC server in the background, so ForwardVNC waits up
// to 15 s (within ctx) for it to listen; a box with no VNC server yields
// ErrUnavailable.
func (l *Lease) ForwardVNC(ctx context.Context) (*Tunnel, error) {
	if err := l.usable("forward-vnc"); err != nil {
		return nil, err
	}
	res, err := l.Run(ctx, `printf '%s' "${CRABBOX_VNC_PORT:-5900}"`)
	if err != nil {
		return nil, l.c.opErr("forward-vnc", l.ID, err)
	}
	port, err := strconv.Atoi(strings.TrimSpace(res.StdoutTail))
	if err != nil || port < 1 || port > 65535 {
		return nil, l.c.opErr("forward-vnc", l.ID, fmt.Errorf("the box's CRABBOX_VNC_PORT is %q", res.StdoutTail))
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// The desktop starts its VNC server in the background, so on a fresh
	// lease (or a loaded box) it may not listen yet: probe until it does,
	// for up to vncStartWait.
	start := time.Now()
	for {
		probe, err := l.dial(ctx, "tcp", addr)
		if err == nil {
			_ = probe.Close()
			break
		}
		if errors.Is(err, ErrConnectionLost) || time.Since(start) >= vncStartWait {
			return nil, l.c.opErr("forward-vnc", l.ID, fmt.Errorf("no VNC server on the box at %s after %v (a desktop lease starts one): %w",
				addr, time.Since(start).Round(time.Millisecond), err))
		}
		if serr := sleep(ctx, vncProbeEvery); serr != nil {
			return nil, l.c.opErr("forward-vnc", l.ID, fmt.Errorf("no VNC server on the box at %s yet: %w (%w)", addr, err, serr))
		}
	}
	return l.Forward(ctx, addr)
}

// How long ForwardVNC waits for the box's VNC server to listen, and how
// often it looks.
const (
	vncStartWait  = 15 * time.Second
	vncProbeEvery = 200 * time.Millisecond
)
