//go:build !linux

// Boxes need Linux namespaces: elsewhere nothing boots.

package cloudbox

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
)

func platform() error {
	return fmt.Errorf("%w: boxes need Linux namespaces (this is %s)", ErrUnavailable, runtime.GOOS)
}

func initCommand(lower, dir string, argv ...string) *exec.Cmd {
	return exec.Command("false")
}

func inNetns(ns *os.File, f func()) bool { return false }
