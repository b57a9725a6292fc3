# Shared by the desktop scripts: R (the FS root), D (the display),
# need_display and need.
R="${CRABBOX_FS_ROOT:-}"
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
