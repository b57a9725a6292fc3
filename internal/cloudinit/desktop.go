// The desktop and browser bootstrap: the script the user-data installs and
// runs to bring up Xvfb, a window manager, VNC on loopback and a browser.

package cloudinit

import (
	"strings"
)

// DesktopBootstrapFile is where the user-data installs the desktop and
// browser bootstrap script (DesktopBootstrapScript); runcmd runs it.
const DesktopBootstrapFile = "/usr/local/lib/crabbox/desktop-bootstrap"

// BrowserCandidates are the browser commands looked for, in order; the first
// found is recorded in BrowserEnvFile.
func BrowserCandidates() []string { return []string{"google-chrome", "chromium", "chromium-browser"} }

// DesktopTools are the commands a desktop box must have: the display server
// and the capture helpers (x11vnc and a window manager are optional).
func DesktopTools() []string { return []string{"Xvfb", "xdotool", "scrot", "ffmpeg", "ffprobe"} }

// DesktopBootstrapScript returns the /bin/sh script that brings up the
// desktop and browser capabilities cfg asks for (only cfg.Desktop and
// cfg.Browser matter). It is idempotent, and:
//
//   - skips package work when the image already has every tool (a baked
//     image); otherwise installs the missing ones with apt-get (as root, or
//     with passwordless sudo) and fails naming them when it cannot;
//   - with Desktop, starts Xvfb on the display (${CRABBOX_DISPLAY:-:99},
//     1280x800x24, -nolisten tcp), a window manager when one is installed
//     (openbox), and x11vnc bound to 127.0.0.1 only on port
//     ${CRABBOX_VNC_PORT:-5900}: through the crabbox systemd units when
//     systemd runs the box (PID 1) and the script may manage it, otherwise in
//     the background with setsid and nohup (containers, test hosts, a
//     non-root user), logging to /var/lib/crabbox/log;
//   - with Browser, finds google-chrome, chromium or chromium-browser and
//     writes BROWSER=<path> to BrowserEnvFile;
//   - ends with the readiness test: exit 0 only when the display answers
//     (xdotool getdisplaygeometry) and "$BROWSER --version" works.
//
// When tools are missing and cannot be installed it exits 91 after a
// stderr line "crabbox-missing: TOOL..." (for a browser: every command
// it looked for); other failures exit 1.
//
// Paths of crabbox state are resolved below ${CRABBOX_FS_ROOT} when it is
// set, like ReadyCommand does. A non-empty ${CRABBOX_FS_ROOT} means the
// script runs on the host of an emulated box (the local cloud, test
// emulators), and then it never changes that host: it runs neither sudo nor
// apt-get (missing tools are the exit-91 error, even as root), it requires
// ${CRABBOX_DISPLAY} (no fallback to :99), and it removes a stale X lock
// and socket only for a display it started itself (it records the pid of
// each Xvfb it starts in /var/lib/crabbox/xvfb-N.pid below the root); any
// other leftover lock is an error naming it. Messages go to stderr prefixed
// with "crabbox-desktop:"; the last stdout line summarizes what is up.
func DesktopBootstrapScript(cfg Config) string {
	bit := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	b.WriteString("# crabbox desktop and browser bootstrap. Rendered by crabbox; safe to run again.\n")
	b.WriteString("WANT_DESKTOP=" + bit(cfg.Desktop) + "\n")
	b.WriteString("WANT_BROWSER=" + bit(cfg.Browser) + "\n")
	b.WriteString("GEOMETRY=" + shellQuote(ScreenGeometry) + "\n")
	b.WriteString("BROWSERS=" + shellQuote(strings.Join(BrowserCandidates(), " ")) + "\n")
	b.WriteString("TOOLS=" + shellQuote(strings.Join(DesktopTools(), " ")) + "\n")
	b.WriteString("BROWSER_ENV=" + shellQuote(BrowserEnvFile) + "\n")
	b.WriteString(desktopScriptBody)
	return b.String()
}

