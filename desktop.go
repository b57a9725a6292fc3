package crabbox

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
)

// Desktop and browser operations for QA harnesses. They run small shell
// scripts on the box over the lease's one SSH connection. The display is
// ${CRABBOX_DISPLAY:-:99} on the box (crabbox boxes run Xvfb on :99; a
// test host may export another display); crabbox state paths are resolved
// below ${CRABBOX_FS_ROOT} like the smoke checks do. An emulated box (one
// with ${CRABBOX_FS_ROOT} set, running on a host) has a display only when it
// sets CRABBOX_DISPLAY: the host's :99 is not the box's.

// Exit codes of the desktop scripts, beside exitNoDisplay and exitNoTool.
const (
	exitNoFile     = 92
	exitPermission = 93
)

// browserCommands are the browser commands OpenURL looks for, in order,
// when the box has no /var/lib/crabbox/browser.env.
var browserCommands = []string{"google-chrome", "chromium", "chromium-browser"}

// BrowserCommands returns the browser commands OpenURL tries, in order.
func BrowserCommands() []string { return append([]string(nil), browserCommands...) }

// MissingToolError says which tools an operation needed and did not find
// on the box (for a browser: every command tried). It matches
// ErrMissingTool.
type MissingToolError struct {
	// Tools are the commands looked for; any one of them would have done
	// when there are several alternatives (browsers).
	Tools []string
	// Detail is the box's own message.
	Detail string
}

func (e *MissingToolError) Error() string {
	msg := "missing tool: " + strings.Join(e.Tools, " or ")
	if len(e.Tools) > 1 {
		msg = "missing tool: none of " + strings.Join(e.Tools, ", ") + " is installed"
	}
	if e.Detail != "" && !strings.Contains(msg, e.Detail) {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

// Is makes errors.Is(err, ErrMissingTool) true.
func (e *MissingToolError) Is(target error) bool { return target == ErrMissingTool }

// boxRunner runs a shell command on a box: a lease (leaseTarget) or, in
// the package's own tests, a local shell. A command that ran returns its
// exit code and a nil error whatever the code.
type boxRunner interface {
	runCommand(ctx context.Context, command string, stdout, stderr io.Writer) (exitCode int, err error)
}

// desktopPrelude is shared by the desktop scripts.
const desktopPrelude = `R="${CRABBOX_FS_ROOT:-}"
if [ -n "$R" ]; then D="${CRABBOX_DISPLAY:-}"; else D="${CRABBOX_DISPLAY:-:99}"; fi
n="${D#:}"; n="${n%%.*}"
need_display() {
  if [ -z "$D" ]; then echo "crabbox: no X display (CRABBOX_DISPLAY is not set on this emulated box)" >&2; exit 90; fi
  if [ ! -S "/tmp/.X11-unix/X$n" ]; then echo "crabbox: no X display $D" >&2; exit 90; fi
}
need() {
  for t in "$@"; do
    if ! command -v "$t" >/dev/null 2>&1; then echo "crabbox-missing: $t" >&2; echo "crabbox: $t is not installed" >&2; exit 91; fi
  done
}
`

// runScript runs a desktop script and maps the scripts' exit codes to
// typed errors. It returns stdout; a non-zero exit other than the typed
// ones is an error carrying the stderr tail.
func runScript(ctx context.Context, r boxRunner, what, script string, stdout io.Writer) (string, error) {
	var out bytes.Buffer
	w := io.Writer(&out)
	if stdout != nil {
		w = stdout
	}
	errTail := newTail(4 << 10)
	code, err := r.runCommand(ctx, desktopPrelude+script, w, errTail)
	if err != nil {
		return out.String(), err
	}
	if code == 0 {
		return out.String(), nil
	}
	return out.String(), scriptError(what, code, errTail.String())
}

// scriptError maps an exit code and stderr of a desktop script to an error.
func scriptError(what string, code int, stderr string) error {
	var missing []string
	var msgs []string
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimSpace(line)
		if t, ok := strings.CutPrefix(line, "crabbox-missing:"); ok {
			missing = append(missing, strings.Fields(t)...)
		} else if line != "" {
			msgs = append(msgs, line)
		}
	}
	detail := strings.Join(msgs, "; ")
	if len(detail) > 600 {
		detail = "..." + detail[len(detail)-600:]
	}
	switch code {
	case exitNoDisplay:
		return fmt.Errorf("%s: %w: %s", what, ErrNoDisplay, detail)
	case exitNoTool:
		return fmt.Errorf("%s: %w", what, &MissingToolError{Tools: missing, Detail: detail})
	case exitNoFile:
		return fmt.Errorf("%s: %w: %s", what, ErrNotFound, detail)
	case exitPermission:
		return fmt.Errorf("%s: %w: %s", what, ErrPermission, detail)
	}
	if detail == "" {
		return fmt.Errorf("%s: %w with exit code %d", what, ErrCommandFailed, code)
	}
	return fmt.Errorf("%s: %w with exit code %d: %s", what, ErrCommandFailed, code, detail)
}

// keyValues parses "key=value" lines.
func keyValues(s string) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return kv
}

