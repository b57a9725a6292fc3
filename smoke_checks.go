// Smoke checks: the SmokeCheck type, its constructors (tools, paths, commands
// with expectations, screenshot not blank, the do-not-bake hygiene checks) and
// the runbook's check sets.

package crabbox

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Check kinds recorded in SmokeCheck.Kind and CheckResult.Kind.
const (
	KindCommandExists = "command-exists"
	KindDirExists     = "dir-exists"
	KindFileExists    = "file-exists"
	KindCommand       = "command"
	KindScreenshot    = "screenshot"
	KindHygiene       = "hygiene"
)

// DefaultSmokeTimeout bounds one attempt of a check whose Timeout is zero.
const DefaultSmokeTimeout = 2 * time.Minute

// SmokeCheck is one check run by Smoke. Build checks with the constructors
// (CommandExists, DirExists, CommandSucceeds, ScreenshotNotBlank, the
// hygiene checks ...) and adjust them with WithTitle, WithTimeout and
// WithRetry; a zero SmokeCheck fails with ErrInvalidArgument when run.
//
// Paths that checks test on the box are resolved below ${CRABBOX_FS_ROOT},
// which only the embedded local cloud sets (its machines are directories on
// the host); on real machines it is empty and paths are used as given.
type SmokeCheck struct {
	// Title names the check in events and reports.
	Title string
	// Timeout bounds each attempt (zero: DefaultSmokeTimeout).
	Timeout time.Duration
	// Retries is how many more attempts a failing check gets (zero: none).
	// Invalid checks and host key mismatches are never retried.
	Retries int
	// RetryDelay is the pause between attempts.
	RetryDelay time.Duration
	// Kind is one of the Kind constants.
	Kind string

	run checkFunc
	// spec is what the check runs (its script, expectations or
	// parameters), set by the constructors; its Fingerprint is derived
	// from it, so a proof policy matches checks by what they run, never by
	// a title a caller can choose. Empty for invalid checks.
	spec string
}

// WithTitle returns a copy of the check with another title.
func (c SmokeCheck) WithTitle(title string) SmokeCheck { c.Title = title; return c }

// WithTimeout returns a copy of the check whose attempts are each bounded by
// d (zero or negative: DefaultSmokeTimeout).
func (c SmokeCheck) WithTimeout(d time.Duration) SmokeCheck { c.Timeout = d; return c }

// WithRetry returns a copy of the check that is attempted up to n more times
// after a failure, pausing delay between attempts.
func (c SmokeCheck) WithRetry(n int, delay time.Duration) SmokeCheck {
	if n < 0 {
		n = 0
	}
	if delay < 0 {
		delay = 0
	}
	c.Retries, c.RetryDelay = n, delay
	return c
}

// checkFunc performs one attempt of a check against a target.
type checkFunc func(ctx context.Context, t smokeTarget) attempt

// attempt is the outcome of one try of a check.
type attempt struct {
	exitCode int            // -1 when no command finished
	output   string         // bounded tail shown in the report
	err      error          // nil: passed
	png      []byte         // screenshot kept as evidence
	files    []evidenceFile // other evidence (videos), written with WithEvidenceDir
}

// evidenceFile is evidence other than the screenshot: data written to a
// file with extension ext in the evidence dir.
type evidenceFile struct {
	ext  string
	data []byte
}

func invalidCheck(kind, title string, err error) SmokeCheck {
	return SmokeCheck{Title: title, Kind: kind, Timeout: DefaultSmokeTimeout,
		run: func(context.Context, smokeTarget) attempt { return attempt{exitCode: -1, err: err} }}
}

// fsPath renders a path the way checks test it on the box: absolute paths
// below "${CRABBOX_FS_ROOT:-}", "~" and "~/x" below "$HOME", relative paths
// as they are (relative to the login directory).
func fsPath(p string) string {
	switch {
	case p == "~":
		return `"$HOME"`
	case strings.HasPrefix(p, "~/"):
		return `"$HOME"` + ShellQuote(p[1:])
	case strings.HasPrefix(p, "/"):
		return `"${CRABBOX_FS_ROOT:-}"` + ShellQuote(p)
	default:
		return ShellQuote(p)
	}
}

// Expectation is a condition on a command's exit code or standard output,
// used by CommandSucceeds. Output expectations see the command's stdout (up
// to its first MiB); redirect 2>&1 in the command to include stderr.
type Expectation struct {
	desc     string
	exitCode *int
	check    func(stdout string) error
	err      error // set when the expectation itself is invalid
}

// String describes the expectation.
func (e Expectation) String() string { return e.desc }

