// Windows on the lease's display: WaitWindow finds a visible window by
// title or class.

package crabbox

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Window is a visible top-level window on the lease's display.
type Window struct {
	// ID is the X window id (decimal, as xdotool prints it).
	ID     string `json:"id"`
	Name   string `json:"name"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
}

//go:embed window_find.sh
var findWindowScript string

//go:embed window_name.sh
var windowNameScript string

// WaitWindow polls the lease's display (xdotool search --onlyvisible) until
// a window whose title or class matches titleOrClass (a POSIX extended
// regular expression, as xdotool takes it, e.g. "chromium|chrome") is
// visible, and returns the largest such window. It waits as long as ctx
// allows: give ctx a deadline. Errors match ErrNoDisplay, ErrMissingTool
// (xdotool) or ctx's error.
func (l *Lease) WaitWindow(ctx context.Context, titleOrClass string) (*Window, error) {
	if err := l.usable("wait-window"); err != nil {
		return nil, err
	}
	w, err := waitWindow(ctx, leaseTarget{l}, titleOrClass, nil)
	if err != nil {
		return nil, l.c.opErr("wait-window", l.ID, err)
	}
	return w, nil
}

// waitWindow polls for the window. When alive is set it is asked every
// few polls whether the window's program still
// runs, and its error ends the wait at once.
func waitWindow(ctx context.Context, r boxRunner, pattern string, alive func(context.Context) error) (*Window, error) {
	if strings.TrimSpace(pattern) == "" || strings.ContainsAny(pattern, "\x00\n\r") {
		return nil, fmt.Errorf("%w: empty or multi-line window pattern", ErrInvalidArgument)
	}
	script := "PAT=" + ShellQuote(pattern) + "\n" + findWindowScript
	for i := 0; ; i++ {
		out, err := runScript(ctx, r, "looking for a window", script, nil)
		if err == nil {
			if w := largestWindow(out); w != nil {
				return w, nil
			}
		} else if !errors.Is(err, ErrCommandFailed) {
			// No display, no xdotool, or the transport failed.
			if ctx.Err() != nil {
				return nil, fmt.Errorf("no window matching %q: %w", pattern, errors.Join(ctx.Err(), err))
			}
			return nil, err
		}
		if alive != nil && i%3 == 2 {
			if err := alive(ctx); err != nil {
				return nil, err
			}
		}
		d := 100 * time.Millisecond
		if i > 10 {
			d = 250 * time.Millisecond
		}
		if serr := sleep(ctx, d); serr != nil {
			return nil, fmt.Errorf("no visible window matching %q: %w", pattern, serr)
		}
	}
}

func largestWindow(out string) *Window {
	var best *Window
	for _, line := range strings.Split(out, "\n") {
		f := strings.SplitN(line, "\t", 4)
		if len(f) < 3 || f[0] == "" {
			continue
		}
		w := &Window{ID: f[0]}
		w.Width, _ = strconv.Atoi(f[1])
		w.Height, _ = strconv.Atoi(f[2])
		if len(f) == 4 {
			w.Name = strings.TrimSpace(f[3])
		}
		if best == nil || w.Width*w.Height > best.Width*best.Height {
			best = w
		}
	}
	return best
}

// windowName returns a window's current title ("" if unknown).
func windowName(ctx context.Context, r boxRunner, id string) string {
	out, err := runScript(ctx, r, "window name", "ID="+ShellQuote(id)+"\n"+windowNameScript, nil)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}
