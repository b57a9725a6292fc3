// Desktop smoke checks: BrowserRendersProofPage, BrowserWindowVisible,
// RecordingNotEmpty and the DesktopProof set a desktop image's candidate
// smoke runs.

package crabbox

import (
	"context"
	"fmt"
	"time"
)

// Smoke check kinds of the desktop checks.
const (
	KindBrowserWindow = "browser-window"
	KindRecording     = "recording"
)

// MinBrowserColors is the number of distinct colours a screenshot must
// have before BrowserWindowVisible counts the browser as drawn: a freshly
// mapped, still empty browser window is a flat rectangle with a handful of
// colours, a rendered browser (toolbar text, icons, the page) has hundreds.
const MinBrowserColors = 32

// BrowserWindowVisible opens rawURL in the lease's browser (OpenURL), waits
// for a visible browser window (class or title matching
// "chromium|chrome"), then takes screenshots until the browser is drawn:
// not blank (see JudgeScreenshot) and at least MinBrowserColors colours.
// It then lets the page settle for a second and judges one more screenshot,
// which is kept as evidence (CheckResult.PNG, and a file with
// WithEvidenceDir). The browser is closed and its profile removed at the
// end of every attempt. It retries once. When the browser exits while it
// waits, the attempt fails at once with an error matching ErrBrowserExited.
//
// It proves less than BrowserRendersProofPage (what DesktopProof runs):
// the browser's own toolbar has enough colours on any page, so it passes on
// a white, black, blank, error or crashed page too. It shows that a browser
// window was drawn, not that rawURL rendered.
func BrowserWindowVisible(rawURL string) SmokeCheck {
	title := "browser shows " + rawURL
	if len(title) > 120 {
		title = title[:117] + "..."
	}
	if err := checkURL(rawURL); err != nil {
		return invalidCheck(KindBrowserWindow, title, err)
	}
	return SmokeCheck{Title: title, Kind: KindBrowserWindow, Timeout: DefaultSmokeTimeout, Retries: 1,
		RetryDelay: 2 * time.Second, spec: checkSpec(KindBrowserWindow, rawURL), run: func(ctx context.Context, t smokeTarget) attempt {
			return browserWindowAttempt(ctx, t, rawURL)
		}}
}

func browserShown(st ScreenStats) bool { return !st.Blank() && st.Colors >= MinBrowserColors }

// browserAttempt runs body against a browser opened on rawURL once its
// window is visible, and closes the browser afterwards. Each poll of the
// window, and each call of the shoot function body gets, first asks
// whether the browser still runs: when it exited, the attempt fails at once
// with an error matching ErrBrowserExited. A failed attempt without a
// screenshot takes one of the screen for evidence.
func browserAttempt(ctx context.Context, t smokeTarget, rawURL string, opts []BrowserOption,
	body func(b *Browser, w *Window, shoot func() ([]byte, error)) attempt) (a attempt) {
	a.exitCode = -1
	defer func() {
		if a.err != nil && a.png == nil && !startedNothing(a.err) {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
			defer cancel()
			if data, err := t.screenshot(cctx); err == nil {
				a.png = data
			}
		}
	}()
	b, err := openBrowser(ctx, t, rawURL, opts...)
	if err != nil {
		a.err = err
		return a
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if cerr := b.Close(cctx); cerr != nil && a.err == nil {
			a.err = fmt.Errorf("closing the browser: %w", cerr)
		}
	}()
	w, err := waitWindow(ctx, t, "chromium|chrome", b.Alive)
	if err != nil {
		a.err = fmt.Errorf("no browser window: %w", err)
		return a
	}
	shoot := func() ([]byte, error) {
		if err := b.Alive(ctx); err != nil {
			return nil, err
		}
		data, err := t.screenshot(ctx)
		if err != nil {
			return nil, fmt.Errorf("screenshot: %w", err)
		}
		return data, nil
	}
	return body(b, w, shoot)
}