// PrepareDesktop runs the desktop and browser bootstrap that Warmup puts
// in the user-data of desktop and browser leases
// (cloudinit.DesktopBootstrapScript, for the lease's Desktop and Browser
// flags) over SSH, and returns its summary line ("ready: display :99
// 1280 800; browser /usr/bin/chromium (Chromium ...);"). Hosts that ignore
// user-data (provider/sshhost) need it before the desktop methods work;
// on crabbox boxes it is idempotent and cheap. It installs missing tools
// only as root or with passwordless sudo; otherwise missing tools are an
// error matching ErrMissingTool (a *MissingToolError naming them). A lease
// with neither flag is ErrInvalidArgument.
func (l *Lease) PrepareDesktop(ctx context.Context) (string, error) {
	if !l.Desktop && !l.Browser {
		return "", l.c.opErr("prepare-desktop", l.ID, fmt.Errorf("%w: the lease asked for neither a desktop nor a browser", ErrInvalidArgument))
	}
	script := cloudinit.DesktopBootstrapScript(cloudinit.Config{Desktop: l.Desktop, Browser: l.Browser})
	var out bytes.Buffer
	errTail := newTail(4 << 10)
	code, err := leaseTarget{l}.runCommand(ctx, script, &out, errTail)
	if err == nil && code != 0 {
		err = scriptError("desktop bootstrap", code, errTail.String())
	}
	if err != nil {
		return "", l.c.opErr("prepare-desktop", l.ID, err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[len(lines)-1], nil
}

// boxPath renders a path for the desktop scripts: absolute paths below
// "${CRABBOX_FS_ROOT:-}" (as fsPath does).
func boxPath(p string) string { return fsPath(p) }

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

	r    boxRunner
	wrap func(error) error
	mu   sync.Mutex
	done bool
}

// ProfileDir is the --user-data-dir the browser runs with.
func (b *Browser) ProfileDir() string { return b.Dir + "/profile" }

type browserOptions struct {
	width, height int
	args          []string
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

const openURLScript = `need_display
B=""
if [ -r "$R/var/lib/crabbox/browser.env" ]; then
  BROWSER=""
  . "$R/var/lib/crabbox/browser.env"
  if [ -n "${BROWSER:-}" ] && command -v "$BROWSER" >/dev/null 2>&1; then B="$BROWSER"; fi
fi
if [ -z "$B" ]; then
  for b in $CANDIDATES; do
    if p=$(command -v "$b" 2>/dev/null) && [ -n "$p" ]; then B="$p"; break; fi
  done
fi
if [ -z "$B" ]; then
  echo "crabbox-missing: $CANDIDATES" >&2
  echo "crabbox: no browser found (tried $CANDIDATES)" >&2
  exit 91
fi
mkdir -p "$R/tmp" 2>/dev/null
P="$R$DIR"
mkdir -m 700 "$P" || exit 1
mkdir -p "$P/home/.config" "$P/home/.cache" "$P/profile" || exit 1
SANDBOX=""
if [ "$(id -u)" = 0 ]; then SANDBOX=--no-sandbox; fi
cd "$P" || exit 1
HOME="$P/home" XDG_CONFIG_HOME="$P/home/.config" XDG_CACHE_HOME="$P/home/.cache" DISPLAY="$D" \
  setsid "$B" $ARGS $SANDBOX "--user-data-dir=$P/profile" "--window-size=$SIZE" --window-position=0,0 "$@" -- "$URL" \
  >"$P/browser.log" 2>&1 </dev/null &
pid=$!
sleep 0.2
if ! kill -0 "$pid" 2>/dev/null; then
  echo "crabbox: browser $B exited at once:" >&2
  tail -n 20 "$P/browser.log" >&2
  rm -rf -- "$P"
  exit 1
fi
printf 'pid=%s\ndir=%s\nbrowser=%s\nsandbox=%s\n' "$pid" "${P#"$R"}" "$B" "$SANDBOX"
`

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
	b, err := openBrowser(ctx, leaseTarget{l}, rawURL, opts...)
	if err != nil {
		return nil, l.c.opErr("open-url", l.ID, err)
	}
	b.wrap = func(err error) error { return l.c.opErr("close-browser", l.ID, err) }
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
	return &Browser{URL: rawURL, Path: kv["browser"], PID: pid, Dir: kv["dir"], Args: args, r: r}, nil
}

// cleanupTimeout bounds the cleanup OpenURL and Record run on the box
// after they failed (or, for Record, after the fetch): it runs detached
// from the caller's cancelled context, for at most this long.
const cleanupTimeout = 30 * time.Second

// boxTempDir returns a new random directory name below /tmp on the box,
// with the given name prefix. The scripts create it with mkdir, which fails
// if it exists.
func boxTempDir(prefix string) (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("crabbox: random directory name: %w", err)
	}
	return "/tmp/" + prefix + hex.EncodeToString(b[:]), nil
}

