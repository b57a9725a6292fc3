// Package ports picks TCP ports for servers that start after the pick
// (sshd, moto, x11vnc, a machine that boots later).
//
// A port from listening on ":0" and closing is free only for a moment: the
// kernel hands the same ephemeral range to every ":0" listener and every
// client socket of the machine, so a test running beside ours (another
// package under go test ./...) can be given it before our server binds it.
// Ports picked here come from below the ephemeral range, which the kernel
// never hands out by itself, at random, and are checked by a trial bind;
// one process never gets the same port twice while it has others to give.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// bandLow is the lowest port picked; the band ends below the ephemeral
// range (ip_local_port_range), 32768 by default.
const bandLow = 10000

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 0 {
				return n
			}
		}
	}
	return 32768
}

// Free returns a TCP port on host (an address of this machine, such as
// "127.0.0.1") that nothing listened on a moment ago and that no ":0"
// listener or client socket can be given meanwhile.
func Free(host string) (int, error) {
	hi := ephemeralLow()
	if hi-bandLow < 1000 {
		// No room below the ephemeral range: a port from the kernel.
		return kernelPort(host)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(given) > (hi-bandLow)/2 {
		clear(given)
	}
	var lastErr error
	for range 200 {
		p := bandLow + rand.IntN(hi-bandLow)
		if given[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			lastErr = err
			continue
		}
		_ = l.Close()
		given[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("ports: no free port on %s in %d-%d: %v", host, bandLow, hi-1, lastErr)
}

// Addr is host:port with a port from Free.
func Addr(host string) (string, error) {
	p, err := Free(host)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

func kernelPort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