func browserWindowAttempt(ctx context.Context, t smokeTarget, rawURL string) attempt {
	return browserAttempt(ctx, t, rawURL, nil, func(b *Browser, w *Window, shootPNG func() ([]byte, error)) (a attempt) {
		a.exitCode = -1
		shoot := func() (ScreenStats, bool) {
			data, err := shootPNG()
			if err != nil {
				a.err = err
				return ScreenStats{}, false
			}
			a.png = data
			st, err := JudgeScreenshot(data)
			if err != nil {
				a.err = err
				return st, false
			}
			a.output = fmt.Sprintf("window %s %q %dx%d; screenshot %s", w.ID, w.Name, w.Width, w.Height, st)
			return st, true
		}
		for {
			st, ok := shoot()
			if !ok {
				return a
			}
			if browserShown(st) {
				break
			}
			a.err = fmt.Errorf("the browser window is not drawn (blank or fewer than %d colours): %s", MinBrowserColors, st)
			if sleep(ctx, 500*time.Millisecond) != nil {
				return a
			}
		}
		// Let the page settle, then judge the screenshot kept as evidence.
		if err := sleep(ctx, time.Second); err != nil {
			a.err = err
			return a
		}
		st, ok := shoot()
		if !ok {
			return a
		}
		if name := windowName(ctx, t, w.ID); name != "" {
			a.output = fmt.Sprintf("window %s %q %dx%d; screenshot %s", w.ID, name, w.Width, w.Height, st)
		}
		a.err = nil
		if !browserShown(st) {
			a.err = fmt.Errorf("the browser window is not drawn (blank or fewer than %d colours): %s", MinBrowserColors, st)
		}
		return a
	})
}

// KindBrowserProof is the kind of BrowserRendersProofPage.
const KindBrowserProof = "browser-proof"

// BrowserRendersProofPage proves the lease's browser renders a page: every
// attempt makes a fresh ProofPage (a grid of colour blocks derived from a
// random token), opens it (OpenURL, with --force-color-profile=srgb), waits
// for the browser window and takes screenshots until one shows that very
// grid inside the browser's viewport (ProofPage.Match). A blank, white,
// black, error or crashed page, or another run's page, never passes. The
// browser's process is checked on every poll: when it exits the attempt
// fails at once with an error matching ErrBrowserExited ("the browser
// exited") instead of waiting for the timeout. The last screenshot is kept
// as evidence whether the check passes or fails (CheckResult.PNG, and a
// file with WithEvidenceDir). The browser is closed and its profile
// removed at the end of every attempt. It retries once, with a new token.
func BrowserRendersProofPage() SmokeCheck {
	return SmokeCheck{Title: "browser renders the desktop proof page", Kind: KindBrowserProof, Timeout: DefaultSmokeTimeout,
		Retries: 1, RetryDelay: 2 * time.Second, spec: checkSpec(KindBrowserProof, "v1"), run: func(ctx context.Context, t smokeTarget) attempt {
			p, err := NewProofPage()
			if err != nil {
				return attempt{exitCode: -1, err: err}
			}
			return proofPageAttempt(ctx, t, p, p.URL())
		}}
}

// proofBrowserArgs are the switches the proof's browser gets: colours as
// the page says them, whatever colour profile the display has.
var proofBrowserArgs = []string{"--force-color-profile=srgb"}

// proofPageAttempt opens openURL (the page's own URL, except in tests
// that show the proof something else) and waits for p's grid.
func proofPageAttempt(ctx context.Context, t smokeTarget, p ProofPage, openURL string) attempt {
	return browserAttempt(ctx, t, openURL, []BrowserOption{WithBrowserArgs(proofBrowserArgs...)},
		func(b *Browser, w *Window, shoot func() ([]byte, error)) (a attempt) {
			a.exitCode = -1
			m, data, err := waitProof(ctx, p, shoot)
			a.png = data
			if err != nil {
				a.err = err
				a.output = fmt.Sprintf("window %s %q %dx%d; token %s", w.ID, w.Name, w.Width, w.Height, p.Token)
				return a
			}
			name := w.Name
			if n := windowName(ctx, t, w.ID); n != "" {
				name = n
			}
			a.output = fmt.Sprintf("window %s %q %dx%d; token %s: %s", w.ID, name, w.Width, w.Height, p.Token, m)
			return a
		})
}

