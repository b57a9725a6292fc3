//go:build !linux

package moto

import "os/exec"

func dieWithParent(cmd *exec.Cmd) {}
