// The process groups a box's commands started: a command's background
// children (a VNC server, a browser) live on in its group after it exits,
// and stopping the box kills them. A group id is the process id of the
// command that started it, which the host may give to another process
// once the group is empty. So an empty group is forgotten when a command
// ends, and at stop a group is killed only when it is still the box's:
// its leader is the command the box started (same start time), or, with
// the leader gone, a process in it has the box's CRABBOX_FS_ROOT in its
// environment or its working directory under the box's root.

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

// forgetEmptyGroups drops the groups nothing is left in. Called with m.mu
// held.
func (m *machine) forgetEmptyGroups() {
	for pg := range m.pgids {
		if groupEmpty(pg) {
			delete(m.pgids, pg)
		}
	}
}

// procStat is what /proc/PID/stat says of a process: its group and start
// time (clock ticks since boot).
type procStat struct {
	pgrp  int
	start uint64
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice threads
	// itrealvalue starttime ...; comm may hold spaces and parens.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return procStat{}, false
	}
	pg, err1 := strconv.Atoi(f[2])
	st, err2 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil {
		return procStat{}, false
	}
	return procStat{pgrp: pg, start: st}, true
}

// startTime is the start time of the process pid (0 if unknown).
func startTime(pid int) uint64 {
	st, _ := readStat(pid)
	return st.start
}

// boxGroups returns those of pgids (group id: its leader's start time)
// that are still the box's (see the file comment).
func boxGroups(pgids map[int]uint64, root string) []int {
	if len(pgids) == 0 {
		return nil
	}
	var out []int
	undecided := map[int]bool{}
	for pg, start := range pgids {
		st, alive := readStat(pg)
		switch {
		case alive && start != 0 && st.start == start:
			out = append(out, pg) // the box's command itself
		case alive:
			// Another process has the id now: the box's group emptied
			// (an id in use as a group id is not given out again).
		default:
			undecided[pg] = true // the leader is gone; look at the members
		}
	}
	if len(undecided) == 0 {
		return out
	}
	wantEnv := []byte("CRABBOX_FS_ROOT=" + root + "\x00")
	rootDir := filepath.Clean(root) + string(filepath.Separator)
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		st, ok := readStat(pid)
		if !ok || !undecided[st.pgrp] {
			continue
		}
		env, _ := os.ReadFile(filepath.Join(d, "environ"))
		cwd, _ := os.Readlink(filepath.Join(d, "cwd"))
		if bytes.HasPrefix(env, wantEnv) || bytes.Contains(env, append([]byte{0}, wantEnv...)) ||
			strings.HasPrefix(filepath.Clean(cwd)+string(filepath.Separator), rootDir) {
			out = append(out, st.pgrp)
			delete(undecided, st.pgrp)
		}
	}
	return out
}
