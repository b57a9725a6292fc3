// Desktop and browser operations for QA harnesses, and PrepareDesktop,
// which bootstraps the desktop on hosts that ignore user-data. They run small shell
// scripts on the box over the lease's one SSH connection. The display is
// ${CRABBOX_DISPLAY:-:99} on the box (crabbox boxes run Xvfb on :99; a
// test host may export another display); crabbox state paths are resolved
// below ${CRABBOX_FS_ROOT} like the smoke checks do. An emulated box (one
// with ${CRABBOX_FS_ROOT} set, running on a host) has a display only when it
// sets CRABBOX_DISPLAY: the host's :99 is not the box's.
//
// The operations live one subject a file: browser.go, window.go,
// screen.go, record.go, fetch.go; desktop_script.go is their shell plumbing
// and desktop_checks.go the smoke checks built on them.

package crabbox

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
)

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
	if err := l.usable("prepare-desktop"); err != nil {
		return "", err
	}
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
