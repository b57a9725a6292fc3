// Package leakcheck finds what a test run left behind on the local side: SDK
// goroutines still running and lease entries still in a state dir. The
// fault sweeps of the drivers use it next to their cloud-side checks.
package leakcheck

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Cancelled fails t unless err matches context.Canceled and the cancelled
// call returned within bound (it took took).
func Cancelled(t testing.TB, err error, took, bound time.Duration) {
	t.Helper()
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if took > bound {
		t.Errorf("the cancelled call took %v, want at most %v", took, bound)
	}
}

// Local fails t if the state dir stateDir keeps a lease or an SDK goroutine
// is still running a few seconds on.
func Local(t testing.TB, stateDir string) {
	t.Helper()
	if l, err := LeaseEntries(stateDir); err != nil || len(l) > 0 {
		t.Errorf("state dir keeps leases %v (%v)", l, err)
	}
	if g := Goroutines(3 * time.Second); len(g) > 0 {
		t.Errorf("%d SDK goroutines left:\n%s", len(g), strings.Join(g, "\n\n"))
	}
}

// Goroutines returns the stacks of the goroutines running SDK code (the
// module's packages other than test tooling and tests), after waiting up to
// wait for them to end.
func Goroutines(wait time.Duration) []string {
	var left []string
	for deadline := time.Now().Add(wait); ; {
		left = left[:0]
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if !strings.Contains(g, "github.com/crabbox/crabbox-go") || strings.Contains(g, "/internal/testenv/") ||
				strings.Contains(g, "_test.") || strings.Contains(g, "testing.tRunner") {
				continue
			}
			left = append(left, g)
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LeaseEntries lists the lease directories in the state dir dir.
func LeaseEntries(dir string) ([]string, error) {
	es, err := os.ReadDir(filepath.Join(dir, "leases"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out, nil
}
