# Starts a browser on the display with a fresh profile in DIR and opens URL.
# Set before it: DIR, CANDIDATES, ARGS, SIZE, URL, and the extra browser
# arguments as "$@". Runs after desktop_prelude.sh.
need_display
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
