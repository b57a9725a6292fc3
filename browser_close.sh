# Stops the browser session led by PID and removes its directory DIR.
alive() { kill -0 -- "-$PID" 2>/dev/null || pgrep -s "$PID" >/dev/null 2>&1; }
stop() { kill "-$1" -- "-$PID" 2>/dev/null; pkill "-$1" -s "$PID" 2>/dev/null; }
stop TERM
i=0
while alive && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
if alive; then
  stop KILL
  i=0
  while alive && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
fi
if alive; then echo "crabbox: browser session $PID survived SIGKILL" >&2; exit 1; fi
P="$R$DIR"
case "$DIR" in
  /tmp/crabbox-browser.*) rm -rf -- "$P" ;;
  *) echo "crabbox: refusing to remove $DIR" >&2; exit 1 ;;
esac
if [ -e "$P" ]; then echo "crabbox: could not remove $P" >&2; exit 1; fi
echo closed
