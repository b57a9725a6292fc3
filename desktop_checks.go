// Desktop smoke checks: BrowserWindowVisible, RecordingNotEmpty and the
// DesktopProof set a desktop image's candidate smoke runs.

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
// end of every attempt. It retries once.
func BrowserWindowVisible(rawURL string) SmokeCheck {
	title := "browser shows " + rawURL
	if len(title) > 120 {
		title = title[:117] + "..."
	}
	if err := checkURL(rawURL); err != nil {
		return invalidCheck(KindBrowserWindow, title, err)
	}
	return SmokeCheck{Title: title, Kind: KindBrowserWindow, Timeout: DefaultSmokeTimeout, Retries: 1,
		RetryDelay: 2 * time.Second, run: func(ctx context.Context, t smokeTarget) attempt {
			return browserWindowAttempt(ctx, t, rawURL)
		}}
}

func browserShown(st ScreenStats) bool { return !st.Blank() && st.Colors >= MinBrowserColors }

func browserWindowAttempt(ctx context.Context, t smokeTarget, rawURL string) (a attempt) {
	a.exitCode = -1
	b, err := openBrowser(ctx, t, rawURL)
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
	w, err := waitWindow(ctx, t, "chromium|chrome")
	if err != nil {
		a.err = fmt.Errorf("no browser window: %w", err)
		return a
	}
	shoot := func() (ScreenStats, bool) {
		data, err := t.screenshot(ctx)
		if err != nil {
			a.err = fmt.Errorf("screenshot: %w", err)
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
	return SmokeCheck{Title: title, Kind: KindRecording, Timeout: DefaultSmokeTimeout + d,
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

// ProofPageURL is the page DesktopProof opens: a self-contained data: URL
// (no network needed) with a title, coloured blocks and text, so a drawn
// browser is easy to tell from a blank or half-drawn screen.
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
// before a desktop image is promoted: the browser opens ProofPageURL and is
// drawn on the display (BrowserWindowVisible, screenshot kept as evidence),
// and a screen recording has a duration and frames (RecordingNotEmpty, 3 s,
// video kept as evidence). A bare ScreenshotNotBlank is not enough on a
// desktop with nothing open: an empty Xvfb screen is blank.
func DesktopProof() []SmokeCheck {
	return []SmokeCheck{BrowserWindowVisible(ProofPageURL).WithTitle("browser draws the desktop proof page"),
		RecordingNotEmpty(3 * time.Second)}
}
