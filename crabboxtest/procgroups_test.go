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

	// Commands that leave a child behind in their group and exit: one
	// keeping the box's environment, one with none, one without
	// CRABBOX_FS_ROOT.
	var children []int
	for i, bg := range []string{
		`sleep 300`,
		`env -i sleep 300`,
		`(unset CRABBOX_FS_ROOT; exec sleep 300)`,
	} {
		pidPath := filepath.Join(m.FSRoot, "child.pid")
		s, err := cl.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Run(bg + ` >/dev/null 2>&1 </dev/null & echo $! > "$CRABBOX_FS_ROOT/child.pid"`); err != nil {
			t.Fatal(i, err)
		}
		children = append(children, readPid(t, pidPath))
	}

	// Processes of the host's, each in a group of its own, standing for
	// ones given a group id the box used: a group leader, and a group
	// whose leader has exited, leaving a child.
	foreign := exec.Command("sleep", "300")
	foreign.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := foreign.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = foreign.Wait(); close(exited) }()
	t.Cleanup(func() { _ = foreign.Process.Kill(); <-exited })
	orphanPath := filepath.Join(t.TempDir(), "orphan.pid")
	leader := exec.Command("/bin/sh", "-c", `sleep 300 >/dev/null 2>&1 </dev/null & echo $! > "$1"`, "sh", orphanPath)
	leader.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := leader.Run(); err != nil {
		t.Fatal(err)
	}
	orphan := readPid(t, orphanPath)
	t.Cleanup(func() { _ = syscall.Kill(orphan, syscall.SIGKILL) })
	c.mu.Lock()
	mach := c.machines[m.ID]
	c.mu.Unlock()
	mach.mu.Lock()
	mach.pgids[foreign.Process.Pid] = 1 // a start time not the foreign process's
	mach.pgids[leader.Process.Pid] = startTime(orphan)
	mach.mu.Unlock()

	if err := c.KillMachine(m.ID); err != nil {
		t.Fatal(err)
	}
	for i, child := range children {
		eventually(t, "the box's background child "+strconv.Itoa(i)+" to be killed", func() bool { return !alive(child) })
	}
	select {
	case <-exited:
		t.Fatal("stopping the box killed a process group that is not the box's")
	case <-time.After(200 * time.Millisecond):
	}
	if !alive(orphan) {
		t.Fatal("stopping the box killed a group that is not the box's, whose leader had exited")
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

// readPid reads the process id a command wrote to path.
func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