// desktopScriptBody is the fixed part of DesktopBootstrapScript.
const desktopScriptBody = `set -u
R="${CRABBOX_FS_ROOT:-}"
# On an emulated box's host (R set) there is no default display: :99 of the
# host is not the box's.
if [ -n "$R" ]; then D="${CRABBOX_DISPLAY:-}"; else D="${CRABBOX_DISPLAY:-:99}"; fi
N="${D#:}"; N="${N%%.*}"
VNC_PORT="${CRABBOX_VNC_PORT:-5900}"
STATE="$R/var/lib/crabbox"
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin:/snap/bin"; export PATH
log() { printf 'crabbox-desktop: %s\n' "$*" >&2; }
fail() { log "$*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
if [ "$WANT_DESKTOP" = 1 ]; then
  [ -n "$D" ] || fail "CRABBOX_DISPLAY is not set: with CRABBOX_FS_ROOT set (an emulated box on its host) the display must be given; not using the host's :99"
  case "$N" in ''|*[!0-9]*) fail "display $D is not of the form :N" ;; esac
fi

# Privileges: root, passwordless sudo, or none (then nothing is installed and
# services run as the calling user). An emulated box (R set) never gets any:
# sudo and apt-get would change its host.
if [ -n "$R" ]; then SUDO=""; PRIV=0
elif [ "$(id -u)" = 0 ]; then SUDO=""; PRIV=1
elif have sudo && sudo -n true >/dev/null 2>&1; then SUDO="sudo -n"; PRIV=1
else SUDO=""; PRIV=0; fi
as_root() { if [ "$PRIV" = 1 ]; then $SUDO "$@"; else "$@"; fi; }

find_browser() {
  for b in $BROWSERS; do
    p=$(command -v "$b" 2>/dev/null) && [ -n "$p" ] && { printf '%s\n' "$p"; return 0; }
  done
  return 1
}

# 1. Packages: only what is missing (a baked image has everything).
missing=""
names=""
pkgs=""
if [ "$WANT_DESKTOP" = 1 ]; then
  for t in $TOOLS; do
    if ! have "$t"; then
      missing="$missing $t"
      names="$names $t"
      case "$t" in
        Xvfb) pkgs="$pkgs xvfb" ;;
        ffmpeg|ffprobe) case " $pkgs " in *" ffmpeg "*) ;; *) pkgs="$pkgs ffmpeg" ;; esac ;;
        *) pkgs="$pkgs $t" ;;
      esac
    fi
  done
  have x11vnc || pkgs="$pkgs x11vnc"
fi
if [ "$WANT_BROWSER" = 1 ] && ! find_browser >/dev/null; then
  missing="$missing browser($(echo $BROWSERS | sed 's/ /|/g'))"
  names="$names $BROWSERS"
fi
if [ -z "$missing" ]; then
  log "capabilities present (baked image): skipping package installs"
elif [ "$PRIV" = 1 ] && have apt-get; then
  log "installing packages for:$missing"
  if [ "$WANT_DESKTOP" = 1 ] && ! have openbox; then pkgs="$pkgs openbox"; fi
  apt() { as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q "$@"; }
  apt update >/dev/null || log "apt-get update failed"
  if [ -n "$pkgs" ]; then apt install --no-install-recommends $pkgs >/dev/null || fail "apt-get install$pkgs failed"; fi
  if [ "$WANT_BROWSER" = 1 ] && ! find_browser >/dev/null; then
    apt install --no-install-recommends chromium >/dev/null 2>&1 || apt install --no-install-recommends chromium-browser >/dev/null ||
      fail "installing chromium (or chromium-browser) failed"
  fi
else
  echo "crabbox-missing:$names" >&2
  if [ -n "$R" ]; then
    log "missing:$missing (not installing packages: CRABBOX_FS_ROOT is set, this is an emulated box's host)"
  else
    log "missing:$missing (and no root or passwordless sudo to install them)"
  fi
  exit 91
fi
if [ "$WANT_DESKTOP" = 1 ]; then
  for t in $TOOLS; do have "$t" || fail "missing tool $t after installing"; done
fi

answers() { DISPLAY="$D" xdotool getdisplaygeometry 2>/dev/null; }
bg() { # bg NAME CMD...: start CMD detached, logging to $LOGDIR/NAME.log
  name=$1; shift
  setsid nohup "$@" >"$LOGDIR/$name.log" 2>&1 </dev/null &
}

# 2. Display, window manager, VNC on 127.0.0.1.
if [ "$WANT_DESKTOP" = 1 ]; then
  as_root mkdir -p "$STATE" 2>/dev/null
  LOGDIR="$STATE/log"
  as_root mkdir -p "$LOGDIR" 2>/dev/null && as_root chmod 1777 "$LOGDIR" 2>/dev/null
  [ -w "$LOGDIR" ] || { LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/crabbox-desktop-log.XXXXXX") || fail "no log directory"; }
  systemd=0 started=0
  if [ -z "$R" ] && [ "$PRIV" = 1 ] && [ "$D" = ":99" ] && [ -d /run/systemd/system ] && have systemctl &&
     [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && [ -f /etc/systemd/system/crabbox-xvfb.service ]; then
    systemd=1
  fi
  if [ "$systemd" = 1 ]; then
    as_root systemctl daemon-reload
    as_root systemctl enable --now crabbox-xvfb.service || fail "starting crabbox-xvfb.service failed"
    if have openbox; then as_root systemctl enable --now crabbox-wm.service || log "window manager did not start"; fi
    if have x11vnc; then as_root systemctl enable --now crabbox-x11vnc.service || log "x11vnc did not start"; fi
  else
    if ! answers >/dev/null; then
      lock="/tmp/.X$N-lock"
      pidfile="$STATE/xvfb-$N.pid"
      if [ -f "$lock" ]; then
        pid=$(tr -dc '0-9' <"$lock")
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
          mine=$(tr -dc '0-9' <"$pidfile" 2>/dev/null)
          if [ -z "$R" ] || [ "$pid" = "$mine" ]; then
            log "removing stale $lock"
            rm -f "$lock" "/tmp/.X11-unix/X$N" 2>/dev/null
          else
            fail "display $D is locked by $lock (pid $pid, not running) and was not started by crabbox: not touching the host's X files; remove them or choose another CRABBOX_DISPLAY"
          fi
        fi
      fi
      bg xvfb Xvfb "$D" -screen 0 "$GEOMETRY" -nolisten tcp
      echo "$!" >"$pidfile" 2>/dev/null || log "cannot record the Xvfb pid in $pidfile"
      started=1
    fi
  fi
  i=0
  until answers >/dev/null; do
    i=$((i+1))
    [ "$i" -le 300 ] || fail "display $D does not answer after 30 s (log: $LOGDIR)"
    sleep 0.1
  done
  if [ "$started" = 1 ]; then
    # Only beside a display this run started: a display already up has them.
    if have openbox; then DISPLAY="$D" bg wm openbox; fi
    if have x11vnc; then
      bg x11vnc x11vnc -display "$D" -localhost -rfbport "$VNC_PORT" -forever -shared -nopw -quiet
    fi
  fi
fi

# 3. Browser: record its path.
if [ "$WANT_BROWSER" = 1 ]; then
  B=$(find_browser) || fail "no browser found (tried $BROWSERS)"
  as_root mkdir -p "$STATE" 2>/dev/null
  printf 'BROWSER=%s\n' "$B" | as_root tee "$R$BROWSER_ENV" >/dev/null || fail "cannot write $R$BROWSER_ENV"
fi

# 4. Readiness: the display answers, the browser starts.
summary="ready:"
if [ "$WANT_DESKTOP" = 1 ]; then
  geo=$(answers) || fail "display $D does not answer"
  summary="$summary display $D $geo;"
fi
if [ "$WANT_BROWSER" = 1 ]; then
  . "$R$BROWSER_ENV"
  v=$("$BROWSER" --version 2>/dev/null) || fail "browser $BROWSER does not run"
  summary="$summary browser $BROWSER ($v);"
fi
echo "$summary"
`
