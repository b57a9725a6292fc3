// Readiness: waiting until a new lease's machine has an address, answers SSH
// with the pinned host key, and passes the readiness command.

package crabbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"time"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/sshx"
	"github.com/crabbox/crabbox-go/provider"
)

// Readiness probe schedule. The cloud API (GetMachine) is polled on the
// client's poll backoff; once the machine has an address, the SSH port is
// probed far more often, since a refused dial or a banner read costs about
// a round trip and nothing at the cloud API.
const (
	// probeMin and probeMax bound the pause between SSH port probes (a
	// uniformly jittered pause in between).
	probeMin = 100 * time.Millisecond
	probeMax = 250 * time.Millisecond
	// probeTimeout bounds one probe's dial and banner read.
	probeTimeout = 2 * time.Second
	// commandRetryMax caps the pause between readiness commands while the
	// box is still bootstrapping (the pause doubles from probeMax).
	commandRetryMax = 2 * time.Second
)

// probePause is the jittered pause before the next SSH port probe.
func probePause() time.Duration {
	return probeMin + rand.N(probeMax-probeMin+1)
}

// commandPause is the pause after the n-th (from 1) failed handshake or
// readiness command in a row: probeMax doubling up to commandRetryMax.
func commandPause(n int) time.Duration {
	d := probeMax
	for i := 1; i < n && d < commandRetryMax; i++ {
		d *= 2
	}
	return min(d, commandRetryMax)
}

// readiness is the state of one waitReady.
type readiness struct {
	cloudPolls int       // GetMachine calls so far
	nextCloud  time.Time // when the cloud API is due again
	state      string    // last state reached
	slowFails  int       // handshakes or readiness commands failed in a row
}

// waitReady polls the machine until it has an address, then SSH until it
// answers with the pinned host key, then the readiness command until it
// passes. A host key mismatch ends the wait at once.
//
// The cloud API is asked for the machine's state on the client's poll
// backoff; between those calls, once an address is known, the SSH port is
// probed every 100-250 ms (a dial and the server's banner), and the first
// probe that sees an SSH banner goes straight on to the handshake (over the
// probe's connection) and the readiness command.
func (l *Lease) waitReady(ctx context.Context, timeout time.Duration) error {
	c := l.c
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := c.o.now()
	r := &readiness{state: "pending"}
	var lastErr error
	for attempt := 1; ; attempt++ {
		polled, pause, err := l.probe(ctx, r)
		if err == nil {
			return nil
		}
		lastErr = err
		if errors.Is(err, ErrHostKeyMismatch) || errors.Is(err, ErrNotFound) && r.state == "gone" ||
			errors.Is(err, ErrPermission) || errors.Is(err, ErrInvalidArgument) {
			return &WaitError{Resource: "lease", ID: l.ID, LastState: r.state, Attempts: attempt,
				Waited: c.o.now().Sub(start), Err: err}
		}
		if polled {
			// One event per cloud poll, not per SSH port probe.
			c.emit(Event{Kind: EventLeaseWaiting, Resource: "lease", ID: l.ID, State: r.state, Attempt: attempt, Message: err.Error()})
		}
		if pause == 0 {
			pause = max(time.Until(r.nextCloud), 0)
		}
		if serr := sleep(ctx, pause); serr != nil {
			return &WaitError{Resource: "lease", ID: l.ID, LastState: r.state, Attempts: attempt,
				Waited: c.o.now().Sub(start), Err: errors.Join(serr, lastErr)}
		}
	}
}

// probe does one readiness attempt. It asks the cloud API when that is due
// (polled reports it), then, if the machine runs and has an address, probes
// SSH. pause is how long to wait before the next attempt; 0 means until the
// cloud API is due again.
func (l *Lease) probe(ctx context.Context, r *readiness) (polled bool, pause time.Duration, err error) {
	c := l.c
	if r.cloudPolls == 0 || !time.Now().Before(r.nextCloud) {
		polled = true
		r.cloudPolls++
		r.nextCloud = time.Now().Add(c.o.backoff(r.cloudPolls))
		st, err := l.pollMachine(ctx)
		if st != "" {
			r.state = st
		}
		if err != nil {
			return polled, 0, err
		}
	} else if r.state != "ssh" && r.state != "bootstrapping" {
		// The machine had no address at the last poll.
		return polled, 0, fmt.Errorf("machine is %s", r.state)
	}
	st, answered, err := l.probeSSH(ctx)
	r.state = st
	switch {
	case err == nil:
		return polled, 0, nil
	case answered:
		// The port answers, but the handshake or the readiness command
		// failed: those cost the box more than a probe.
		r.slowFails++
		return polled, commandPause(r.slowFails), err
	default:
		r.slowFails = 0
		return polled, probePause(), err
	}
}

