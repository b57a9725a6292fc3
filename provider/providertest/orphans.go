// The OrphanSweeper subtest: SweepOrphans leaves what is younger than the
// grace and what live machines use, and deletes what a vanished machine
// left once the grace passed.

package providertest

import (
	"context"
	"testing"

	"github.com/crabbox/crabbox-go/provider"
)

// OrphanHooks let the OrphanSweeper subtest make an orphan and observe it.
// A driver's test implements them with its backend's raw API.
type OrphanHooks struct {
	// Vanish removes machine m from the backend behind the driver's back
	// (as if it terminated on its own and the backend forgot it), leaving
	// what the driver made for it (key pair, SSH key, ...). Afterwards
	// GetMachine(m.ID) must report ErrNotFound.
	Vanish func(ctx context.Context, m *provider.Machine) error
	// Leftover reports whether what the driver made for machine m, created
	// with idempotency token token, still exists.
	Leftover func(ctx context.Context, m *provider.Machine, token string) (bool, error)
	// PassGrace moves the driver's clock past its orphan grace period.
	PassGrace func()
}

func (s *suite) testOrphanSweeper(t *testing.T) {
	sw, ok := s.h.Driver.(provider.OrphanSweeper)
	if !ok {
		t.Skip("driver does not implement provider.OrphanSweeper")
	}
	h := s.h.Orphans
	if h == nil {
		t.Skip("Harness.Orphans is unset: no way to make an orphan")
	}
	if h.Vanish == nil || h.Leftover == nil || h.PassGrace == nil {
		t.Fatal("Harness.Orphans needs Vanish, Leftover and PassGrace")
	}
	ctx := t.Context()
	live, liveToken := s.createMachineToken(t, "orphan-live")
	victim, victimToken := s.createMachineToken(t, "orphan-victim")
	live = s.waitRunning(t, live.ID)
	victim = s.waitRunning(t, victim.ID)

	left := func(m *provider.Machine, token, when string) bool {
		t.Helper()
		ok, err := h.Leftover(ctx, m, token)
		if err != nil {
			t.Fatalf("Harness.Orphans.Leftover(%s) %s: %v", m.ID, when, err)
		}
		return ok
	}
	sweep := func(when string) int {
		t.Helper()
		n, err := sw.SweepOrphans(ctx)
		if err != nil {
			t.Fatalf("SweepOrphans %s: %v", when, err)
		}
		if n < 0 {
			t.Errorf("SweepOrphans %s = %d: want a count of at least 0", when, n)
		}
		return n
	}

	if err := h.Vanish(ctx, victim); err != nil {
		t.Fatalf("Harness.Orphans.Vanish(%s): %v", victim.ID, err)
	}
	s.waitMachineGone(t, victim.ID)
	if !left(victim, victimToken, "right after it vanished") {
		t.Fatalf("nothing is left of vanished machine %s before any sweep: the driver made nothing to sweep, or the hooks are wrong", victim.ID)
	}

	// Within the grace, nothing is deleted: a lease may be between making
	// its key and creating its machine.
	sweep("within the grace")
	if !left(victim, victimToken, "after a sweep within the grace") {
		t.Errorf("SweepOrphans deleted what vanished machine %s left although it is younger than the grace", victim.ID)
	}
	if !left(live, liveToken, "after a sweep within the grace") {
		t.Errorf("SweepOrphans deleted what live machine %s uses", live.ID)
	}

	// Past the grace, the vanished machine's leftovers go; the live
	// machine's stay.
	h.PassGrace()
	if n := sweep("past the grace"); n < 1 {
		t.Errorf("SweepOrphans past the grace = %d: want at least 1 (vanished machine %s)", n, victim.ID)
	}
	if left(victim, victimToken, "after a sweep past the grace") {
		t.Errorf("SweepOrphans past the grace left what vanished machine %s made", victim.ID)
	}
	if !left(live, liveToken, "after a sweep past the grace") {
		t.Errorf("SweepOrphans past the grace deleted what live machine %s uses", live.ID)
	}
	if _, err := s.h.Driver.GetMachine(ctx, live.ID); err != nil {
		t.Errorf("GetMachine(%s) after the sweeps: %v: the live machine must survive", live.ID, err)
	}
	sweep("a second time") // nothing left to do is not an error

	_, err := sw.SweepOrphans(cancelledCtx())
	checkCancelled(t, "SweepOrphans", err)
}
