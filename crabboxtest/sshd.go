// The in-process SSH server of a machine: sessions, commands, signals, and
// TCP forwarding (direct-tcpip and tcpip-forward, as OpenSSH's
// AllowTcpForwarding yes).

package crabboxtest

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// handshakeTimeout bounds an SSH handshake, like OpenSSH's LoginGraceTime.
const handshakeTimeout = 30 * time.Second

func (m *machine) acceptLoop(l net.Listener) {
	defer m.wg.Done()
	for {
		raw, err := l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		nc := &gatedConn{Conn: raw, g: m.gate, done: make(chan struct{})}
		m.mu.Lock()
		if m.stopped {
			m.mu.Unlock()
			_ = nc.Close()
			return
		}
		m.conns[nc] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go m.serveConn(nc)
	}
}

func (m *machine) serveConn(nc net.Conn) {
	defer m.wg.Done()
	defer func() {
		_ = nc.Close()
		m.mu.Lock()
		delete(m.conns, nc)
		m.mu.Unlock()
	}()
	_ = nc.SetDeadline(time.Now().Add(handshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(nc, m.sshCfg)
	if err != nil {
		return
	}
	_ = nc.SetDeadline(time.Time{})
	defer sc.Close()

	// Global requests: tcpip-forward and its cancel (remote forwarding);
	// the others (keepalive@openssh.com, ...) are answered, as OpenSSH
	// answers the ones it does not know, with a failure, which clients
	// take as alive.
	fwd := &forwards{m: m, sc: sc, lns: map[string]net.Listener{}, conns: map[net.Conn]struct{}{}}
	defer fwd.closeAll()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for r := range reqs {
			switch r.Type {
			case "tcpip-forward":
				fwd.listen(r)
			case "cancel-tcpip-forward":
				fwd.cancel(r)
			default:
				reply(r, false)
			}
		}
	}()

	var active atomic.Int32
	for nch := range chans {
		if nch.ChannelType() == "direct-tcpip" {
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				fwd.directTCPIP(nch)
			}()
			continue
		}
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "unknown channel type")
			continue
		}
		if active.Load() >= MaxSessions {
			_ = nch.Reject(ssh.Prohibited, "open failed")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		active.Add(1)
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer active.Add(-1)
			m.session(ch, creqs)
		}()
	}
}

// proc is one command running for a session.
type proc struct {
	cmd      *exec.Cmd
	outR     *os.File
	errR     *os.File
	done     chan struct{} // closed once the command exited and its output was sent
	exited   atomic.Bool
	killOnce sync.Once
}

// kill kills the command's process group (if the command still runs) and
// stops sending its output.
func (p *proc) kill() {
	p.killOnce.Do(func() {
		if !p.exited.Load() {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		}
		_ = p.outR.Close()
		_ = p.errR.Close()
	})
}

// session serves one session channel: env, exec and signal requests.
func (m *machine) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	var env []string
	var p *proc
	for {
		var done <-chan struct{}
		if p != nil {
			done = p.done
		}
		select {
		case r, ok := <-reqs:
			if !ok {
				// The client closed the channel (or the connection died):
				// like sshd, stop the command.
				if p != nil {
					p.kill()
					<-p.done
				}
				return
			}
			switch r.Type {
			case "env":
				var kv struct{ Name, Value string }
				if err := ssh.Unmarshal(r.Payload, &kv); err != nil || kv.Name == "" {
					reply(r, false)
					continue
				}
				env = append(env, kv.Name+"="+kv.Value)
				reply(r, true)
			case "exec":
				var cmd struct{ Command string }
				if p != nil || ssh.Unmarshal(r.Payload, &cmd) != nil {
					reply(r, false)
					continue
				}
				np, err := m.start(cmd.Command, env, ch)
				if err != nil {
					reply(r, false)
					continue
				}
				p = np
				reply(r, true)
			case "signal":
				var sig struct{ Signal string }
				if p != nil && ssh.Unmarshal(r.Payload, &sig) == nil {
					if s, ok := signals[sig.Signal]; ok && !p.exited.Load() {
						_ = syscall.Kill(-p.cmd.Process.Pid, s)
					}
				}
				reply(r, true)
			default: // pty-req, shell, subsystem, x11-req, ...
				reply(r, false)
			}
		case <-done:
			// Like sshd: EOF, exit status, close.
			_ = ch.CloseWrite()
			m.sendExit(ch, p)
			_ = ch.Close()
			// Drain what the client still sends until the channel closes.
			ssh.DiscardRequests(reqs)
			return
		}
	}
}

