// Package cdp drives a lease's browser over the Chrome DevTools Protocol
// with chromedp, through the lease's SSH connection: open the browser with
// crabbox.WithDevTools, Connect, and run chromedp actions on the page it
// opened.
//
//	b, err := lease.OpenURL(ctx, url, crabbox.WithDevTools())
//	page, detach, err := cdp.Connect(ctx, b)
//	defer detach()
//	err = chromedp.Do(page, chromedp.SendKeys(chromedp.CSS("#name"), "crabbox\r"))
//	greeting, err := chromedp.Run(page, chromedp.Text(chromedp.CSS("#out")))
//
// It is a separate package so that the root package does not depend on
// chromedp. chromedp was chosen over go-rod: it attaches to a running
// remote browser with plain options (remote.NewAllocator, WithTargetID,
// WithDetachOnCancel) and leaves the page running when it detaches, it
// depends on nothing but the standard library and its protocol types
// (go-rod brings its own helper libraries and a launcher that fetches
// browsers, which boxes must not do), and its actions are bounded by
// contexts as the SDK's calls are.
package cdp

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/remote"

	crabbox "github.com/crabbox/crabbox-go"
)

// Connect attaches to the page the browser opened (its first page target)
// through the DevTools tunnel (crabbox.Browser.DevTools) and returns a
// chromedp context for it. detach ends the DevTools connection and leaves
// the page and the browser running (Browser.Close stops them). ctx bounds
// the connection's whole life: when it ends, so does the page context.
// Errors are the DevTools ones (the browser not opened WithDevTools:
// crabbox.ErrInvalidArgument; sshd refusing forwarding:
// crabbox.ErrUnsupported), or the browser having no page within ctx.
func Connect(ctx context.Context, b *crabbox.Browser) (page context.Context, detach context.CancelFunc, err error) {
	dt, err := b.DevTools(ctx)
	if err != nil {
		return nil, nil, err
	}
	allocCtx, cancelAlloc := remote.NewAllocator(ctx, dt.WebSocketURL, remote.NoModifyURL)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	cancelAll := func() { cancelBrowser(); cancelAlloc() }
	id, err := firstPage(browserCtx)
	if err != nil {
		cancelAll()
		return nil, nil, fmt.Errorf("cdp: attaching to %s: %w", dt.WebSocketURL, err)
	}
	pageCtx, cancelPage := chromedp.NewContext(browserCtx, chromedp.WithTargetID(id), chromedp.WithDetachOnCancel())
	if err := chromedp.Do(pageCtx); err != nil {
		cancelPage()
		cancelAll()
		return nil, nil, fmt.Errorf("cdp: attaching to page %s: %w", id, err)
	}
	return pageCtx, func() { cancelPage(); cancelAll() }, nil
}

// firstPage waits for the browser's first page target.
func firstPage(ctx context.Context) (target.ID, error) {
	for {
		infos, err := chromedp.Targets(ctx)
		if err != nil {
			return "", err
		}
		for _, t := range infos {
			if t.Type == "page" {
				return t.TargetID, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", errors.Join(errors.New("the browser has no page"), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