// ExitCode expects the command to exit with code n. Without any ExitCode
// expectation CommandSucceeds expects exit code 0.
func ExitCode(n int) Expectation {
	return Expectation{desc: fmt.Sprintf("exit code %d", n), exitCode: &n}
}

// OutputContains expects s in the command's stdout.
func OutputContains(s string) Expectation {
	return Expectation{desc: fmt.Sprintf("output contains %q", s), check: func(out string) error {
		if !strings.Contains(out, s) {
			return fmt.Errorf("output does not contain %q", s)
		}
		return nil
	}}
}

// OutputNotContains expects s nowhere in the command's stdout.
func OutputNotContains(s string) Expectation {
	return Expectation{desc: fmt.Sprintf("output does not contain %q", s), check: func(out string) error {
		if strings.Contains(out, s) {
			return fmt.Errorf("output contains %q", s)
		}
		return nil
	}}
}

// OutputMatches expects the command's stdout to match the regular
// expression pattern (Go syntax). An invalid pattern does not panic: the
// check fails, without running anything, with an error matching
// ErrInvalidArgument.
func OutputMatches(pattern string) Expectation {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return Expectation{desc: fmt.Sprintf("output matches /%s/", pattern),
			err: fmt.Errorf("%w: invalid regular expression %q: %v", ErrInvalidArgument, pattern, err)}
	}
	return OutputMatchesRegexp(re)
}

// OutputMatchesRegexp expects the command's stdout to match re. A nil re
// makes the check fail with ErrInvalidArgument.
func OutputMatchesRegexp(re *regexp.Regexp) Expectation {
	if re == nil {
		return Expectation{desc: "output matches <nil>", err: fmt.Errorf("%w: nil regular expression", ErrInvalidArgument)}
	}
	return Expectation{desc: fmt.Sprintf("output matches /%s/", re), check: func(out string) error {
		if !re.MatchString(out) {
			return fmt.Errorf("output does not match /%s/", re)
		}
		return nil
	}}
}

