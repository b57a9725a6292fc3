// Package pollsched is the wait schedule for long cloud operations (image
// builds, Hetzner actions): short polls early that lengthen with the time
// already waited, so that a wait ends soon after the operation does (within
// max(2 s, 10 % of the time it was pending)) while a long wait asks the API
// rarely (well under one call per 5 s over 45 minutes).
package pollsched

import "time"

// Schedule bounds.
const (
	// First is the pause after the first poll.
	First = time.Second
	// Max caps every pause; a pause is at most a tenth of the time waited
	// so far, so Max is reached after 10 x Max.
	Max = 30 * time.Second
)

// After returns the pause after a poll made when elapsed had passed since
// the wait started: a tenth of elapsed, at least First and at most Max.
// Overshoot (the time from the operation ending to the next poll) is so at
// most max(First, elapsed/10) <= max(2 s, 10 % of the pending time).
func After(elapsed time.Duration) time.Duration {
	return min(max(elapsed/10, First), Max)
}

// Delay is After in terms of the poll number n (from 1), for back-off
// functions that only get an attempt count: it assumes each poll takes no
// time, so that poll n is made at the sum of the pauses before it. (A poll
// that takes time only makes the later pauses shorter relative to the time
// waited, never longer.)
func Delay(n int) time.Duration {
	var elapsed time.Duration
	for i := 1; i < n; i++ {
		d := After(elapsed)
		if d == Max {
			return Max // every later pause is Max too
		}
		elapsed += d
	}
	return After(elapsed)
}
