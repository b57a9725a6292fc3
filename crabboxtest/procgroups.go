// The process groups a box's commands started: a command's background
// children (a VNC server, a browser) live on in its group after it exits,
// and stopping the box kills them. A group id is a process id, which the
// host reuses once the group is empty; so an empty group is forgotten
// when its command ends, and at stop a group is killed only while a
// process of this box (one with the box's CRABBOX_FS_ROOT) is in it.

package crabboxtest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// groupEmpty reports whether no process is in process group pgid.
func groupEmpty(pgid int) bool {
	return errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}

// boxGroups returns those of pgids that hold a process whose environment
// has CRABBOX_FS_ROOT=root.
func boxGroups(pgids map[int]struct{}, root string) []int {
	if len(pgids) == 0 {
		return nil
	}
	want := []byte("CRABBOX_FS_ROOT=" + root + "\x00")
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	found := map[int]bool{}
	for _, d := range dirs {
		pg, ok := procGroup(d)
		if !ok || found[pg] {
			continue
		}
		if _, ours := pgids[pg]; !ours {
			continue
		}
		env, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil {
			continue
		}
		if bytes.HasPrefix(env, want) || bytes.Contains(env, append([]byte{0}, want...)) {
			found[pg] = true
		}
	}
	out := make([]int, 0, len(found))
	for pg := range found {
		out = append(out, pg)
	}
	return out
}

// procGroup is the process group of the process at /proc/PID dir.
func procGroup(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return 0, false
	}
	// pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return 0, false
	}
	pg, err := strconv.Atoi(f[2])
	return pg, err == nil
}
