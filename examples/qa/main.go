// Command qa is a desktop/browser QA harness as ordinary Go: it warms a
// desktop+browser lease (or reuses one by id or slug), serves a page on the
// box, opens it in the box's browser with DevTools on the box's loopback,
// drives it over the DevTools protocol (package cdp, chromedp) through the
// lease's SSH tunnel: fills the form and reads the DOM; it captures a
// screenshot and a screen recording, runs the desktop smoke checks, writes
// an evidence bundle and releases the lease.
//
// Hosts:
//
//	go run ./examples/qa                      # no -host: a local desktop host (sshd + Xvfb on loopback, root)
//	go run ./examples/qa -host user@10.0.0.5:22 -key ~/.ssh/id_ed25519 -hostkey host_key.pub
//	go run ./examples/qa -host ... -state qa-hosts.json -lease cbx_0123456789ab   # reuse a lease
//
// With no -host it starts a local desktop host: a real OpenSSH sshd on
// 127.0.0.1 for a temporary user (package crabboxtest/desktoptest), leased
// through provider/sshhost like any existing host. That needs root and the
// tools scripts/setup installs.
// The same code runs against cloud leases: build the client on
// provider/awsec2 or provider/hetzner instead of sshhost.
//
// The evidence bundle (-out, default ./qa-evidence): screenshot.png,
// recording.mp4, report.json and junit.xml (the smoke report), the smoke
// checks' own evidence, and qa.json (what was opened, the window, what the
// DOM said after the input, the screenshot's judgement, the video's
// duration and frames).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/ssh"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/cdp"
	"github.com/crabbox/crabbox-go/crabboxtest/desktoptest"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