// startedNothing reports whether a desktop script's error means it stopped
// before it created anything on the box (no display, missing tool, bad
// argument).
func startedNothing(err error) bool {
	return errors.Is(err, ErrNoDisplay) || errors.Is(err, ErrMissingTool) || errors.Is(err, ErrInvalidArgument)
}

// cleanupBoxDirScript stops every process whose command line names a path
// below "$R$DIR" (a browser with its profile there, ffmpeg writing a
// recording there), with the whole session of those that lead one (a
// browser started with setsid), and removes the directory. With SETTLE=1
// it checks twice, so a process a killed script forked just before it died
// is caught too.
const cleanupBoxDirScript = `case "$DIR" in
  /tmp/crabbox-browser.*|/tmp/crabbox-rec.*) ;;
  *) echo "crabbox: refusing to clean up $DIR" >&2; exit 1 ;;
esac
case "$DIR" in *..*|*/*/*/*) echo "crabbox: refusing to clean up $DIR" >&2; exit 1 ;; esac
P="$R$DIR"
me=$$
pat=$(printf '%s/' "$P" | sed 's/[][\\.*^$+?(){}|]/\\&/g')
procs() { pgrep -f -- "$pat" 2>/dev/null | grep -vx -e "$me" || true; }
stop() {
  for p in $(procs); do
    sid=$(ps -o sid= -p "$p" 2>/dev/null | tr -d ' ')
    if [ "$sid" = "$p" ]; then kill "-$1" -- "-$p" 2>/dev/null; pkill "-$1" -s "$p" 2>/dev/null; fi
    kill "-$1" "$p" 2>/dev/null
  done
}
round=0
rounds=1
[ "$SETTLE" = 1 ] && rounds=2
while [ "$round" -lt "$rounds" ]; do
  round=$((round+1))
  stop TERM
  i=0
  while [ -n "$(procs)" ] && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i+1)); done
  stop KILL
  i=0
  while [ -n "$(procs)" ] && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i+1)); done
  rm -rf -- "$P"
  [ "$round" -lt "$rounds" ] && sleep 0.3
done
if [ -n "$(procs)" ]; then echo "crabbox: processes using $P survived SIGKILL" >&2; exit 1; fi
if [ -e "$P" ]; then echo "crabbox: could not remove $P" >&2; exit 1; fi
echo cleaned
`

