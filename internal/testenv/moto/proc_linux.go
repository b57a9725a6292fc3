package moto

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes moto exit when the test binary dies without running
// its cleanups (panic, timeout, signal).
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
