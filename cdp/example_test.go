package cdp_test

import (
	"context"
	"errors"
	"testing"

	"github.com/chromedp/chromedp"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/cdp"
)

// The end-to-end test is examples/qa's (real Xvfb and Chromium); here, a
// browser handle without DevTools is refused before anything is dialled.
func TestConnectNeedsDevTools(t *testing.T) {
	_, _, err := cdp.Connect(context.Background(), &crabbox.Browser{})
	if !errors.Is(err, crabbox.ErrInvalidArgument) {
		t.Fatalf("Connect on a browser without DevTools: %v, want ErrInvalidArgument", err)
	}
}

// The README's QA harness, kept compiling: it is the same code.

// Harness fills the form at url, reads the answer and takes a screenshot.
func Harness(ctx context.Context, c *crabbox.Client, url string) (string, []byte, error) {
	l, err := c.Warmup(ctx, crabbox.WithDesktop(), crabbox.WithBrowser())
	if err != nil {
		return "", nil, err
	}
	defer l.Release(context.WithoutCancel(ctx))
	b, err := l.OpenURL(ctx, url, crabbox.WithDevTools()) // DevTools on the box's 127.0.0.1
	if err != nil {
		return "", nil, err
	}
	defer b.Close(context.WithoutCancel(ctx))
	page, detach, err := cdp.Connect(ctx, b) // through the lease's SSH tunnel
	if err != nil {
		return "", nil, err
	}
	defer detach()
	if err := chromedp.Do(page, chromedp.SendKeys(chromedp.CSS("#name"), "crabbox\n")); err != nil {
		return "", nil, err
	}
	greeting, err := chromedp.Run(page, chromedp.Text(chromedp.CSS("#out")))
	if err != nil {
		return "", nil, err
	}
	png, err := l.Screenshot(ctx) // the proof, with l.Record for a video
	return greeting, png, err
}