func reply(r *ssh.Request, ok bool) {
	if r.WantReply {
		_ = r.Reply(ok, nil)
	}
}

var signals = map[string]syscall.Signal{
	"ABRT": syscall.SIGABRT, "ALRM": syscall.SIGALRM, "FPE": syscall.SIGFPE,
	"HUP": syscall.SIGHUP, "ILL": syscall.SIGILL, "INT": syscall.SIGINT,
	"KILL": syscall.SIGKILL, "PIPE": syscall.SIGPIPE, "QUIT": syscall.SIGQUIT,
	"SEGV": syscall.SIGSEGV, "TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}

func signalName(s syscall.Signal) string {
	for name, v := range signals {
		if v == s {
			return name
		}
	}
	return "KILL"
}

// sendExit reports the command's exit status (or the signal that ended it).
func (m *machine) sendExit(ch ssh.Channel, p *proc) {
	st := p.cmd.ProcessState
	if st == nil {
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{255}))
		return
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		_, _ = ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{Signal: signalName(ws.Signal()), CoreDumped: ws.CoreDump()}))
		return
	}
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(st.ExitCode())}))
}

// start runs command with /bin/sh -c in its own process group, streaming
// its output to ch.
func (m *machine) start(command string, env []string, ch ssh.Channel) (*proc, error) {
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Env = append(append([]string{}, m.env...), env...)
	cmd.Dir = m.workDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		_ = outR.Close()
		_ = outW.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	p := &proc{cmd: cmd, outR: outR, errR: errR, done: make(chan struct{})}

	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		for _, f := range []*os.File{outR, outW, errR, errW} {
			_ = f.Close()
		}
		return nil, errors.New("machine stopped")
	}
	err = cmd.Start()
	_ = outW.Close()
	_ = errW.Close()
	if err != nil {
		m.mu.Unlock()
		_ = outR.Close()
		_ = errR.Close()
		return nil, err
	}
	m.procs[p] = struct{}{}
	// Our child until it is waited for, so its id is not reused yet.
	m.pgids[cmd.Process.Pid] = startTime(cmd.Process.Pid)
	m.wg.Add(3)
	m.mu.Unlock()

	// stdin: not waited for; it ends when the client sends EOF, the
	// command stops reading, or the channel closes.
	go func() {
		defer m.wg.Done()
		_, _ = io.Copy(stdin, ch)
		_ = stdin.Close()
	}()
	var copies sync.WaitGroup
	copies.Add(2)
	go func() {
		defer m.wg.Done()
		defer copies.Done()
		_, _ = io.Copy(ch, outR)
	}()
	go func() {
		defer m.wg.Done()
		defer copies.Done()
		_, _ = io.Copy(ch.Stderr(), errR)
	}()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		_ = cmd.Wait()
		p.exited.Store(true)
		// Like sshd, keep sending output until every writer (background
		// children included) closed it, unless the session is killed.
		copies.Wait()
		_ = outR.Close()
		_ = errR.Close()
		m.mu.Lock()
		delete(m.procs, p)
		// Groups nothing lives on in (this one, or an earlier
		// command's whose background children have ended): their ids
		// may go to other processes of the host now.
		m.forgetEmptyGroups()
		m.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// workDir is the directory commands start in: the work root, else the
// home, else the root.
func (m *machine) workDir() string {
	for _, d := range []string{
		filepath.Join(m.root, filepath.FromSlash(m.cfg.WorkRoot)),
		filepath.Join(m.root, "home", m.cfg.User),
	} {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
	}
	return m.root
}

