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
	if hi-bandLow < 1000 {
		t.Skipf("the ephemeral range starts at %d: no band below it", hi)
	}
	seen := map[int]bool{}
	for range 200 {
		p, err := Free("127.0.0.2") // not where the other packages' servers bind
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
	p, err := Free("127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("the port is not free: %v", err)
	}
	l.Close()
}

// A port something listens on is never given.
func TestFreeSkipsPortsInUse(t *testing.T) {
	// Occupy a part of the band by listening, then ask: every answer is
	// a port nobody holds. On 127.0.0.2, where no server of the other
	// packages binds (they bind 127.0.0.1), so that the ports held here
	// never fail one of them.
	if ephemeralLow()-bandLow < 1000 {
		t.Skip("no band below the ephemeral range")
	}
	const host = "127.0.0.2"
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	taken := map[int]bool{}
	for p := bandLow; p < bandLow+300; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			held = append(held, l)
			taken[p] = true
		}
	}
	// 1,000 picks: without the trial bind, one lands on a held port
	// (1.3 % of the band each) all but e^-13 of the time.
	for range 1000 {
		p, err := Free(host)
		if err != nil {
			t.Fatal(err)
		}
		if taken[p] {
			t.Fatalf("port %d is listened on, but was given", p)
		}
	}
}
