// Running commands on a lease: Lease.Run over the lease's one SSH connection,
// its options, RunResult and RunError, and the bounded output tails.

package crabbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/sshx"
	"github.com/crabbox/crabbox-go/provider"
)

// sshClient returns the lease's one SSH client, creating it on first use.
func (l *Lease) sshClient(ctx context.Context) (*sshx.Client, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return nil, fmt.Errorf("lease %s was released: %w", l.ID, ErrNotFound)
	}
	if l.ssh != nil {
		return l.ssh, nil
	}
	if l.SSHAddr == "" {
		return nil, errors.New("lease has no SSH address yet")
	}
	if l.signer == nil || l.hostKey == nil {
		if err := l.loadAccess(ctx); err != nil {
			return nil, err
		}
	}
	cfg := sshx.Config{Addr: l.SSHAddr, User: l.user, Signer: l.signer, HostKey: l.hostKey,
		KeepAliveInterval: l.c.o.keepAlive, KeepAliveMax: l.c.o.keepAliveMax}
	if l.c.o.dial != nil {
		cfg.Dial = l.c.o.dial
	}
	cl, err := sshx.New(cfg)
	if err != nil {
		return nil, err
	}
	l.ssh = cl
	return cl, nil
}

// loadAccess finds credentials for a re-attached lease: the driver's access
// for hosts that ignore user-data, else the keys in the state dir.
// Called with l.mu held.
func (l *Lease) loadAccess(ctx context.Context) error {
	if ap := l.c.caps.access; ap != nil {
		a, err := ap.MachineAccess(ctx, &provider.Machine{ID: l.MachineID, SSHAddr: l.SSHAddr, Labels: l.Labels})
		if err != nil {
			return err
		}
		l.user, l.signer, l.hostKey, l.workRoot = a.User, a.Signer, a.HostKey, a.WorkRoot
		return nil
	}
	signer, hostKey, err := l.c.loadLeaseKeys(l.ID)
	if err != nil {
		return err
	}
	l.signer, l.hostKey = signer, hostKey
	if l.user == "" {
		l.user = cloudinit.DefaultUser
	}
	return nil
}

// RunResult is the outcome of a command that ran. In JSON its duration is
// float seconds ("duration_seconds"), as everywhere else; the nanoseconds
// earlier versions wrote ("duration_ns") are still read.
type RunResult struct {
	Command    string        `json:"command"`
	ExitCode   int           `json:"exit_code"`
	Signal     string        `json:"signal,omitempty"`
	Duration   time.Duration `json:"duration_ns"`
	StdoutTail string        `json:"stdout_tail"`
	StderrTail string        `json:"stderr_tail"`
}

// runResultJSON is RunResult without its methods, for its JSON methods.
type runResultJSON RunResult

// MarshalJSON writes the result with its duration as float seconds.
func (r RunResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		*runResultJSON
		Duration float64 `json:"duration_seconds"`
		// Shadows the nanoseconds field of earlier versions.
		DurationNs *int64 `json:"duration_ns,omitempty"`
	}{runResultJSON: (*runResultJSON)(&r), Duration: seconds(r.Duration)})
}

// UnmarshalJSON reads what MarshalJSON writes, and the nanoseconds of
// earlier versions; the seconds win when both are there.
func (r *RunResult) UnmarshalJSON(data []byte) error {
	if r == nil {
		return fmt.Errorf("%w: nil run result", ErrInvalidArgument)
	}
	aux := struct {
		*runResultJSON
		Duration *float64 `json:"duration_seconds"`
	}{runResultJSON: (*runResultJSON)(r)}
	if err := json.Unmarshal(data, &aux); err != nil {
		return err
	}
	if aux.Duration != nil {
		r.Duration = fromSeconds(*aux.Duration)
	}
	return nil
}

// RunError is returned when a command ran and exited non-zero. It matches
// ErrCommandFailed. Its message has the prefix of every other error
// ("crabbox: run [provider] lease: ") and names the command (its first
// line, shortened), then the exit code or signal and the output's tail.
type RunError struct {
	Result *RunResult
	// Provider and Lease say where the command ran (set by Lease.Run).
	Provider, Lease string
}

// runErrorCommandLen is how much of a command's first line a RunError's
// message shows.
const runErrorCommandLen = 60

func (e *RunError) Error() string {
	if e == nil || e.Result == nil {
		return "command failed"
	}
	tail := strings.TrimSpace(e.Result.StderrTail)
	if tail == "" {
		tail = strings.TrimSpace(e.Result.StdoutTail)
	}
	if len(tail) > 300 {
		tail = "..." + tail[len(tail)-300:]
	}
	what := fmt.Sprintf("exit code %d", e.Result.ExitCode)
	if e.Result.Signal != "" {
		what = "signal " + e.Result.Signal
	}
	msg := (&OpError{Op: "run", Provider: e.Provider, ID: e.Lease}).Error()
	cmd := strings.TrimSpace(e.Result.Command)
	if first, _, more := strings.Cut(cmd, "\n"); more {
		cmd = strings.TrimSpace(first) + " ..."
	}
	if r := []rune(cmd); len(r) > runErrorCommandLen {
		cmd = string(r[:runErrorCommandLen]) + "..."
	}
	if cmd != "" {
		msg += fmt.Sprintf("command %q ", cmd)
	} else {
		msg += "command "
	}
	msg += "failed with " + what
	if tail != "" {
		msg += ": " + tail
	}
	return msg
}

