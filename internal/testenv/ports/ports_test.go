package ports

import (
	"net"
	"strconv"
	"testing"
)

// Ports come from below the ephemeral range, are bindable, and are not
// given twice.
func TestFreeIsBelowTheEphemeralRangeAndUnique(t *testing.T) {
	hi := ephemeralLow()
	seen := map[int]bool{}
	for range 200 {
		p, err := Free("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if p < bandLow || p >= hi {
			t.Fatalf("port %d outside %d-%d", p, bandLow, hi-1)
		}
		if seen[p] {
			t.Fatalf("port %d given twice", p)
		}
		seen[p] = true
	}
	p, err := Free("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("the port is not free: %v", err)
	}
	l.Close()
}

// A port something listens on is never given.
func TestFreeSkipsPortsInUse(t *testing.T) {
	// Occupy most of a small band by listening, then ask: every answer is
	// a port nobody holds.
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	taken := map[int]bool{}
	for p := bandLow; p < bandLow+300; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err == nil {
			held = append(held, l)
			taken[p] = true
		}
	}
	// 1,000 picks: without the trial bind, one lands on a held port
	// (1.3 % of the band each) all but e^-13 of the time.
	for range 1000 {
		p, err := Free("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if taken[p] {
			t.Fatalf("port %d is listened on, but was given", p)
		}
	}
}
