// The lease's browser: OpenURL starts a browser on the display with a
// throw-away profile (and, WithDevTools, a DevTools endpoint on the box's
// loopback that Browser.DevTools reaches through a tunnel), Browser.Alive
// tells whether it still runs, Browser.Close stops it and removes the
// profile.

package crabbox

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// browserCommands are the browser commands OpenURL looks for, in order,
// when the box has no /var/lib/crabbox/browser.env.
var browserCommands = []string{"google-chrome", "chromium", "chromium-browser"}

// BrowserCommands returns the browser commands OpenURL tries, in order.
func BrowserCommands() []string { return append([]string(nil), browserCommands...) }

// Browser is a browser OpenURL started on the lease's display. Close it
// when done: that stops the browser and removes its profile.
type Browser struct {
	// URL is the page it opened.
	URL string `json:"url"`
	// Path is the browser binary on the box.
	Path string `json:"path"`
	// PID is the browser's process id on the box; it leads its own
	// session and process group.
	PID int `json:"pid"`
	// Dir is the browser's fresh temporary directory on the box (a new
	// directory with a random name below /tmp, never below $HOME or the
	// work root): the profile
	// (--user-data-dir=Dir/profile), HOME and XDG directories of the
	// browser, and its log (Dir/browser.log). Close removes it.
	Dir string `json:"dir"`
	// Args are the browser's arguments before the URL.
	Args []string `json:"args"`
	// DevToolsEnabled says the browser serves DevTools on the box's
	// loopback (WithDevTools).
	DevToolsEnabled bool `json:"devtools,omitempty"`

	r    boxRunner
	l    *Lease // the lease it runs on (OpenURL), for the DevTools tunnel
	wrap func(op string, err error) error
	mu   sync.Mutex
	done bool
	dt   *DevTools // the open DevTools tunnel, closed with the browser
}

// ProfileDir is the --user-data-dir the browser runs with.
func (b *Browser) ProfileDir() string { return b.Dir + "/profile" }

type browserOptions struct {
	width, height int
	args          []string
	devtools      bool
}

// devToolsArgs bind the DevTools endpoint to the box's loopback, on a port
// the browser picks and writes to DevToolsActivePort in its profile.
var devToolsArgs = []string{"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"}

// WithDevTools starts the browser with its DevTools endpoint on the box's
// loopback only (127.0.0.1, a port the browser picks), for a harness that
// drives the browser over the DevTools protocol through Browser.DevTools.
// Nothing off the box can reach it: the harness gets there through the
// lease's SSH connection.
func WithDevTools() BrowserOption {
	return func(o *browserOptions) error { o.devtools = true; return nil }
}

// BrowserOption configures OpenURL.
type BrowserOption func(*browserOptions) error

// WithWindowSize sets the browser window's size in pixels (default
// 1280x800, the desktop's screen).
func WithWindowSize(width, height int) BrowserOption {
	return func(o *browserOptions) error {
		if width < 100 || height < 100 || width > 16384 || height > 16384 {
			return fmt.Errorf("%w: window size %dx%d out of range [100, 16384]", ErrInvalidArgument, width, height)
		}
		o.width, o.height = width, height
		return nil
	}
}

// WithBrowserArgs adds command-line switches (each "--name" or
// "--name=value") after crabbox's own.
func WithBrowserArgs(args ...string) BrowserOption {
	return func(o *browserOptions) error {
		for _, a := range args {
			if !strings.HasPrefix(a, "--") || len(a) < 3 || strings.ContainsAny(a, "\x00\n\r") {
				return fmt.Errorf("%w: browser argument %q is not a --switch", ErrInvalidArgument, a)
			}
			if strings.HasPrefix(a, "--user-data-dir") {
				return fmt.Errorf("%w: the browser profile is always a fresh temporary directory", ErrInvalidArgument)
			}
			if strings.HasPrefix(a, "--remote-debugging-") {
				// The endpoint drives the browser: it stays on the box's
				// loopback, reached through the lease's tunnel.
				return fmt.Errorf("%w: %s: use WithDevTools, which binds DevTools to the box's 127.0.0.1", ErrInvalidArgument, a)
			}
		}
		o.args = append(o.args, args...)
		return nil
	}
}

