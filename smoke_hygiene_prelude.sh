# Shared by the do-not-bake checks: homes, report, s (sudo when allowed), found.
R="${CRABBOX_FS_ROOT:-}"
WORK="$R/work/crabbox"
SUDO=
if [ -z "$R" ] && [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then SUDO=1; fi
s() { if [ -n "$SUDO" ]; then sudo -n "$@"; else "$@"; fi; }
found=0
report() {
  if [ -n "$2" ]; then found=1; printf '%s\n' "$2" | head -n 50 | sed "s|^|$1: |"; fi
}
homes() {
  for d in "${HOME:-}" "$R/root" "$R"/home/*; do
    if [ -n "$d" ] && [ -d "$d" ]; then
      if [ -r "$d" ] && [ -x "$d" ] || [ -n "$SUDO" ]; then printf '%s\n' "$d"; else echo "warning: cannot read $d (not root, no passwordless sudo)" >&2; fi
    fi
  done | sort -u
}
IFS='
'
