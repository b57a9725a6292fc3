package xdisplay

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Reservations exclude each other, in this process and in another one,
// and a released number can be reserved again.
func TestReservationsExcludeEachOther(t *testing.T) {
	// Numbers no caller reserves (desktoptest: 99-998, the root
	// package's hosts: 200-899).
	const lo, hi = 1990, 1994
	var held []*Reservation
	seen := map[int]bool{}
	for {
		r, err := Reserve(lo, hi, lo)
		if err != nil {
			break
		}
		if seen[r.N] {
			t.Fatalf("display %d reserved twice", r.N)
		}
		seen[r.N] = true
		held = append(held, r)
	}
	free := 0
	for n := lo; n < hi; n++ {
		if !xLocked(n) {
			free++
		}
	}
	if len(held) != free {
		t.Fatalf("reserved %d of %d free numbers", len(held), free)
	}
	if len(held) == 0 {
		t.Skip("no free display numbers in the test range")
	}
	// Another process is refused every held number.
	cmd := exec.Command(os.Args[0], "-test.run=^TestReserveHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "GO_XDISPLAY_HELPER=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "reserved none") {
		t.Fatalf("another process reserved a held number: %s", out)
	}
	first := held[0].N
	held[0].Release()
	held[0].Release() // twice is fine
	r, err := Reserve(first, first+1, first)
	if err != nil {
		t.Fatalf("a released number is not reservable: %v", err)
	}
	r.Release()
	for _, r := range held[1:] {
		r.Release()
	}
}

func TestReserveHelper(t *testing.T) {
	if os.Getenv("GO_XDISPLAY_HELPER") == "" {
		t.Skip("child process of TestReservationsExcludeEachOther")
	}
	r, err := Reserve(1990, 1994, 1990)
	if err == nil {
		t.Fatalf("reserved %s while the parent holds every number", strconv.Itoa(r.N))
	}
	_, _ = os.Stdout.WriteString("reserved none\n")
}