// directTCPIP serves a direct-tcpip channel: a stream to an address as the
// box reaches it (the box shares the host's network).
func (f *forwards) directTCPIP(nch ssh.NewChannel) {
	var req struct {
		Host       string
		Port       uint32
		OriginHost string
		OriginPort uint32
	}
	if err := ssh.Unmarshal(nch.ExtraData(), &req); err != nil {
		_ = nch.Reject(ssh.ConnectionFailed, "bad direct-tcpip request")
		return
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	out, err := d.Dial("tcp", net.JoinHostPort(req.Host, strconv.Itoa(int(req.Port))))
	if err != nil {
		_ = nch.Reject(ssh.ConnectionFailed, "connect failed: "+err.Error())
		return
	}
	if !f.track(out) {
		_ = nch.Reject(ssh.ConnectionFailed, "connection closing")
		return
	}
	defer f.untrack(out)
	ch, creqs, err := nch.Accept()
	if err != nil {
		return
	}
	go ssh.DiscardRequests(creqs)
	pipeChannel(ch, out)
}

// pipeChannel copies between a channel and a TCP stream, passing EOF on
// as a half close, until both directions end.
func pipeChannel(ch ssh.Channel, c net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(c, ch)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(ch, c)
		_ = ch.CloseWrite()
	}()
	wg.Wait()
	_ = c.Close()
	_ = ch.Close()
}

// forwards are one connection's tcpip-forward listeners and forwarded
// TCP streams, closed with the connection.
type forwards struct {
	m  *machine
	sc *ssh.ServerConn

	mu     sync.Mutex
	closed bool
	lns    map[string]net.Listener // by "host:port" as requested (port resolved)
	conns  map[net.Conn]struct{}
}

// track registers a forwarded stream, or reports false once the connection
// is closing.
func (f *forwards) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		_ = c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *forwards) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	_ = c.Close()
}

type forwardRequest struct {
	Host string
	Port uint32
}

func (f *forwards) listen(r *ssh.Request) {
	var req forwardRequest
	if err := ssh.Unmarshal(r.Payload, &req); err != nil {
		reply(r, false)
		return
	}
	host := req.Host
	if host == "" || host == "localhost" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(int(req.Port))))
	if err != nil {
		reply(r, false)
		return
	}
	port := uint32(ln.Addr().(*net.TCPAddr).Port)
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		_ = ln.Close()
		reply(r, false)
		return
	}
	f.lns[net.JoinHostPort(req.Host, strconv.Itoa(int(port)))] = ln
	f.mu.Unlock()
	if r.WantReply {
		var payload []byte
		if req.Port == 0 {
			payload = ssh.Marshal(struct{ Port uint32 }{port})
		}
		_ = r.Reply(true, payload)
	}
	f.m.wg.Add(1)
	go func() {
		defer f.m.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.m.wg.Add(1)
			go func() {
				defer f.m.wg.Done()
				f.forward(req.Host, port, c)
			}()
		}
	}()
}

// forward opens a forwarded-tcpip channel to the client for c.
func (f *forwards) forward(host string, port uint32, c net.Conn) {
	if !f.track(c) {
		return
	}
	defer f.untrack(c)
	ra, _ := c.RemoteAddr().(*net.TCPAddr)
	var origin string
	var originPort uint32
	if ra != nil {
		origin, originPort = ra.IP.String(), uint32(ra.Port)
	}
	ch, reqs, err := f.sc.OpenChannel("forwarded-tcpip", ssh.Marshal(struct {
		Host       string
		Port       uint32
		OriginHost string
		OriginPort uint32
	}{host, port, origin, originPort}))
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	pipeChannel(ch, c)
}

func (f *forwards) cancel(r *ssh.Request) {
	var req forwardRequest
	if err := ssh.Unmarshal(r.Payload, &req); err != nil {
		reply(r, false)
		return
	}
	key := net.JoinHostPort(req.Host, strconv.Itoa(int(req.Port)))
	f.mu.Lock()
	ln, ok := f.lns[key]
	delete(f.lns, key)
	f.mu.Unlock()
	if ok {
		_ = ln.Close()
	}
	reply(r, ok)
}

func (f *forwards) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for k, ln := range f.lns {
		_ = ln.Close()
		delete(f.lns, k)
	}
	for c := range f.conns {
		_ = c.Close()
	}
}