// pollMachine asks the cloud API for the machine and reports its state:
// "ssh" when it runs and has an address.
func (l *Lease) pollMachine(ctx context.Context) (string, error) {
	m, err := l.c.drv.GetMachine(ctx, l.MachineID)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return "gone", fmt.Errorf("machine %s disappeared: %w", l.MachineID, err)
		}
		return "", err
	}
	l.applyMachine(m)
	switch m.State {
	case provider.MachineTerminated, provider.MachineStopped, provider.MachineStopping:
		return "gone", fmt.Errorf("machine %s is %s: %w", m.ID, m.State, ErrNotFound)
	case provider.MachineRunning:
	default:
		return string(m.State), fmt.Errorf("machine is %s", m.State)
	}
	if m.SSHAddr == "" {
		return "no-address", errors.New("machine has no address yet")
	}
	return "ssh", nil
}

// probeSSH connects (if not connected yet: first a cheap probe of the SSH
// port, whose connection the handshake then uses) and runs the readiness
// command. answered reports that the SSH port answered with a banner.
func (l *Lease) probeSSH(ctx context.Context) (state string, answered bool, err error) {
	c := l.c
	client, err := l.sshClient(ctx)
	if err != nil {
		return "ssh", false, err
	}
	if !client.Connected() {
		conn, err := l.probePort(ctx)
		if err != nil {
			return "ssh", false, err
		}
		if err := client.ConnectOver(ctx, conn); err != nil {
			return "ssh", true, err
		}
	}
	ready := readyCommand()
	if c.caps.access != nil {
		ready = "true" // existing hosts have no crabbox bootstrap
	}
	res, err := client.Run(ctx, sshx.Request{Command: ready, Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		return "ssh", true, err
	}
	if res.ExitCode != 0 {
		return "bootstrapping", true, fmt.Errorf("readiness command exited %d", res.ExitCode)
	}
	return "ready", true, nil
}

// probePort dials the lease's SSH address (with the client's dialer) and
// reads the server's identification line, having sent the client's
// (sshx.ClientVersion) first. It returns the connection, with the server's
// line put back in front of what follows and the client's first write
// dropped, when the line starts with "SSH-"; an error wrapping
// ErrUnavailable otherwise.
func (l *Lease) probePort(ctx context.Context) (net.Conn, error) {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	l.mu.Lock()
	addr := l.SSHAddr
	l.mu.Unlock()
	dial := l.c.o.dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(pctx, "tcp", addr)
	if err != nil {
		return nil, provider.Wrap(provider.ErrUnavailable, fmt.Errorf("ssh port %s: %w", addr, err))
	}
	stop := context.AfterFunc(pctx, func() { conn.Close() })
	// Our identification line goes out before the server's is read, as an
	// SSH client's would: the server starts its key exchange once it has
	// both, so waiting for its line first would cost a round trip.
	hello := []byte(sshx.ClientVersion + "\r\n")
	_, err = conn.Write(hello)
	var banner []byte
	if err == nil {
		banner, err = readBanner(conn)
	}
	if !stop() {
		conn.Close()
		return nil, provider.Wrap(provider.ErrUnavailable, fmt.Errorf("ssh port %s: no banner within %v", addr, probeTimeout))
	}
	if err != nil {
		conn.Close()
		return nil, provider.Wrap(provider.ErrUnavailable, fmt.Errorf("ssh port %s: %w", addr, err))
	}
	return &replayConn{Conn: conn, pending: banner, sent: hello}, nil
}

// readBanner reads from conn up to and including the first "SSH-" line (RFC
// 4253 allows other lines before it), at most 8 KiB.
func readBanner(conn net.Conn) ([]byte, error) {
	var got []byte
	buf := make([]byte, 512)
	for len(got) < 8<<10 {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		for start := 0; ; {
			i := bytes.IndexByte(got[start:], '\n')
			if i < 0 {
				break
			}
			if bytes.HasPrefix(got[start:], []byte("SSH-")) {
				return got, nil
			}
			start += i + 1
		}
		if err != nil {
			return nil, fmt.Errorf("no SSH banner: %w", err)
		}
	}
	return nil, errors.New("no SSH banner in the first 8 KiB")
}

// replayConn is a connection whose first reads return bytes already read,
// and whose first write, the SSH client's identification line, was already
// sent (sent): it is dropped.
type replayConn struct {
	net.Conn
	pending []byte
	sent    []byte
}

func (c *replayConn) Write(p []byte) (int, error) {
	if c.sent != nil {
		sent := c.sent
		c.sent = nil
		if !bytes.Equal(p, sent) {
			return 0, fmt.Errorf("ssh client wrote %q first, but %q was already sent", p, sent)
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func readyCommand() string {
	return `"${CRABBOX_FS_ROOT:-}"` + cloudinit.ReadyCommand
}
