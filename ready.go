// Readiness: waiting until a new lease's machine has an address, answers SSH
// with the pinned host key, and passes the readiness command.

package crabbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/sshx"
	"github.com/crabbox/crabbox-go/provider"
)

// waitReady polls the machine until it has an address, then SSH until it
// answers with the pinned host key, then the readiness command until it
// passes. A host key mismatch ends the wait at once.
func (l *Lease) waitReady(ctx context.Context, timeout time.Duration) error {
	c := l.c
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := c.o.now()
	state, lastErr := "pending", error(nil)
	for attempt := 1; ; attempt++ {
		st, err := l.probe(ctx)
		if st != "" {
			state = st
		}
		if err == nil {
			return nil
		}
		lastErr = err
		if errors.Is(err, ErrHostKeyMismatch) || errors.Is(err, ErrNotFound) && state == "gone" ||
			errors.Is(err, ErrPermission) || errors.Is(err, ErrInvalidArgument) {
			return &WaitError{Resource: "lease", ID: l.ID, LastState: state, Attempts: attempt,
				Waited: c.o.now().Sub(start), Err: err}
		}
		c.emit(Event{Kind: EventLeaseWaiting, Resource: "lease", ID: l.ID, State: state, Attempt: attempt, Message: err.Error()})
		if serr := sleep(ctx, c.o.backoff(attempt)); serr != nil {
			return &WaitError{Resource: "lease", ID: l.ID, LastState: state, Attempts: attempt,
				Waited: c.o.now().Sub(start), Err: errors.Join(serr, lastErr)}
		}
	}
}

// probe does one readiness attempt and reports the state it reached.
func (l *Lease) probe(ctx context.Context) (string, error) {
	c := l.c
	m, err := c.drv.GetMachine(ctx, l.MachineID)
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
	client, err := l.sshClient(ctx)
	if err != nil {
		return "ssh", err
	}
	if err := client.Connect(ctx); err != nil {
		return "ssh", err
	}
	ready := readyCommand()
	if c.caps.access != nil {
		ready = "true" // existing hosts have no crabbox bootstrap
	}
	res, err := client.Run(ctx, sshx.Request{Command: ready, Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		return "ssh", err
	}
	if res.ExitCode != 0 {
		return "bootstrapping", fmt.Errorf("readiness command exited %d", res.ExitCode)
	}
	return "ready", nil
}

func readyCommand() string {
	return `"${CRABBOX_FS_ROOT:-}"` + cloudinit.ReadyCommand
}
