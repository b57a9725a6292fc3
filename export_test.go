// Test-only access for the external tests: the desktop proof check with
// the browser showing another URL than the proof page it expects.

package crabbox

import "context"

// ProofCheckShowing is BrowserRendersProofPage expecting p while the
// browser opens openURL instead of p's own page.
func ProofCheckShowing(openURL string, p ProofPage) SmokeCheck {
	c := BrowserRendersProofPage().WithTitle("proof page while the browser shows " + openURL)
	c.run = func(ctx context.Context, t smokeTarget) attempt { return proofPageAttempt(ctx, t, p, openURL) }
	return c
}
