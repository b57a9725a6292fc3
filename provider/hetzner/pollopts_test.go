package hetzner_test

import (
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider/hetzner"
)

func TestPollOptsSchedule(t *testing.T) {
	f := hetzner.PollOpts().BackoffFunc
	// hcloud-go counts retries from 0.
	for r, want := range map[int]time.Duration{0: time.Second, 10: time.Second, 1000: 30 * time.Second} {
		if got := f(r); got != want {
			t.Errorf("retry %d: %v, want %v", r, got, want)
		}
	}
}