// RecordingNotEmpty records the lease's display for d (Record, MP4) and
// fails unless the video has a positive duration and frames (counted by
// ffprobe on the box, or taken from ffmpeg's progress report when ffprobe
// is missing). The video is kept as evidence (a file with
// WithEvidenceDir).
func RecordingNotEmpty(d time.Duration) SmokeCheck {
	title := fmt.Sprintf("screen recording of %v has frames", d)
	if d < 100*time.Millisecond || d > 6*time.Hour {
		return invalidCheck(KindRecording, title,
			fmt.Errorf("%w: recording duration %v out of range [100ms, 6h]", ErrInvalidArgument, d))
	}
	return SmokeCheck{Title: title, Kind: KindRecording, Timeout: DefaultSmokeTimeout + d, spec: checkSpec(KindRecording, d.String()),
		run: func(ctx context.Context, t smokeTarget) attempt {
			a := attempt{exitCode: -1}
			rec, err := record(ctx, t, d)
			if rec != nil && len(rec.Data) > 0 {
				a.files = append(a.files, evidenceFile{ext: rec.Format, data: rec.Data})
			}
			if err != nil {
				a.err = err
				return a
			}
			a.output = rec.Video.String() + fmt.Sprintf(", %d bytes", rec.Size)
			a.err = rec.Video.Check()
			return a
		}}
}

// ProofPageURL is the fixed page DesktopProof opened before it rendered a
// per-run ProofPage: a self-contained data: URL with a title, coloured
// blocks and text.
//
// Deprecated: a fixed page lets a stale screenshot pass; use
// BrowserRendersProofPage (what DesktopProof runs) or NewProofPage.
const ProofPageURL = "data:text/html;charset=utf-8," +
	"%3C!doctype html%3E%3Ctitle%3ECrabbox desktop proof%3C/title%3E" +
	"%3Cbody style='margin:0;font:40px sans-serif;background:%23fff8e1'%3E" +
	"%3Ch1 style='background:%23d84315;color:%23fff;margin:0;padding:32px'%3ECrabbox desktop proof%3C/h1%3E" +
	"%3Cp style='padding:0 32px;color:%231565c0'%3EXvfb, Chromium, scrot and ffmpeg work on this image.%3C/p%3E" +
	"%3Cdiv style='display:flex;gap:24px;padding:32px'%3E" +
	"%3Cdiv style='flex:1;height:160px;background:%232e7d32'%3E%3C/div%3E" +
	"%3Cdiv style='flex:1;height:160px;background:%236a1b9a'%3E%3C/div%3E" +
	"%3Cdiv style='flex:1;height:160px;background:%2300838f'%3E%3C/div%3E%3C/div%3E%3C/body%3E"

// DesktopProof returns the real desktop/browser proof the runbook asks for
// before a desktop image is promoted: the browser renders a per-run proof
// page and the screenshot shows its token's block grid in the browser's
// viewport (BrowserRendersProofPage, screenshot kept as evidence), and a
// screen recording has a duration and frames (RecordingNotEmpty, 3 s,
// video kept as evidence). A bare ScreenshotNotBlank is not enough on a
// desktop with nothing open (an empty Xvfb screen is blank), and neither is
// BrowserWindowVisible, which the browser's own toolbar passes on any page.
func DesktopProof() []SmokeCheck {
	return []SmokeCheck{BrowserRendersProofPage(), RecordingNotEmpty(3 * time.Second)}
}