func (e *RunError) Unwrap() error { return ErrCommandFailed }

type runOptions struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	strict         bool
	tail           int
	env            map[string]string
}

// RunOption configures Lease.Run.
type RunOption func(*runOptions)

// WithStdout streams the command's stdout to w.
func WithStdout(w io.Writer) RunOption { return func(o *runOptions) { o.stdout = w } }

// WithStderr streams the command's stderr to w (it may be the same writer
// as stdout).
func WithStderr(w io.Writer) RunOption { return func(o *runOptions) { o.stderr = w } }

// WithStdin feeds r to the command.
func WithStdin(r io.Reader) RunOption { return func(o *runOptions) { o.stdin = r } }

// Strict runs the command with bash in strict mode (set -euo pipefail).
func Strict() RunOption { return func(o *runOptions) { o.strict = true } }

// WithTailBytes bounds the output kept in RunResult (default 8 KiB each).
func WithTailBytes(n int) RunOption {
	return func(o *runOptions) {
		if n > 0 {
			o.tail = n
		}
	}
}

// WithEnv exports variables to the command (set in the command line, since
// sshd usually refuses environment requests).
func WithEnv(env map[string]string) RunOption {
	return func(o *runOptions) {
		if o.env == nil {
			o.env = map[string]string{}
		}
		for k, v := range env {
			o.env[k] = v
		}
	}
}

// ShellQuote quotes s for a POSIX shell.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Run runs a shell command on the lease over its one SSH connection. It
// returns the result for every command that ran; a non-zero exit also
// returns a *RunError (errors.Is ErrCommandFailed). Transport failures match
// ErrConnectionLost or ErrHostKeyMismatch; a cancelled ctx stops the command.
func (l *Lease) Run(ctx context.Context, command string, opts ...RunOption) (*RunResult, error) {
	if err := l.usable("run"); err != nil {
		return nil, err
	}
	o := runOptions{tail: 8 << 10}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if strings.TrimSpace(command) == "" {
		return nil, l.c.opErr("run", l.ID, fmt.Errorf("%w: empty command", ErrInvalidArgument))
	}
	// The client first: a re-attached lease learns its access (and the
	// work root commands run in) when its client is made.
	client, err := l.sshClient(ctx)
	if err != nil {
		return nil, l.c.opErr("run", l.ID, err)
	}
	cmd, err := l.commandLine(command, o)
	if err != nil {
		return nil, l.c.opErr("run", l.ID, err)
	}
	outTail, errTail := newTail(o.tail), newTail(o.tail)
	var stdout, stderr io.Writer = outTail, errTail
	if o.stdout != nil && o.stdout == o.stderr {
		w := &lockedWriter{w: o.stdout}
		stdout, stderr = io.MultiWriter(outTail, w), io.MultiWriter(errTail, w)
	} else {
		if o.stdout != nil {
			stdout = io.MultiWriter(outTail, o.stdout)
		}
		if o.stderr != nil {
			stderr = io.MultiWriter(errTail, o.stderr)
		}
	}
	start := time.Now()
	res, err := client.Run(ctx, sshx.Request{Command: cmd, Stdin: o.stdin, Stdout: stdout, Stderr: stderr})
	rr := &RunResult{Command: command, ExitCode: res.ExitCode, Signal: res.Signal, Duration: time.Since(start),
		StdoutTail: outTail.String(), StderrTail: errTail.String()}
	if err != nil {
		return nil, l.c.opErr("run", l.ID, err)
	}
	if rr.ExitCode != 0 || rr.Signal != "" {
		return rr, &RunError{Result: rr, Provider: l.c.info.Name, Lease: l.ID}
	}
	return rr, nil
}

// commandLine is the command line Run sends for command: strict mode, the
// exported environment and the work root applied.
func (l *Lease) commandLine(command string, o runOptions) (string, error) {
	cmd := command
	if o.strict {
		cmd = "bash -c " + ShellQuote("set -euo pipefail\n"+command)
	}
	var exports strings.Builder
	if len(o.env) > 0 {
		keys := make([]string, 0, len(o.env))
		for k := range o.env {
			if !envNameOK(k) {
				return "", fmt.Errorf("%w: environment name %q", ErrInvalidArgument, k)
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&exports, "export %s=%s; ", k, ShellQuote(o.env[k]))
		}
	}
	if wr := l.commandDir(); wr != "" {
		// "&&": a missing work root fails the command, never runs it
		// elsewhere.
		cmd = "cd " + ShellQuote(wr) + " && " + cmd
	}
	return exports.String() + cmd, nil
}

// commandDir is the directory commands run in when the driver's access
// names one (an existing host's work root); "" leaves them in the login
// directory.
func (l *Lease) commandDir() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.workRoot
}

func envNameOK(k string) bool {
	if k == "" {
		return false
	}
	for i, r := range k {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// tailBuffer keeps the last n bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	n   int
	buf []byte
}

func newTail(n int) *tailBuffer { return &tailBuffer{n: n} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.n {
		t.buf = append(t.buf[:0:0], t.buf[len(t.buf)-t.n:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
