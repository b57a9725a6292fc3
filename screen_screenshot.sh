# Writes a PNG of the display to stdout (scrot, else ImageMagick import).
if [ -n "${CRABBOX_FS_ROOT:-}" ] && [ -z "${CRABBOX_DISPLAY:-}" ]; then
  echo "crabbox: emulated box without a display of its own" >&2; exit 90
fi
export DISPLAY="${CRABBOX_DISPLAY:-:99}"
n="${DISPLAY#:}"; n="${n%%.*}"
if [ ! -S "/tmp/.X11-unix/X$n" ]; then echo "crabbox: no X display $DISPLAY" >&2; exit 90; fi
if command -v scrot >/dev/null 2>&1; then exec scrot -o -
elif command -v import >/dev/null 2>&1; then exec import -window root png:-
else echo "crabbox: neither scrot nor ImageMagick import is installed" >&2; exit 91; fi
