package pollsched

import (
	"testing"
	"time"
)

// pollTimes returns the times of the polls of a wait of length total.
func pollTimes(total time.Duration) []time.Duration {
	var ts []time.Duration
	var t time.Duration
	for n := 1; t <= total; n++ {
		ts = append(ts, t)
		t += Delay(n)
	}
	return ts
}

func TestDelayTable(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{1, time.Second}, {2, time.Second}, {10, time.Second}, {11, time.Second},
		{12, 1100 * time.Millisecond}, {13, 1210 * time.Millisecond},
		{40, 0}, {1000, Max},
	} {
		got := Delay(tc.n)
		if tc.want == 0 {
			if got <= time.Second || got > Max {
				t.Errorf("Delay(%d) = %v, want between 1s and %v", tc.n, got, Max)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("Delay(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

// TestOvershootBound: for an operation pending p, the first poll at or
// after p comes within max(2 s, 10 % of p).
func TestOvershootBound(t *testing.T) {
	ts := pollTimes(50 * time.Minute)
	for p := time.Duration(0); p <= 45*time.Minute; p += 250 * time.Millisecond {
		var next time.Duration
		for _, pt := range ts {
			if pt >= p {
				next = pt
				break
			}
		}
		if over, bound := next-p, max(2*time.Second, p/10); over > bound {
			t.Fatalf("pending %v: polled at %v, overshoot %v > %v", p, next, over, bound)
		}
	}
}

// TestLongWaitsAreCheap: a 45-minute wait polls well under once per 5 s.
func TestLongWaitsAreCheap(t *testing.T) {
	n := len(pollTimes(45 * time.Minute))
	if limit := int(45 * time.Minute / (5 * time.Second)); n >= limit {
		t.Fatalf("%d polls in 45 minutes, want fewer than %d", n, limit)
	}
	t.Logf("%d polls in 45 minutes", n)
}