var (
	flagHost     = flag.String("host", "", "existing SSH host user@addr:port with a desktop (default: start a local desktop host on loopback, needs root)")
	flagKey      = flag.String("key", "", "private key file for -host")
	flagHostKey  = flag.String("hostkey", "", "the host's public host key (authorized_keys format, e.g. ssh_host_ed25519_key.pub) for -host")
	flagState    = flag.String("state", "", "sshhost state file, so leases outlive this process (needed for -lease)")
	flagLease    = flag.String("lease", "", "reuse this lease (cbx_ id or slug) instead of warming one; it is not released")
	flagKeep     = flag.Bool("keep", false, "keep the lease (do not release it)")
	flagOut      = flag.String("out", "qa-evidence", "evidence directory")
	flagURL      = flag.String("url", "", "open this URL instead of the page the harness serves on the box")
	flagRecord   = flag.Duration("record", 4*time.Second, "screen recording length")
	flagTimeout  = flag.Duration("timeout", 10*time.Minute, "bound on the whole run")
	flagVerbose  = flag.Bool("v", false, "print progress events")
	flagStateDir = flag.String("state-dir", "", "crabbox state dir for per-lease keys (default: a temp dir)")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "qa: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

// page is the app under test: type a name, press Enter, the page greets.
const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>Crabbox QA</title>
<style>
body{margin:0;font:28px sans-serif;background:linear-gradient(135deg,#fff3e0,#ffe0b2 40%,#ffab91);min-height:100vh}
header{background:#d84315;color:#fff;padding:28px 48px;font-size:44px;font-weight:bold}
main{padding:40px 48px}
input{font-size:32px;padding:12px;border:3px solid #d84315;border-radius:10px;width:520px}
#out{margin-top:36px;font-size:56px;color:#1565c0;font-weight:bold;min-height:70px}
.cards{display:flex;gap:24px;margin-top:36px}
.card{flex:1;padding:24px;border-radius:14px;color:#fff}
</style></head>
<body><header>Crabbox desktop QA</header>
<main>
<label for="name">Your name:</label><br>
<input id="name" autofocus placeholder="type and press Enter">
<div id="out"></div>
<div class="cards">
<div class="card" style="background:#2e7d32">Xvfb :99</div>
<div class="card" style="background:#6a1b9a">Chromium</div>
<div class="card" style="background:#00838f">ffmpeg + scrot</div>
</div>
</main>
<script>
document.getElementById('name').addEventListener('keydown', function (e) {
  if (e.key !== 'Enter') return;
  var msg = 'Hello, ' + this.value + '!';
  document.getElementById('out').textContent = msg;
  document.title = 'Crabbox QA: ' + msg;
});
// The title says when the page can take input: the harness waits for it
// before typing, so no keystroke reaches a page that is still loading.
document.title = 'Crabbox QA: ready';
</script></body></html>
`

// pageReady is the window title of the page once its input handler is set.
const pageReady = "Crabbox QA: ready"

// servePage writes the page to a fresh directory on the box and serves it
// with python3 on the box's loopback (file:// when python3 is missing). It
// returns the URL and a stop function.
func servePage(ctx context.Context, l *crabbox.Lease) (string, func(context.Context), error) {
	res, err := l.Run(ctx, `R="${CRABBOX_FS_ROOT:-}"; mkdir -p "$R/tmp"; d=$(mktemp -d "$R/tmp/crabbox-qa-page.XXXXXXXX") && cat > "$d/index.html" && echo "$d"`,
		crabbox.WithStdin(strings.NewReader(page)))
	if err != nil {
		return "", nil, fmt.Errorf("writing the page: %w", err)
	}
	dir := strings.TrimSpace(res.StdoutTail)
	removeDir := func(ctx context.Context) { _, _ = l.Run(ctx, "rm -rf -- "+crabbox.ShellQuote(dir)) }
	// Port 0: the server picks a free port and prints it.
	res, err = l.Run(ctx, `command -v python3 >/dev/null 2>&1 || exit 3
cd `+crabbox.ShellQuote(dir)+` || exit 1
setsid nohup python3 -u -m http.server --bind 127.0.0.1 0 > server.log 2>&1 < /dev/null &
echo "pid=$!"
i=0; until grep -q 'port [0-9]' server.log 2>/dev/null || [ $i -gt 100 ]; do sleep 0.1; i=$((i+1)); done
sed -n 's/.*port \([0-9][0-9]*\).*/port=\1/p' server.log | head -n 1`)
	if err != nil || !strings.Contains(res.StdoutTail, "port=") {
		return "file://" + dir + "/index.html", removeDir, nil
	}
	var pid, port string
	for _, line := range strings.Split(res.StdoutTail, "\n") {
		if v, ok := strings.CutPrefix(line, "pid="); ok {
			pid = v
		}
		if v, ok := strings.CutPrefix(line, "port="); ok {
			port = v
		}
	}
	stop := func(ctx context.Context) {
		_, _ = l.Run(ctx, "kill -- -"+pid+" 2>/dev/null; kill "+pid+" 2>/dev/null; true")
		removeDir(ctx)
	}
	return "http://127.0.0.1:" + port + "/", stop, nil
}

func newClient() (*crabbox.Client, func(), error) {
	var hosts []sshhost.Host
	cleanup := func() {}
	if *flagHost == "" {
		step("starting a local desktop host (sshd on 127.0.0.1 for a temporary user)")
		d, err := desktoptest.Start()
		if err != nil {
			return nil, nil, fmt.Errorf("%w (or point -host at an SSH host with a desktop)", err)
		}
		cleanup = func() { _ = d.Close() }
		fmt.Printf("    host %s@%s, display %s\n", d.SSH.User, d.SSH.Addr, d.Display)
		hosts = append(hosts, d.SSH)
	} else {
		h, err := hostFromFlags()
		if err != nil {
			return nil, nil, err
		}
		hosts = append(hosts, h)
	}
	var dopts []sshhost.Option
	if *flagState != "" {
		dopts = append(dopts, sshhost.WithStateFile(*flagState))
	}
	drv, err := sshhost.New(hosts, dopts...)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	stateDir := *flagStateDir
	if stateDir == "" {
		if stateDir, err = os.MkdirTemp("", "crabbox-qa-state-"); err != nil {
			cleanup()
			return nil, nil, err
		}
		prev := cleanup
		cleanup = func() { prev(); os.RemoveAll(stateDir) }
	}
	opts := []crabbox.Option{crabbox.WithStateDir(stateDir)}
	if *flagVerbose {
		opts = append(opts, crabbox.WithEvents(func(e crabbox.Event) {
			fmt.Printf("    [%s] %s %s %s\n", e.Kind, e.ID, e.State, e.Message)
		}))
	}
	c, err := crabbox.New(drv, opts...)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return c, cleanup, nil
}

func hostFromFlags() (sshhost.Host, error) {
	userAt, addr, ok := strings.Cut(*flagHost, "@")
	if !ok || userAt == "" || addr == "" {
		return sshhost.Host{}, fmt.Errorf("-host %q: want user@addr:port", *flagHost)
	}
	if *flagKey == "" || *flagHostKey == "" {
		return sshhost.Host{}, errors.New("-host needs -key and -hostkey (the host key is pinned, never ignored)")
	}
	keyPEM, err := os.ReadFile(*flagKey)
	if err != nil {
		return sshhost.Host{}, err
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return sshhost.Host{}, fmt.Errorf("-key: %w", err)
	}
	hk, err := os.ReadFile(*flagHostKey)
	if err != nil {
		return sshhost.Host{}, err
	}
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey(hk)
	if err != nil {
		return sshhost.Host{}, fmt.Errorf("-hostkey: %w", err)
	}
	return sshhost.Host{Addr: addr, User: userAt, Signer: signer, HostKey: hostKey}, nil
}

// qaRecord is qa.json.
type qaRecord struct {
	Lease      *crabbox.Lease        `json:"lease"`
	Prepared   string                `json:"prepared"`
	URL        string                `json:"url"`
	Browser    *crabbox.Browser      `json:"browser"`
	Window     *crabbox.Window       `json:"window"`
	DevTools   string                `json:"devtools,omitempty"` // the local DevTools URL through the tunnel
	DOM        string                `json:"dom,omitempty"`      // #out's text after the input, read over DevTools
	Screenshot string                `json:"screenshot"`
	Screen     crabbox.ScreenStats   `json:"screen"`
	Recording  *crabbox.Recording    `json:"recording"`
	Smoke      string                `json:"smoke_report"`
	SmokeOK    bool                  `json:"smoke_ok"`
	Evidence   []string              `json:"evidence"`
	Checks     []crabbox.CheckResult `json:"checks"`
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), *flagTimeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	if err := os.MkdirAll(*flagOut, 0o755); err != nil {
		return err
	}
	out, err := filepath.Abs(*flagOut)
	if err != nil {
		return err
	}

	c, cleanup, err := newClient()
	if err != nil {
		return err
	}
	defer cleanup()

	// 1. Warm a desktop+browser lease, or reuse one.
	var l *crabbox.Lease
	if *flagLease != "" {
		step("reusing lease %s", *flagLease)
		if l, err = c.Lease(ctx, *flagLease); err != nil {
			return err
		}
		l.Desktop, l.Browser = true, true
	} else {
		step("warming a desktop+browser lease")
		l, err = c.Warmup(ctx, crabbox.WithDesktop(), crabbox.WithBrowser(), crabbox.WithTTL(30*time.Minute),
			crabbox.WithLabels(map[string]string{"purpose": "qa"}))
		if err != nil {
			return err
		}
		if !*flagKeep {
			defer func() {
				step("releasing %s", l.Slug)
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
				defer cancel()
				if err := l.Release(rctx); err != nil {
					fmt.Fprintf(os.Stderr, "qa: release: %v\n", err)
				}
			}()
		}
	}
	fmt.Printf("    lease %s (%s) on %s\n", l.ID, l.Slug, l.SSHAddr)
	rec := qaRecord{Lease: l}

	// 2. The desktop: crabbox boxes bring it up at boot; existing hosts
	// get the same bootstrap now (idempotent either way).
	step("preparing the desktop and browser")
	if rec.Prepared, err = l.PrepareDesktop(ctx); err != nil {
		return err
	}
	fmt.Printf("    %s\n", rec.Prepared)

	// 3. Serve the page on the box and open it.
	url := *flagURL
	stopServer := func(context.Context) {}
	if url == "" {
		step("serving the page on the box's loopback")
		if url, stopServer, err = servePage(ctx, l); err != nil {
			return err
		}
		defer stopServer(context.WithoutCancel(ctx))
	}
	rec.URL = url
	step("opening %s", url)
	b, err := l.OpenURL(ctx, url, crabbox.WithDevTools())
	if err != nil {
		return err
	}
	rec.Browser = b
	defer b.Close(context.WithoutCancel(ctx))
	// Our own page says in its title when it has loaded and listens for
	// input; any other URL is only waited for as a browser window.
	pattern := "Crabbox QA|chromium|chrome"
	if *flagURL == "" {
		pattern = pageReady
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	rec.Window, err = l.WaitWindow(wctx, pattern)
	wcancel()
	if err != nil {
		return err
	}
	fmt.Printf("    window %s %q (%dx%d)\n", rec.Window.ID, rec.Window.Name, rec.Window.Width, rec.Window.Height)

	// 4. Record while driving the page over DevTools.
	step("recording %v while driving the page over DevTools", *flagRecord)
	page, detach, err := cdp.Connect(ctx, b)
	if err != nil {
		return err
	}
	defer detach()
	if dt, err := b.DevTools(ctx); err == nil {
		rec.DevTools = dt.WebSocketURL
		fmt.Printf("    DevTools %s\n", dt.WebSocketURL)
	}
	var wg sync.WaitGroup
	var recErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		rec.Recording, recErr = l.Record(ctx, *flagRecord, crabbox.RecordTo(filepath.Join(out, "recording.mp4")))
	}()
	time.Sleep(700 * time.Millisecond)
	if *flagURL == "" {
		// Fill the form and read the DOM over DevTools: no window
		// focus or keyboard emulation on the display needed.
		name := chromedp.CSS("#name")
		if err := chromedp.Do(page, chromedp.WaitVisible(name), chromedp.Click(name), chromedp.SendKeys(name, "crabbox\n")); err != nil {
			return fmt.Errorf("driving the page: %w", err)
		}
		dctx, dcancel := context.WithTimeout(page, 30*time.Second)
		rec.DOM, err = chromedp.Run(dctx, chromedp.Poll[string](`document.querySelector('#out').textContent`))
		dcancel()
		if err != nil {
			return fmt.Errorf("reading the page's answer from the DOM: %w", err)
		}
		fmt.Printf("    the DOM says: %q\n", rec.DOM)
		if rec.DOM != "Hello, crabbox!" {
			return fmt.Errorf("the page answered %q, want %q", rec.DOM, "Hello, crabbox!")
		}
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		w, err := l.WaitWindow(wctx, "Hello, crabbox")
		wcancel()
		if err != nil {
			return fmt.Errorf("the page did not react to the input: %w", err)
		}
		rec.Window = w
		fmt.Printf("    the page answered: %q\n", w.Name)
	}
	wg.Wait()
	if recErr != nil {
		return recErr
	}
	fmt.Printf("    recording.mp4: %s\n", rec.Recording.Video)

	// 5. Screenshot of the driven page.
	step("taking a screenshot")
	png, err := l.Screenshot(ctx)
	if err != nil {
		return err
	}
	if rec.Screen, err = crabbox.JudgeScreenshot(png); err != nil {
		return err
	}
	rec.Screenshot = filepath.Join(out, "screenshot.png")
	if err := os.WriteFile(rec.Screenshot, png, 0o644); err != nil {
		return err
	}
	fmt.Printf("    screenshot.png: %s\n", rec.Screen)
	if rec.Screen.Blank() {
		return fmt.Errorf("the screenshot is blank: %s", rec.Screen)
	}
	if err := b.Close(ctx); err != nil {
		return err
	}

	// 6. The desktop smoke checks, with their evidence in the bundle.
	step("running the desktop smoke checks")
	rep, smokeErr := crabbox.Smoke(ctx, l, []crabbox.SmokeCheck{
		crabbox.BrowserExists(),
		crabbox.BrowserWindowVisible(url),
		crabbox.RecordingNotEmpty(2 * time.Second),
		crabbox.NoBrowserProfiles(),
	}, crabbox.WithEvidenceDir(filepath.Join(out, "smoke")))
	if rep == nil {
		return smokeErr
	}
	for _, r := range rep.Results {
		mark := "PASS"
		if !r.Passed {
			mark = "FAIL " + r.Error
		}
		fmt.Printf("    %-4s %s\n", mark, r.Title)
	}
	if err := writeWith(filepath.Join(out, "report.json"), rep.WriteJSON); err != nil {
		return err
	}
	if err := writeWith(filepath.Join(out, "junit.xml"), rep.WriteJUnit); err != nil {
		return err
	}
	rec.Smoke, rec.SmokeOK, rec.Checks = filepath.Join(out, "report.json"), rep.OK(), rep.Results
	for _, r := range rep.Results {
		rec.Evidence = append(rec.Evidence, r.Evidence...)
	}

	// 7. The bundle's index.
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "qa.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	step("evidence bundle in %s", out)
	for _, f := range []string{"screenshot.png", "recording.mp4", "report.json", "junit.xml", "qa.json"} {
		fmt.Printf("    %s\n", filepath.Join(out, f))
	}
	for _, e := range rec.Evidence {
		fmt.Printf("    %s\n", e)
	}
	return smokeErr
}

func writeWith(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
