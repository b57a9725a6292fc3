// Tests of driver.go: Close.

package crabboxtest

import (
	"errors"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

func TestCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	dir := c.Dir()
	var addrs []string
	for i := 0; i < 3; i++ {
		l := newLease(t, nil)
		m := boot(t, c, l)
		addrs = append(addrs, m.SSHAddr)
		cl, err := dialAs(m.SSHAddr, "crabbox", l.signer, l.hostKey)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		s, _ := startSleeper(t, cl, m.FSRoot)
		defer s.Close()
	}
	if c.MachineCount() != 3 {
		t.Fatalf("MachineCount = %d", c.MachineCount())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if nc, err := net.DialTimeout("tcp", a, 5*time.Second); err == nil {
			nc.Close()
			t.Errorf("%s still accepts connections after Close", a)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cloud dir %s still exists: %v", dir, err)
	}
	if _, err := c.GetMachine(ctxT(t), "x"); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("call after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Client-side goroutines end when the clients notice; allow some slack.
	eventually(t, "goroutines to wind down", func() bool { return runtime.NumGoroutine() <= before+12 })
}
