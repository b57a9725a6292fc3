//go:build linux

// The setns(2) system call number on linux/arm64 (package syscall lacks it).

package cloudbox

const sysSetns = 268
