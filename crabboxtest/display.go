// The virtual display of desktop and browser leases.

package crabboxtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
)

// startDisplay starts the machine's own Xvfb (desktop leases) on a free
// display and returns it (":N"). Commands see it as DISPLAY and
// CRABBOX_DISPLAY. Without an Xvfb on the host, the machine boots without
// a display and its readiness check reports that.
func (m *machine) startDisplay(ctx context.Context) (string, error) {
	xvfb, err := exec.LookPath("Xvfb")
	if err != nil {
		return "", nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer r.Close()
	cmd := exec.Command(xvfb, "-displayfd", "3", "-screen", "0", cloudinit.ScreenGeometry, "-nolisten", "tcp")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Dir = m.root

	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		_ = w.Close()
		return "", errors.New("machine stopped")
	}
	err = cmd.Start()
	_ = w.Close()
	if err != nil {
		m.mu.Unlock()
		return "", err
	}
	m.xvfb = cmd
	exited := make(chan struct{})
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		_ = cmd.Wait()
		close(exited)
	}()

	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case s := <-line:
		if s == "" {
			return "", fmt.Errorf("Xvfb exited without a display")
		}
		return ":" + s, nil
	case <-ctx.Done():
		return "", ctx.Err()
	case <-time.After(30 * time.Second):
		return "", fmt.Errorf("Xvfb did not report its display")
	}
}

// stopDisplay asks the machine's Xvfb to exit (so it removes its lock
// file), killing it if it does not. Called with m.mu held.
func (m *machine) stopDisplay() {
	if m.xvfb == nil || m.xvfb.Process == nil {
		return
	}
	p := m.xvfb.Process
	_ = p.Signal(syscall.SIGTERM)
	m.timers = append(m.timers, time.AfterFunc(5*time.Second, func() { _ = p.Kill() }))
}
