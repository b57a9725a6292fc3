# Waits (up to 30 s) for the browser PID to write its DevTools port and path
# to DevToolsActivePort in its profile under DIR, and prints them. Set
# before it: PID, DIR. Runs after desktop_prelude.sh.
F="$R$DIR/profile/DevToolsActivePort"
i=0
# Two lines, the port and the path; the second has no newline.
while [ -z "$(sed -n 2p "$F" 2>/dev/null)" ]; do
  if ! kill -0 "$PID" 2>/dev/null; then
    echo "crabbox: the browser exited before it served DevTools:" >&2
    tail -n 20 "$R$DIR/browser.log" >&2 2>/dev/null
    exit 1
  fi
  i=$((i+1))
  if [ $i -gt 300 ]; then echo "crabbox: the browser wrote no DevTools port in 30 s" >&2; exit 1; fi
  sleep 0.1
done
printf 'port=%s\npath=%s\n' "$(sed -n 1p "$F")" "$(sed -n 2p "$F")"