// cleanupBoxDir runs cleanupBoxDirScript for dir, detached from ctx's
// cancellation and bounded by cleanupTimeout. settle is for a script that
// was killed (a process it started may show up late).
func cleanupBoxDir(ctx context.Context, r boxRunner, dir string, settle bool) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	script := "DIR=" + ShellQuote(dir) + "\nSETTLE=" + map[bool]string{false: "0", true: "1"}[settle] + "\n" + cleanupBoxDirScript
	_, err := runScript(cctx, r, "cleaning up "+dir+" on the box", script, nil)
	return err
}

const closeBrowserScript = `alive() { kill -0 -- "-$PID" 2>/dev/null || pgrep -s "$PID" >/dev/null 2>&1; }
stop() { kill "-$1" -- "-$PID" 2>/dev/null; pkill "-$1" -s "$PID" 2>/dev/null; }
stop TERM
i=0
while alive && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
if alive; then
  stop KILL
  i=0
  while alive && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
fi
if alive; then echo "crabbox: browser session $PID survived SIGKILL" >&2; exit 1; fi
P="$R$DIR"
case "$DIR" in
  /tmp/crabbox-browser.*) rm -rf -- "$P" ;;
  *) echo "crabbox: refusing to remove $DIR" >&2; exit 1 ;;
esac
if [ -e "$P" ]; then echo "crabbox: could not remove $P" >&2; exit 1; fi
echo closed
`

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
	script := "PID=" + strconv.Itoa(b.PID) + "\nDIR=" + ShellQuote(b.Dir) + "\n" + closeBrowserScript
	if _, err := runScript(ctx, b.r, "closing the browser", script, nil); err != nil {
		if b.wrap != nil {
			return b.wrap(err)
		}
		return err
	}
	b.done = true
	return nil
}

