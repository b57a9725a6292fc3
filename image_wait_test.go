// Tests of the default image wait schedule: the polls a wait makes and
// how late it notices an image that was pending a given time.

package crabbox_test

import (
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
)

// overshoot is how long after an image pending p the default schedule
// polls, and how many polls the wait makes.
func overshoot(p time.Duration) (time.Duration, int) {
	b := crabbox.ImageWaitBackoff()
	var t time.Duration
	n := 1
	for ; t < p; n++ {
		t += b(n)
	}
	return t - p, n
}

func TestImageWaitScheduleOvershoot(t *testing.T) {
	for _, tc := range []struct {
		pending, maxOver time.Duration
		maxPolls         int
	}{
		{10 * time.Second, 2 * time.Second, 12},
		{40 * time.Second, 4 * time.Second, 40},
		{300 * time.Second, 30 * time.Second, 70},
		{45 * time.Minute, 30 * time.Second, 540},
	} {
		over, polls := overshoot(tc.pending)
		t.Logf("pending %v: overshoot %v, %d polls", tc.pending, over, polls)
		if over > tc.maxOver || polls > tc.maxPolls {
			t.Errorf("pending %v: overshoot %v (max %v), %d polls (max %d)", tc.pending, over, tc.maxOver, polls, tc.maxPolls)
		}
	}
}
