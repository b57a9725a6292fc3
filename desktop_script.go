// Desktop box-script plumbing: the shell prelude every desktop script runs
// with, running a script and mapping its exit codes to typed errors, and
// temporary directories on the box.

package crabbox

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Exit codes the SDK's capture scripts use to report what is missing.
const (
	exitNoDisplay = 90
	exitNoTool    = 91
)

// ErrNoDisplay: the lease has no running X display on :99.
var ErrNoDisplay = errors.New("no display")

// ErrMissingTool: a tool the operation needs is not installed on the box.
var ErrMissingTool = errors.New("missing tool")

// Exit codes of the desktop scripts, beside exitNoDisplay and exitNoTool.
const (
	exitNoFile     = 92
	exitPermission = 93
)

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
//
//go:embed desktop_prelude.sh
var desktopPrelude string

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

// boxPath renders a path for the desktop scripts: absolute paths below
// "${CRABBOX_FS_ROOT:-}" (as fsPath does).
func boxPath(p string) string { return fsPath(p) }

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
//
//go:embed desktop_cleanup_dir.sh
var cleanupBoxDirScript string

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
