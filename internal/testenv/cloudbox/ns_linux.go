// Linux namespaces: the box's init in new namespaces, and sockets opened
// inside a box's network namespace.

package cloudbox

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

func platform() error { return nil }

// initCommand runs init.sh as PID 1 of new namespaces: it mounts the
// overlay of lower below dir/upper and execs argv (the boot script when
// empty) chrooted into it.
func initCommand(lower, dir string, argv ...string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", append([]string{"-c", initScript, "cloudbox-init", lower, dir}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		Pdeathsig:  syscall.SIGKILL,
	}
	return cmd
}

// inNetns runs f on an OS thread switched into the network namespace ns,
// and reports whether switching (and back) worked. A thread that could not
// switch back is never reused (it stays locked and exits).
func inNetns(ns *os.File, f func()) bool {
	if ns == nil {
		return false
	}
	runtime.LockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return false
	}
	defer self.Close()
	if _, _, e := syscall.RawSyscall(sysSetns, ns.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
		runtime.UnlockOSThread()
		return false
	}
	f()
	if _, _, e := syscall.RawSyscall(sysSetns, self.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
		return true // thread stays locked: it dies with this goroutine
	}
	runtime.UnlockOSThread()
	return true
}
