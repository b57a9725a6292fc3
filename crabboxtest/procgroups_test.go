package crabboxtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopKillsOnlyTheBoxsGroups: a background child that outlives its
// command is killed when the box stops; a process group the box once
// started, whose id the host has since given to a process of someone
// else (forced here by recording a foreign group's id), is not.
func TestStopKillsOnlyTheBoxsGroups(t *testing.T) {
	c := Start(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	cl := dial(t, m.Machine, l)

	// A command that leaves a child behind in its group and exits.
	pidPath := filepath.Join(m.FSRoot, "child.pid")
	s, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(`sleep 300 >/dev/null 2>&1 </dev/null & echo $! > "$CRABBOX_FS_ROOT/child.pid"`); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pidPath)
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}

	// A process of the host's, in a group of its own, standing for one
	// that was given a group id the box used.
	foreign := exec.Command("sleep", "300")
	foreign.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := foreign.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = foreign.Wait(); close(exited) }()
	t.Cleanup(func() { _ = foreign.Process.Kill(); <-exited })
	c.mu.Lock()
	mach := c.machines[m.ID]
	c.mu.Unlock()
	mach.mu.Lock()
	mach.pgids[foreign.Process.Pid] = struct{}{}
	mach.mu.Unlock()

	if err := c.KillMachine(m.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the box's background child to be killed", func() bool { return !alive(child) })
	select {
	case <-exited:
		t.Fatal("stopping the box killed a process group that is not the box's")
	case <-time.After(200 * time.Millisecond):
	}
}

// Groups whose commands ended with nothing left in them are forgotten.
func TestEmptyGroupsAreForgotten(t *testing.T) {
	c := Start(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	cl := dial(t, m.Machine, l)
	for range 5 {
		s, err := cl.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Run("true"); err != nil {
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	mach := c.machines[m.ID]
	c.mu.Unlock()
	eventually(t, "the ended commands' groups to be forgotten", func() bool {
		mach.mu.Lock()
		defer mach.mu.Unlock()
		return len(mach.pgids) == 0
	})
}
