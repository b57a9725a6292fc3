package cdp_test

import (
	"context"
	"errors"
	"fmt"
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

// Example fills a form on the lease's browser and reads the page's answer
// from the DOM.
func Example() {
	ctx := context.Background()
	var lease *crabbox.Lease // from Client.Warmup(ctx, crabbox.WithDesktop(), crabbox.WithBrowser())
	b, err := lease.OpenURL(ctx, "http://127.0.0.1:8080/", crabbox.WithDevTools())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close(context.WithoutCancel(ctx))
	page, detach, err := cdp.Connect(ctx, b)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer detach()
	if err := chromedp.Do(page, chromedp.SendKeys(chromedp.CSS("#name"), "crabbox\n")); err != nil {
		fmt.Println(err)
		return
	}
	greeting, err := chromedp.Run(page, chromedp.Text(chromedp.CSS("#out")))
	fmt.Println(greeting, err)
}