// Window is a visible top-level window on the lease's display.
type Window struct {
	// ID is the X window id (decimal, as xdotool prints it).
	ID     string `json:"id"`
	Name   string `json:"name"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
}

const findWindowScript = `need_display
need xdotool
export DISPLAY="$D"
ids=$( { xdotool search --onlyvisible --name "$PAT"; xdotool search --onlyvisible --class "$PAT"; } 2>/dev/null | sort -u)
[ -n "$ids" ] || exit 1
for w in $ids; do
  WIDTH=0; HEIGHT=0
  eval "$(xdotool getwindowgeometry --shell "$w" 2>/dev/null | grep -E '^(WIDTH|HEIGHT)=[0-9]+$')"
  printf '%s\t%s\t%s\t%s\n' "$w" "$WIDTH" "$HEIGHT" "$(xdotool getwindowname "$w" 2>/dev/null | tr '\t\n' '  ')"
done
`

// WaitWindow polls the lease's display (xdotool search --onlyvisible) until
// a window whose title or class matches titleOrClass (a POSIX extended
// regular expression, as xdotool takes it, e.g. "chromium|chrome") is
// visible, and returns the largest such window. It waits as long as ctx
// allows: give ctx a deadline. Errors match ErrNoDisplay, ErrMissingTool
// (xdotool) or ctx's error.
func (l *Lease) WaitWindow(ctx context.Context, titleOrClass string) (*Window, error) {
	w, err := waitWindow(ctx, leaseTarget{l}, titleOrClass)
	if err != nil {
		return nil, l.c.opErr("wait-window", l.ID, err)
	}
	return w, nil
}

func waitWindow(ctx context.Context, r boxRunner, pattern string) (*Window, error) {
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

// Recording formats.
const (
	// FormatMP4 is H.264 (libx264) in MP4, or MPEG-4 part 2 when ffmpeg
	// has no libx264.
	FormatMP4 = "mp4"
	// FormatWebM is VP8 (libvpx) in WebM.
	FormatWebM = "webm"
)

type recordOptions struct {
	localPath string
	format    string
	fps       int
	keep      bool
}

// RecordOption configures Record.
type RecordOption func(*recordOptions) error

// RecordTo writes the recording to a local file instead of returning its
// bytes in Recording.Data.
func RecordTo(localPath string) RecordOption {
	return func(o *recordOptions) error {
		if strings.TrimSpace(localPath) == "" {
			return fmt.Errorf("%w: empty local path", ErrInvalidArgument)
		}
		o.localPath = localPath
		return nil
	}
}

// WithRecordFormat picks FormatMP4 (default) or FormatWebM.
func WithRecordFormat(format string) RecordOption {
	return func(o *recordOptions) error {
		if format != FormatMP4 && format != FormatWebM {
			return fmt.Errorf("%w: recording format %q (want mp4 or webm)", ErrInvalidArgument, format)
		}
		o.format = format
		return nil
	}
}

// WithFramerate sets the frames per second captured (default 10).
func WithFramerate(fps int) RecordOption {
	return func(o *recordOptions) error {
		if fps < 1 || fps > 60 {
			return fmt.Errorf("%w: framerate %d out of range [1, 60]", ErrInvalidArgument, fps)
		}
		o.fps = fps
		return nil
	}
}

// KeepOnBox leaves the recording on the box after fetching it (by default
// Record removes it, so no video stays behind to be baked).
func KeepOnBox() RecordOption { return func(o *recordOptions) error { o.keep = true; return nil } }

// VideoInfo describes a recorded video.
type VideoInfo struct {
	// Duration of the video stream (container duration).
	Duration time.Duration `json:"-"`
	// Frames counted in the video stream.
	Frames int    `json:"frames"`
	Width  int    `json:"width,omitempty"`
	Height int    `json:"height,omitempty"`
	Codec  string `json:"codec,omitempty"`
	// Source is "ffprobe" when ffprobe decoded the file on the box, or
	// "ffmpeg" when the numbers come from ffmpeg's own progress report
	// (no ffprobe on the box).
	Source string `json:"source"`
}

// Recording is a screen recording Record made.
type Recording struct {
	// RemotePath is where the video was written on the box (removed
	// after the fetch unless KeepOnBox).
	RemotePath string `json:"remote_path"`
	// LocalPath is the local file written with RecordTo.
	LocalPath string `json:"local_path,omitempty"`
	Format    string `json:"format"`
	// Requested is the duration asked for.
	Requested time.Duration `json:"-"`
	// Size in bytes.
	Size  int64     `json:"size"`
	Video VideoInfo `json:"video"`
	// Data holds the video when no RecordTo path was given.
	Data []byte `json:"-"`
}

const recordScript = `need_display
need ffmpeg
mkdir -p "$R/tmp" 2>/dev/null
P="$R$DIR"
mkdir -m 700 "$P" || exit 1
f="$P/recording.$FORMAT"
if [ "$FORMAT" = webm ]; then
  set -- -c:v libvpx -deadline realtime -cpu-used 8 -b:v 2M
elif ffmpeg -hide_banner -encoders 2>/dev/null | grep -q ' libx264 '; then
  set -- -c:v libx264 -preset ultrafast -pix_fmt yuv420p
else
  set -- -c:v mpeg4 -q:v 4
fi
ffmpeg -nostdin -hide_banner -nostats -loglevel error -y -f x11grab -draw_mouse 0 -framerate "$FPS" -i "$D" \
  -t "$SECS" "$@" -progress "$P/progress" "$f" 2>"$P/ffmpeg.log"
rc=$?
if [ "$rc" != 0 ] || [ ! -s "$f" ]; then
  echo "crabbox: ffmpeg exited $rc:" >&2
  tail -n 20 "$P/ffmpeg.log" >&2
  rm -rf -- "$P"
  exit 1
fi
printf 'path=%s\nsize=%s\n' "${f#"$R"}" "$(wc -c <"$f" | tr -d ' ')"
if command -v ffprobe >/dev/null 2>&1; then
  echo source=ffprobe
  ffprobe -v error -count_frames -select_streams v:0 \
    -show_entries stream=codec_name,width,height,nb_read_frames:format=duration \
    -of default=noprint_wrappers=1 "$f"
else
  echo source=ffmpeg
  grep -E '^(frame|out_time_us)=' "$P/progress" | tail -n 2
fi
`

// Record records the lease's display for d with ffmpeg (x11grab) into a
// file on the box, measures it (ffprobe on the box when installed, else
// ffmpeg's progress report), fetches it, and removes it from the box
// unless KeepOnBox. The video is returned in Recording.Data, or written to
// the RecordTo path. Errors match ErrNoDisplay, ErrMissingTool (ffmpeg) or
// ErrInvalidArgument. When Record fails or ctx is cancelled while ffmpeg
// records, it stops ffmpeg and removes the file from the box (detached from
// ctx's cancellation, bounded in time (30 s)), KeepOnBox or not.
func (l *Lease) Record(ctx context.Context, d time.Duration, opts ...RecordOption) (*Recording, error) {
	rec, err := record(ctx, leaseTarget{l}, d, opts...)
	if err != nil {
		return rec, l.c.opErr("record", l.ID, err)
	}
	return rec, nil
}

func record(ctx context.Context, r boxRunner, d time.Duration, opts ...RecordOption) (*Recording, error) {
	o := recordOptions{format: FormatMP4, fps: 10}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if d < 100*time.Millisecond || d > 6*time.Hour {
		return nil, fmt.Errorf("%w: recording duration %v out of range [100ms, 6h]", ErrInvalidArgument, d)
	}
	dir, err := boxTempDir("crabbox-rec.")
	if err != nil {
		return nil, err
	}
	script := "FORMAT=" + o.format + "\nFPS=" + strconv.Itoa(o.fps) +
		"\nSECS=" + strconv.FormatFloat(d.Seconds(), 'f', 3, 64) + "\nDIR=" + ShellQuote(dir) + "\n" + recordScript
	out, err := runScript(ctx, r, "recording the display", script, nil)
	if err != nil {
		if startedNothing(err) {
			return nil, err
		}
		// ffmpeg may still record (the killed script's child): stop it
		// and remove the file.
		return nil, errors.Join(err, cleanupBoxDir(ctx, r, dir, true))
	}
	kv := keyValues(out)
	rec := &Recording{RemotePath: kv["path"], Format: o.format, Requested: d}
	if filepath.Dir(rec.RemotePath) != dir {
		err := fmt.Errorf("recording the display: unexpected output from the box: %q", out)
		return nil, errors.Join(err, cleanupBoxDir(ctx, r, dir, true))
	}
	rec.Size, _ = strconv.ParseInt(kv["size"], 10, 64)
	rec.Video = parseVideoInfo(kv)

	// Fetch, then remove the box's copy (also when the fetch failed).
	var ferr error
	if o.localPath != "" {
		ferr = fetchToFile(ctx, r, rec.RemotePath, o.localPath)
		if ferr == nil {
			rec.LocalPath = o.localPath
		}
	} else {
		var buf bytes.Buffer
		if _, ferr = fetch(ctx, r, rec.RemotePath, &buf); ferr == nil {
			rec.Data = buf.Bytes()
		}
	}
	if !o.keep {
		if rerr := cleanupBoxDir(ctx, r, dir, false); rerr != nil {
			ferr = errors.Join(ferr, rerr)
		}
	}
	if ferr != nil {
		return rec, ferr
	}
	return rec, nil
}

// parseVideoInfo reads ffprobe's default output, or ffmpeg's progress keys.
func parseVideoInfo(kv map[string]string) VideoInfo {
	v := VideoInfo{Source: kv["source"], Codec: kv["codec_name"]}
	v.Width, _ = strconv.Atoi(kv["width"])
	v.Height, _ = strconv.Atoi(kv["height"])
	if v.Source == "ffprobe" {
		v.Frames, _ = strconv.Atoi(kv["nb_read_frames"])
		if s, err := strconv.ParseFloat(kv["duration"], 64); err == nil {
			v.Duration = fromSeconds(s)
		}
	} else {
		v.Frames, _ = strconv.Atoi(kv["frame"])
		if us, err := strconv.ParseInt(kv["out_time_us"], 10, 64); err == nil && us > 0 {
			v.Duration = time.Duration(us) * time.Microsecond
		}
	}
	return v
}

type videoInfoJSON VideoInfo

// MarshalJSON adds the duration as float seconds ("duration_seconds").
func (v VideoInfo) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		videoInfoJSON
		DurationSeconds float64 `json:"duration_seconds"`
	}{videoInfoJSON(v), seconds(v.Duration)})
}

type recordingJSON Recording

// MarshalJSON adds the requested duration as float seconds
// ("requested_seconds").
func (r Recording) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		recordingJSON
		RequestedSeconds float64 `json:"requested_seconds"`
	}{recordingJSON(r), seconds(r.Requested)})
}

// Check reports whether the video has a positive duration and frames.
func (v VideoInfo) Check() error {
	var errs []error
	if v.Duration <= 0 {
		errs = append(errs, errors.New("video has no duration"))
	}
	if v.Frames <= 0 {
		errs = append(errs, errors.New("video has no frames"))
	}
	return errors.Join(errs...)
}

// String summarizes the video for reports.
func (v VideoInfo) String() string {
	s := fmt.Sprintf("%.2fs, %d frames", v.Duration.Seconds(), v.Frames)
	if v.Width > 0 {
		s += fmt.Sprintf(", %dx%d", v.Width, v.Height)
	}
	if v.Codec != "" {
		s += ", " + v.Codec
	}
	return s + " (" + v.Source + ")"
}

const fetchScript = `p=` + "%s" + `
if [ -d "$p" ]; then echo "crabbox: $p is a directory" >&2; exit 92; fi
if [ ! -e "$p" ]; then echo "crabbox: no such file $p" >&2; exit 92; fi
if [ ! -r "$p" ]; then echo "crabbox: cannot read $p" >&2; exit 93; fi
exec cat -- "$p"
`

// Fetch copies a file from the box to w (cat over the lease's SSH
// connection) and returns the number of bytes written. Absolute paths are
// resolved below ${CRABBOX_FS_ROOT} like the smoke checks do, "~/..."
// below $HOME. A missing file matches ErrNotFound, an unreadable one
// ErrPermission.
func (l *Lease) Fetch(ctx context.Context, remotePath string, w io.Writer) (int64, error) {
	n, err := fetch(ctx, leaseTarget{l}, remotePath, w)
	if err != nil {
		return n, l.c.opErr("fetch", l.ID, err)
	}
	return n, nil
}

// FetchFile copies a file from the box to a local file (created or
// truncated, mode 0644); on error the partial local file is removed.
func (l *Lease) FetchFile(ctx context.Context, remotePath, localPath string) error {
	if err := fetchToFile(ctx, leaseTarget{l}, remotePath, localPath); err != nil {
		return l.c.opErr("fetch", l.ID, err)
	}
	return nil
}

func fetch(ctx context.Context, r boxRunner, remotePath string, w io.Writer) (int64, error) {
	if strings.TrimSpace(remotePath) == "" || strings.ContainsAny(remotePath, "\x00\n\r") {
		return 0, fmt.Errorf("%w: remote path %q", ErrInvalidArgument, remotePath)
	}
	if w == nil {
		return 0, fmt.Errorf("%w: nil writer", ErrInvalidArgument)
	}
	cw := &countingWriter{w: w}
	_, err := runScript(ctx, r, "fetching "+remotePath, fmt.Sprintf(fetchScript, boxPath(remotePath)), cw)
	return cw.n, err
}

func fetchToFile(ctx context.Context, r boxRunner, remotePath, localPath string) error {
	if strings.TrimSpace(localPath) == "" {
		return fmt.Errorf("%w: empty local path", ErrInvalidArgument)
	}
	f, err := os.Create(localPath)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", remotePath, err)
	}
	_, err = fetch(ctx, r, remotePath, f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("fetching %s: %w", remotePath, cerr)
	}
	if err != nil {
		_ = os.Remove(localPath)
		return err
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

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

// windowName returns a window's current title ("" if unknown).
func windowName(ctx context.Context, r boxRunner, id string) string {
	out, err := runScript(ctx, r, "window name", "need_display\nneed xdotool\nDISPLAY=\"$D\" xdotool getwindowname "+ShellQuote(id)+"\n", nil)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
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