// baseBrowserArgs are the switches every browser gets: no first-run UI, no
// background network, no component updates or sync, no GPU.
var baseBrowserArgs = []string{
	"--no-first-run", "--no-default-browser-check", "--disable-background-networking",
	"--disable-component-update", "--disable-sync", "--disable-gpu",
}

// BrowserArgs returns the switches OpenURL starts every browser with
// (--no-sandbox is added only when the browser runs as root, and the
// profile, window size and position follow).
func BrowserArgs() []string { return append([]string(nil), baseBrowserArgs...) }

func checkURL(raw string) error {
	if strings.TrimSpace(raw) == "" {
		return fmt.Errorf("%w: empty URL", ErrInvalidArgument)
	}
	if strings.ContainsAny(raw, "\x00\n\r") {
		return fmt.Errorf("%w: URL contains control characters", ErrInvalidArgument)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: URL %q: %v", ErrInvalidArgument, raw, err)
	}
	if u.Scheme == "" {
		return fmt.Errorf("%w: URL %q has no scheme (want http:, https:, file:, data: ...)", ErrInvalidArgument, raw)
	}
	return nil
}

//go:embed browser_open_url.sh
var openURLScript string

// OpenURL starts the lease's browser on its display with a fresh profile
// and opens rawURL. The browser is the one recorded in
// /var/lib/crabbox/browser.env, else the first of google-chrome, chromium
// and chromium-browser found. It runs with BrowserArgs, --no-sandbox only
// as root, --user-data-dir in a new directory with a random name below /tmp
// (HOME and the XDG directories point there too, so nothing lands in the
// login user's home or the work root: the do-not-bake rule), and its own
// session, so Close stops every process it started.
//
// When OpenURL fails after the browser may have started (ctx cancelled or
// the connection lost while the box starts it), it stops that browser and
// removes its directory before returning, with a context detached from
// ctx's cancellation and bounded in time (30 s), so nothing is left
// behind on the box.
//
// Errors: a lease without a display matches ErrNoDisplay; one without a
// browser matches ErrMissingTool (a *MissingToolError naming every command
// tried); a bad URL or option matches ErrInvalidArgument.
func (l *Lease) OpenURL(ctx context.Context, rawURL string, opts ...BrowserOption) (*Browser, error) {
	if err := l.usable("open-url"); err != nil {
		return nil, err
	}
	b, err := openBrowser(ctx, leaseTarget{l}, rawURL, opts...)
	if err != nil {
		return nil, l.c.opErr("open-url", l.ID, err)
	}
	b.wrap = func(op string, err error) error { return l.c.opErr(op, l.ID, err) }
	b.l = l
	return b, nil
}