// judge applies expectations to a finished command.
func judge(expect []Expectation, exitCode int, stdout string) error {
	wantExit := false
	var errs []error
	for _, e := range expect {
		if e.exitCode != nil {
			wantExit = true
			if exitCode != *e.exitCode {
				errs = append(errs, fmt.Errorf("exit code %d, want %d", exitCode, *e.exitCode))
			}
		}
		if e.check != nil {
			if err := e.check(stdout); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if !wantExit && exitCode != 0 {
		errs = append([]error{fmt.Errorf("exit code %d, want 0", exitCode)}, errs...)
	}
	return errors.Join(errs...)
}

// commandCheck runs script and judges it; a command that ran but failed its
// expectations is a failed attempt, as is a transport error.
func commandCheck(script string, judgeFn func(exitCode int, stdout string) error) checkFunc {
	return func(ctx context.Context, t smokeTarget) attempt {
		stdout, stderr := newCapture(), newCapture()
		code, err := t.runCommand(ctx, script, stdout, stderr)
		a := attempt{exitCode: code, output: combineOutput(stdout.tailString(), stderr.tailString())}
		if err != nil {
			a.exitCode = -1
			a.err = err
			return a
		}
		a.err = judgeFn(code, stdout.headString())
		return a
	}
}

// CommandExists passes if any of the named commands is found on the box's
// PATH (command -v a || command -v b ...); the output names the path found.
// Use alternatives for tools packaged under several names, e.g.
// CommandExists("google-chrome", "chromium", "chromium-browser").
func CommandExists(names ...string) SmokeCheck {
	title := "command -v " + strings.Join(names, " || command -v ")
	if len(names) == 0 {
		return invalidCheck(KindCommandExists, "command -v (no names)", fmt.Errorf("%w: CommandExists needs at least one name", ErrInvalidArgument))
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		if strings.TrimSpace(n) == "" {
			return invalidCheck(KindCommandExists, title, fmt.Errorf("%w: empty command name", ErrInvalidArgument))
		}
		quoted[i] = ShellQuote(n)
	}
	script := "set -- " + strings.Join(quoted, " ") + "\nNAMES=" + ShellQuote(strings.Join(names, ", ")) + "\n" + commandExistsScript
	return SmokeCheck{Title: title, Kind: KindCommandExists, Timeout: DefaultSmokeTimeout, spec: checkSpec(KindCommandExists, script),
		run: commandCheck(script, func(code int, _ string) error {
			if code != 0 {
				return fmt.Errorf("none of %s found on PATH", strings.Join(names, ", "))
			}
			return nil
		})}
}

func pathCheck(kind, flag, what, path string) SmokeCheck {
	title := fmt.Sprintf("test -%s %s", flag, path)
	if strings.TrimSpace(path) == "" {
		return invalidCheck(kind, title, fmt.Errorf("%w: empty path", ErrInvalidArgument))
	}
	p := fsPath(path)
	script := "p=" + p + "\nFLAG=" + flag + "\nWHAT=" + what + "\n" + pathExistsScript
	return SmokeCheck{Title: title, Kind: kind, Timeout: DefaultSmokeTimeout, spec: checkSpec(kind, script),
		run: commandCheck(script, func(code int, _ string) error {
			if code != 0 {
				return fmt.Errorf("%s %s does not exist", what, path)
			}
			return nil
		})}
}

// DirExists passes if path is a directory on the box. Absolute paths are
// resolved below ${CRABBOX_FS_ROOT}, "~/..." below $HOME.
func DirExists(path string) SmokeCheck { return pathCheck(KindDirExists, "d", "directory", path) }

// FileExists passes if path is a regular file on the box (resolved as in
// DirExists).
func FileExists(path string) SmokeCheck { return pathCheck(KindFileExists, "f", "file", path) }

// WorkRoot is the directory leases work in.
const WorkRoot = "/work/crabbox"

// WorkRootExists passes if the work root /work/crabbox exists.
func WorkRootExists() SmokeCheck { return DirExists(WorkRoot) }

// CommandSucceeds runs command with /bin/sh on the box and applies the
// expectations; with no ExitCode expectation it also expects exit code 0.
// An invalid expectation (e.g. a bad regular expression) makes the check
// fail with ErrInvalidArgument without running the command.
func CommandSucceeds(title, command string, expect ...Expectation) SmokeCheck {
	if title == "" {
		title = command
	}
	if strings.TrimSpace(command) == "" {
		return invalidCheck(KindCommand, title, fmt.Errorf("%w: empty command", ErrInvalidArgument))
	}
	for _, e := range expect {
		if e.err != nil {
			return invalidCheck(KindCommand, title, e.err)
		}
		if e.exitCode == nil && e.check == nil {
			return invalidCheck(KindCommand, title, fmt.Errorf("%w: zero Expectation", ErrInvalidArgument))
		}
	}
	exp := append([]Expectation(nil), expect...)
	parts := []string{command}
	for _, e := range exp {
		parts = append(parts, e.desc)
	}
	spec := checkSpec(KindCommand, parts...)
	return SmokeCheck{Title: title, Kind: KindCommand, Timeout: DefaultSmokeTimeout, spec: spec,
		run: commandCheck(command, func(code int, out string) error { return judge(exp, code, out) })}
}

// ScreenshotNotBlank takes a screenshot of the lease's display (:99) and
// fails if it is blank (see JudgeScreenshot). The PNG is kept as evidence
// (CheckResult.PNG, and a file when Smoke has WithEvidenceDir). It retries
// twice, 3 s apart, by default, since a desktop may still be drawing.
func ScreenshotNotBlank() SmokeCheck {
	return SmokeCheck{Title: "screenshot of display :99 is not blank", Kind: KindScreenshot,
		Timeout: DefaultSmokeTimeout, Retries: 2, RetryDelay: 3 * time.Second, spec: checkSpec(KindScreenshot),
		run: func(ctx context.Context, t smokeTarget) attempt {
			data, err := t.screenshot(ctx)
			if err != nil {
				return attempt{exitCode: -1, err: fmt.Errorf("screenshot: %w", err)}
			}
			a := attempt{exitCode: -1, png: data}
			st, err := JudgeScreenshot(data)
			if err != nil {
				a.err = err
				return a
			}
			a.output = st.String()
			if st.Blank() {
				a.err = fmt.Errorf("screenshot is blank: %s", st)
			}
			return a
		}}
}

// hygienePrelude is shared by the do-not-bake checks. It lists the home
// directories to inspect ($HOME, /root, /home/*, all below
// ${CRABBOX_FS_ROOT}), uses passwordless sudo to read other users' homes when
// not root and sudo allows it, and collects findings in $found.
//
//go:embed smoke_hygiene_prelude.sh
var hygienePrelude string

//go:embed smoke_hygiene_epilogue.sh
var hygieneEpilogue string

// The box-side scripts of the checks above and below (see each file's
// first comment for the variables set before it).
var (
	//go:embed smoke_command_exists.sh
	commandExistsScript string
	//go:embed smoke_path_exists.sh
	pathExistsScript string
	//go:embed smoke_pnpm_cache_dir.sh
	pnpmCacheDirScript string
	//go:embed smoke_hygiene_credentials.sh
	noCredentialsScript string
	//go:embed smoke_hygiene_browser_profiles.sh
	noBrowserProfilesScript string
	//go:embed smoke_hygiene_checkouts.sh
	noRepositoryCheckoutsScript string
	//go:embed smoke_hygiene_operator_notes.sh
	noOperatorNotesScript string
)

// tokenLine matches an assignment of a non-empty literal to a variable
// whose name says it holds a secret.
const tokenLine = `^[[:space:]]*(export[[:space:]]+)?[A-Za-z0-9_]*(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY)[A-Za-z0-9_]*[[:space:]]*=[[:space:]]*["']?[A-Za-z0-9_./+:@-]`

func hygieneCheck(title, body string) SmokeCheck {
	script := hygienePrelude + body + hygieneEpilogue
	return SmokeCheck{Title: title, Kind: KindHygiene, Timeout: DefaultSmokeTimeout, spec: checkSpec(KindHygiene, script),
		run: commandCheck(script, func(code int, _ string) error {
			if code != 0 {
				return errors.New("found state that must not be baked into an image (see output)")
			}
			return nil
		})}
}

// NoCredentials fails if a home directory ($HOME, /root, /home/*) holds
// credentials or tokens: ~/.aws/credentials, files under ~/.config/gcloud,
// SSH private keys (~/.ssh/id_* other than *.pub), .netrc, .git-credentials,
// an .npmrc with _authToken, GitHub CLI, Docker or hcloud CLI tokens, and
// env files (.env, .env.*, *.env, also in the work root) or shell profiles
// assigning a literal to a *TOKEN*, *SECRET*, *PASSWORD*, *API_KEY* or
// *ACCESS_KEY* variable. The output lists what was found.
func NoCredentials() SmokeCheck {
	body := "TOKRE=" + ShellQuote(tokenLine) + "\n" + noCredentialsScript
	return hygieneCheck("no credentials or tokens", body)
}

// NoBrowserProfiles fails if a home directory holds browser profiles,
// cookies or chat sessions: non-empty ~/.config/chromium,
// ~/.config/google-chrome*, ~/.mozilla, snap browser dirs, Cookies or
// cookies.sqlite files (also in the work root), and Slack, Discord,
// WhatsApp, Signal or Teams directories under ~/.config.
func NoBrowserProfiles() SmokeCheck {
	body := noBrowserProfilesScript
	return hygieneCheck("no browser profiles, cookies or chat sessions", body)
}

// NoRepositoryCheckouts fails if a home directory or the work root holds a
// source checkout (.git), node_modules or dist directory. In home
// directories, tool caches and installs are skipped (.cache, .npm, .nvm,
// .pnpm-store, .local/share/pnpm, .local/lib, .volta, .fnm, .cargo, .rustup,
// .oh-my-zsh, .vscode-server, go/pkg/mod); the work root is searched whole.
func NoRepositoryCheckouts() SmokeCheck {
	body := noRepositoryCheckoutsScript
	return hygieneCheck("no repository checkouts, node_modules or dist", body)
}

// NoOperatorNotes fails on operator notes and captures: NOTES*, TODO*,
// *.md and *.txt files in the top two levels of a home directory or the work
// root (hidden directories skipped), and screenshots or videos (*.png,
// *.jpg, *.jpeg, *.gif, *.mp4, *.webm, *.mkv) up to five levels deep in
// home directories and the work root (hidden directories skipped).
func NoOperatorNotes() SmokeCheck {
	body := noOperatorNotesScript
	return hygieneCheck("no operator notes, screenshots or videos", body)
}

// Hygiene returns the runbook's four do-not-bake checks: NoCredentials,
// NoBrowserProfiles, NoRepositoryCheckouts and NoOperatorNotes.
func Hygiene() []SmokeCheck {
	return []SmokeCheck{NoCredentials(), NoBrowserProfiles(), NoRepositoryCheckouts(), NoOperatorNotes()}
}

// CheckSetOptions parameterizes the ready-made check sets.
type CheckSetOptions struct {
	// Tools are the commands that must exist. Nil means the runbook's full
	// list for the set; an empty non-nil slice checks no tools.
	Tools []string
	// Desktop adds the desktop proof to CandidateSmoke and PromotedSmoke:
	// with Browser, DesktopProof (the browser renders a per-run token page,
	// found in the screenshot, and a screen recording); without, the
	// recording only.
	Desktop bool
	// Browser adds the browser check (google-chrome, chromium or
	// chromium-browser).
	Browser bool
	// Hygiene adds the do-not-bake checks to SourceVerification (the
	// source lease may still hold the operator's work) and PromotedSmoke;
	// CandidateSmoke always includes them.
	Hygiene bool
}

// Runbook tool lists used when CheckSetOptions.Tools is nil.
var (
	sourceTools    = []string{"ssh", "git", "rsync", "jq", "node", "pnpm", "ffmpeg", "scrot", "x11vnc"}
	candidateTools = []string{"node", "pnpm", "ffmpeg", "scrot"}
	promotedTools  = []string{"ffmpeg", "node"}
)

// SourceVerificationTools returns the runbook's tool list for verifying a
// source lease.
func SourceVerificationTools() []string { return append([]string(nil), sourceTools...) }

// CandidateSmokeTools returns the runbook's tool list for a candidate smoke.
func CandidateSmokeTools() []string { return append([]string(nil), candidateTools...) }

func toolChecks(tools, def []string) []SmokeCheck {
	if tools == nil {
		tools = def
	}
	out := make([]SmokeCheck, 0, len(tools))
	for _, t := range tools {
		out = append(out, CommandExists(t))
	}
	return out
}

// BrowserExists passes if google-chrome, chromium or chromium-browser is
// installed.
func BrowserExists() SmokeCheck {
	return CommandExists("google-chrome", "chromium", "chromium-browser")
}

// PnpmCacheDir creates the shared pnpm cache /var/cache/crabbox/pnpm and
// makes it and its parent world-writable with the sticky bit (1777), as the
// runbook's source verification does; with sudo when not root.
func PnpmCacheDir() SmokeCheck {
	return CommandSucceeds("pnpm cache dir /var/cache/crabbox/pnpm (mkdir, chmod 1777)", pnpmCacheDirScript)
}

// SourceVerification mirrors the runbook's "Verify the source lease": the
// tools (default ssh git rsync jq node pnpm ffmpeg scrot x11vnc), a browser
// when o.Browser, the work root, the pnpm cache directory, and the hygiene
// checks when o.Hygiene.
func SourceVerification(o CheckSetOptions) []SmokeCheck {
	checks := toolChecks(o.Tools, sourceTools)
	if o.Browser {
		checks = append(checks, BrowserExists())
	}
	checks = append(checks, WorkRootExists(), PnpmCacheDir())
	if o.Hygiene {
		checks = append(checks, Hygiene()...)
	}
	return checks
}

// CandidateSmoke mirrors the runbook's "Smoke Candidate Before Promotion":
// echo image-smoke-ok, uname -srm, the tools (default node pnpm ffmpeg
// scrot), a browser when o.Browser, the work root, the four hygiene checks,
// and the desktop proof when o.Desktop (see CheckSetOptions.Desktop).
func CandidateSmoke(o CheckSetOptions) []SmokeCheck {
	checks := []SmokeCheck{
		CommandSucceeds("echo image-smoke-ok", "echo image-smoke-ok", OutputContains("image-smoke-ok")),
		CommandSucceeds("uname -srm", "uname -srm", OutputMatches(`\S`)),
	}
	checks = append(checks, toolChecks(o.Tools, candidateTools)...)
	if o.Browser {
		checks = append(checks, BrowserExists())
	}
	checks = append(checks, WorkRootExists())
	checks = append(checks, Hygiene()...)
	return append(checks, desktopChecks(o)...)
}

// PromotedSmoke mirrors the runbook's check of a normal lease on the
// promoted image: echo promoted-image-smoke-ok and the tools (default
// ffmpeg and node), plus a browser when o.Browser, the hygiene checks when
// o.Hygiene, and the desktop proof when o.Desktop.
func PromotedSmoke(o CheckSetOptions) []SmokeCheck {
	checks := []SmokeCheck{
		CommandSucceeds("echo promoted-image-smoke-ok", "echo promoted-image-smoke-ok", OutputContains("promoted-image-smoke-ok")),
	}
	checks = append(checks, toolChecks(o.Tools, promotedTools)...)
	if o.Browser {
		checks = append(checks, BrowserExists())
	}
	if o.Hygiene {
		checks = append(checks, Hygiene()...)
	}
	return append(checks, desktopChecks(o)...)
}

// desktopChecks is the runbook's "real desktop/browser proof": with a
// browser, the browser renders the per-run token proof page (its block
// pattern found in the screenshot, kept as evidence) and a screen recording
// with frames; with a display
// only, the recording (an idle virtual display is legitimately blank, so a
// blank-screen judgement would fail every healthy desktop image).
func desktopChecks(o CheckSetOptions) []SmokeCheck {
	switch {
	case o.Desktop && o.Browser:
		return DesktopProof()
	case o.Desktop:
		return []SmokeCheck{RecordingNotEmpty(3 * time.Second)}
	}
	return nil
}
