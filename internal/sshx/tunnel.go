// Tunnels over the shared connection: Dial (a direct-tcpip channel to an
// address the box reaches) and Listen (a tcpip-forward listener on the box),
// with typed errors for a box that refuses forwarding and for streams whose
// connection died.

package sshx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/crabbox/crabbox-go/provider"
	"golang.org/x/crypto/ssh"
)

// Dial opens a stream to addr as the box reaches it (a direct-tcpip channel
// for "tcp", "tcp4" and "tcp6"; direct-streamlocal for "unix"), over the
// shared connection, connecting first if needed. A box whose sshd refuses
// forwarding (AllowTcpForwarding no) yields an error wrapping
// provider.ErrUnsupported; nothing listening at addr on the box an error
// wrapping provider.ErrUnavailable; a connection that died before the
// stream opened one wrapping ErrConnectionLost (after one re-dial). Reads
// and writes on the returned stream fail with errors wrapping
// ErrConnectionLost once the connection is gone.
func (c *Client) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, provider.Errorf(provider.ErrInvalidArgument, "sshx: dial %q: %v", addr, err)
		}
	case "unix":
		if addr == "" {
			return nil, provider.Errorf(provider.ErrInvalidArgument, "sshx: dial: empty socket path")
		}
	default:
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshx: dial: network %q (tcp, tcp4, tcp6 or unix)", network)
	}
	nc, err := c.conn(ctx, nil)
	if err != nil {
		return nil, err
	}
	for redialled := false; ; redialled = true {
		s, err := nc.client.DialContext(ctx, network, addr)
		if err == nil {
			return &stream{Conn: s, nc: nc}, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("sshx: dial %s on %s: %w", addr, c.cfg.Addr, ctx.Err())
		}
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			return nil, openError(c.cfg.Addr, addr, oce)
		}
		// The connection is broken.
		nc.kill(fmt.Errorf("%w: %v", ErrConnectionLost, err))
		if redialled {
			return nil, fmt.Errorf("%w: dial %s: %v", ErrConnectionLost, addr, err)
		}
		if nc, err = c.conn(ctx, nc); err != nil {
			return nil, err
		}
	}
}

// openError classifies a refused direct-tcpip channel.
func openError(box, addr string, oce *ssh.OpenChannelError) error {
	switch oce.Reason {
	case ssh.Prohibited:
		return provider.Wrap(provider.ErrUnsupported,
			fmt.Errorf("sshx: %s refuses forwarding to %s (sshd AllowTcpForwarding/PermitOpen): %v", box, addr, oce))
	case ssh.UnknownChannelType:
		return provider.Wrap(provider.ErrUnsupported,
			fmt.Errorf("sshx: %s does not support forwarding: %v", box, oce))
	default:
		return provider.Wrap(provider.ErrUnavailable,
			fmt.Errorf("sshx: %s could not connect to %s: %v", box, addr, oce))
	}
}

// Listen asks the box to listen on addr (host:port; port 0 picks one) and
// returns a listener whose Accept yields the streams the box forwards back
// over the shared connection. A box that refuses (sshd AllowTcpForwarding
// no or local, or the address is taken on the box) yields an error wrapping
// provider.ErrUnsupported. The listener dies with the connection: Accept
// then fails with an error wrapping ErrConnectionLost.
func (c *Client) Listen(ctx context.Context, addr string) (net.Listener, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshx: listen %q: %v", addr, err)
	}
	nc, err := c.conn(ctx, nil)
	if err != nil {
		return nil, err
	}
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		ln, err := nc.client.Listen("tcp", addr)
		ch <- res{ln, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			if nc.isDead() {
				return nil, fmt.Errorf("%w: listen %s: %v", ErrConnectionLost, addr, r.err)
			}
			if strings.Contains(r.err.Error(), "denied") {
				return nil, provider.Wrap(provider.ErrUnsupported,
					fmt.Errorf("sshx: %s refuses to listen on %s for us (sshd AllowTcpForwarding, or the address is taken): %v", c.cfg.Addr, addr, r.err))
			}
			return nil, provider.Wrap(provider.ErrUnavailable, fmt.Errorf("sshx: listen %s on %s: %w", addr, c.cfg.Addr, r.err))
		}
		return &listener{Listener: r.ln, nc: nc}, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.ln != nil {
				r.ln.Close()
			}
		}()
		return nil, fmt.Errorf("sshx: listen %s on %s: %w", addr, c.cfg.Addr, ctx.Err())
	case <-nc.dead:
		return nil, fmt.Errorf("%w: listen %s", ErrConnectionLost, addr)
	}
}

// lost returns the error of a stream or listener whose connection is gone,
// wrapping ErrConnectionLost (and the reason, e.g. ErrClosed), or nil while
// the connection lives.
func (nc *conn) lost() error {
	if !nc.isDead() {
		return nil
	}
	err := nc.deathErr()
	if errors.Is(err, ErrConnectionLost) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, err)
}

// stream is a forwarded stream; its errors tell a dead connection from the
// box's end of the stream.
type stream struct {
	net.Conn
	nc *conn
}

func (s *stream) Read(p []byte) (int, error) {
	n, err := s.Conn.Read(p)
	if err != nil {
		if lerr := s.nc.lost(); lerr != nil {
			return n, lerr
		}
	}
	return n, err
}

func (s *stream) Write(p []byte) (int, error) {
	n, err := s.Conn.Write(p)
	if err != nil {
		if lerr := s.nc.lost(); lerr != nil {
			return n, lerr
		}
	}
	return n, err
}

// CloseWrite sends EOF to the box's end, keeping the read side open.
func (s *stream) CloseWrite() error {
	if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return s.Conn.Close()
}

// SSH channels have no deadlines; these are accepted and ignored so that
// callers expecting a net.Conn (HTTP transports) do not fail.
func (s *stream) SetDeadline(time.Time) error      { return nil }
func (s *stream) SetReadDeadline(time.Time) error  { return nil }
func (s *stream) SetWriteDeadline(time.Time) error { return nil }

// listener is a box-side listener; Accept reports a dead connection.
type listener struct {
	net.Listener
	nc *conn
}

func (l *listener) Accept() (net.Conn, error) {
	s, err := l.Listener.Accept()
	if err != nil {
		if lerr := l.nc.lost(); lerr != nil {
			return nil, lerr
		}
		if errors.Is(err, io.EOF) {
			return nil, net.ErrClosed
		}
		return nil, err
	}
	return &stream{Conn: s, nc: l.nc}, nil
}