func openBrowser(ctx context.Context, r boxRunner, rawURL string, opts ...BrowserOption) (*Browser, error) {
	o := browserOptions{width: 1280, height: 800}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if err := checkURL(rawURL); err != nil {
		return nil, err
	}
	if o.devtools {
		o.args = append(append([]string(nil), devToolsArgs...), o.args...)
	}
	quoted := make([]string, len(o.args))
	for i, a := range o.args {
		quoted[i] = ShellQuote(a)
	}
	dir, err := boxTempDir("crabbox-browser.")
	if err != nil {
		return nil, err
	}
	script := "set -- " + strings.Join(quoted, " ") + "\n" +
		"DIR=" + ShellQuote(dir) + "\n" +
		"CANDIDATES=" + ShellQuote(strings.Join(browserCommands, " ")) + "\n" +
		"ARGS=" + ShellQuote(strings.Join(baseBrowserArgs, " ")) + "\n" +
		"SIZE=" + ShellQuote(fmt.Sprintf("%d,%d", o.width, o.height)) + "\n" +
		"URL=" + ShellQuote(rawURL) + "\n" + openURLScript
	out, err := runScript(ctx, r, "opening "+rawURL, script, nil)
	if err != nil {
		if startedNothing(err) {
			return nil, err
		}
		// The browser may run already (its own session survives the
		// killed script): stop it and remove its directory.
		return nil, errors.Join(err, cleanupBoxDir(ctx, r, dir, true))
	}
	kv := keyValues(out)
	pid, perr := strconv.Atoi(kv["pid"])
	if perr != nil || pid < 2 || kv["dir"] != dir {
		err := fmt.Errorf("opening %s: unexpected output from the box: %q", rawURL, out)
		return nil, errors.Join(err, cleanupBoxDir(ctx, r, dir, true))
	}
	args := append(BrowserArgs(), kv["sandbox"])
	if args[len(args)-1] == "" {
		args = args[:len(args)-1]
	}
	args = append(args, "--user-data-dir="+kv["dir"]+"/profile", fmt.Sprintf("--window-size=%d,%d", o.width, o.height),
		"--window-position=0,0")
	args = append(args, o.args...)
	return &Browser{URL: rawURL, Path: kv["browser"], PID: pid, Dir: kv["dir"], Args: args, DevToolsEnabled: o.devtools, r: r}, nil
}

// ErrBrowserExited: the browser OpenURL started is no longer running
// (it crashed, was killed, or quit) while something waited for it.
var ErrBrowserExited = errors.New("the browser exited")

//go:embed browser_alive.sh
var browserAliveScript string

// Alive reports whether the browser's main process still runs: nil when
// it does, an error matching ErrBrowserExited (with the tail of the
// browser's log) when it is gone, and other errors when the box could not
// be asked (transport, ctx). A closed browser has exited.
func (b *Browser) Alive(ctx context.Context) error {
	b.mu.Lock()
	done := b.done
	b.mu.Unlock()
	if done {
		return fmt.Errorf("%w: browser %d was closed", ErrBrowserExited, b.PID)
	}
	if b.PID < 2 || !strings.HasPrefix(b.Dir, "/tmp/crabbox-browser.") || strings.Contains(b.Dir, "..") {
		return fmt.Errorf("%w: browser handle not made by OpenURL", ErrInvalidArgument)
	}
	script := "PID=" + strconv.Itoa(b.PID) + "\nDIR=" + ShellQuote(b.Dir) + "\n" + browserAliveScript
	out, err := runScript(ctx, b.r, "checking the browser", script, nil)
	if err == nil {
		state, log, _ := strings.Cut(strings.TrimSpace(out), "\n")
		switch strings.TrimSpace(state) {
		case "alive":
			return nil
		case "exited":
			err = fmt.Errorf("%w: browser %s (pid %d) is gone", ErrBrowserExited, b.Path, b.PID)
			if log = strings.Join(strings.Fields(log), " "); log != "" {
				err = fmt.Errorf("%w; its log ends: %s", err, log)
			}
		default:
			err = fmt.Errorf("checking the browser: unexpected output from the box: %q", out)
		}
	}
	if b.wrap != nil {
		return b.wrap("browser-alive", err)
	}
	return err
}

//go:embed browser_close.sh
var closeBrowserScript string

// Close stops the browser (SIGTERM to its session, SIGKILL after 5 s) and
// removes its temporary directory with the profile. It is idempotent and
// safe for concurrent use; use a context that is not cancelled already
// (e.g. context.WithoutCancel) in deferred cleanup.
func (b *Browser) Close(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return nil
	}
	if b.PID < 2 || !strings.HasPrefix(b.Dir, "/tmp/crabbox-browser.") || strings.Contains(b.Dir, "..") {
		return fmt.Errorf("%w: browser handle not made by OpenURL", ErrInvalidArgument)
	}
	if b.dt != nil {
		_ = b.dt.Tunnel.Close()
		b.dt = nil
	}
	script := "PID=" + strconv.Itoa(b.PID) + "\nDIR=" + ShellQuote(b.Dir) + "\n" + closeBrowserScript
	if _, err := runScript(ctx, b.r, "closing the browser", script, nil); err != nil {
		if b.wrap != nil {
			return b.wrap("close-browser", err)
		}
		return err
	}
	b.done = true
	return nil
}

// DevTools is a browser's DevTools endpoint reached through a tunnel of the
// lease's SSH connection.
type DevTools struct {
	// WebSocketURL is the browser's DevTools WebSocket through the tunnel,
	// ws://127.0.0.1:PORT/devtools/browser/ID: what CDP clients connect to
	// (the cdp sub-package, chromedp's remote allocator, ...).
	WebSocketURL string `json:"websocket_url"`
	// HTTPURL is the endpoint's HTTP base through the tunnel
	// (http://127.0.0.1:PORT; /json/version, /json/list).
	HTTPURL string `json:"http_url"`
	// BoxPort is the endpoint's port on the box's loopback.
	BoxPort int `json:"box_port"`
	// Tunnel is the forward; the browser's Close closes it.
	Tunnel *Tunnel `json:"-"`
}

//go:embed browser_devtools.sh
var devToolsScript string

// DevTools returns the browser's DevTools endpoint as a local URL: it waits
// (within ctx, at most 30 s) for the browser to write its port, then
// forwards a random port on the harness's 127.0.0.1 to it through the
// lease's SSH connection (Lease.Forward). Later calls return the same
// endpoint; Browser.Close closes the tunnel. The browser must have been
// opened WithDevTools (else ErrInvalidArgument); a browser that exited
// matches ErrBrowserExited; a box whose sshd refuses forwarding,
// ErrUnsupported.
func (b *Browser) DevTools(ctx context.Context) (*DevTools, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	wrap := func(err error) error {
		if b.wrap != nil {
			return b.wrap("devtools", err)
		}
		return err
	}
	switch {
	case b.done:
		return nil, wrap(fmt.Errorf("%w: browser %d was closed", ErrBrowserExited, b.PID))
	case !b.DevToolsEnabled:
		return nil, wrap(fmt.Errorf("%w: the browser was not opened WithDevTools", ErrInvalidArgument))
	case b.l == nil || b.PID < 2 || !strings.HasPrefix(b.Dir, "/tmp/crabbox-browser.") || strings.Contains(b.Dir, ".."):
		return nil, wrap(fmt.Errorf("%w: browser handle not made by Lease.OpenURL", ErrInvalidArgument))
	case b.dt != nil:
		return b.dt, nil
	}
	script := "PID=" + strconv.Itoa(b.PID) + "\nDIR=" + ShellQuote(b.Dir) + "\n" + devToolsScript
	out, err := runScript(ctx, b.r, "reading the DevTools port", script, nil)
	if err != nil {
		if strings.Contains(err.Error(), "browser exited") {
			err = fmt.Errorf("%w: %v", ErrBrowserExited, err)
		}
		return nil, wrap(err)
	}
	kv := keyValues(out)
	port, perr := strconv.Atoi(kv["port"])
	path := kv["path"]
	if perr != nil || port < 1 || port > 65535 || !strings.HasPrefix(path, "/devtools/browser/") {
		return nil, wrap(fmt.Errorf("reading the DevTools port: unexpected output from the box: %q", out))
	}
	t, err := b.l.Forward(ctx, "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return nil, err
	}
	b.dt = &DevTools{WebSocketURL: "ws://" + t.LocalAddr() + path, HTTPURL: "http://" + t.LocalAddr(), BoxPort: port, Tunnel: t}
	return b.dt, nil
}
