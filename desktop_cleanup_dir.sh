# Stops every process naming a path below "$R$DIR" and removes DIR.
# Set before it: DIR, SETTLE (1: check twice). Runs after desktop_prelude.sh.
case "$DIR" in
  /tmp/crabbox-browser.*|/tmp/crabbox-rec.*) ;;
  *) echo "crabbox: refusing to clean up $DIR" >&2; exit 1 ;;
esac
case "$DIR" in *..*|*/*/*/*) echo "crabbox: refusing to clean up $DIR" >&2; exit 1 ;; esac
P="$R$DIR"
me=$$
pat=$(printf '%s/' "$P" | sed 's/[][\\.*^$+?(){}|]/\\&/g')
procs() { pgrep -f -- "$pat" 2>/dev/null | grep -vx -e "$me" || true; }
stop() {
  for p in $(procs); do
    sid=$(ps -o sid= -p "$p" 2>/dev/null | tr -d ' ')
    if [ "$sid" = "$p" ]; then kill "-$1" -- "-$p" 2>/dev/null; pkill "-$1" -s "$p" 2>/dev/null; fi
    kill "-$1" "$p" 2>/dev/null
  done
}
round=0
rounds=1
[ "$SETTLE" = 1 ] && rounds=2
while [ "$round" -lt "$rounds" ]; do
  round=$((round+1))
  stop TERM
  i=0
  while [ -n "$(procs)" ] && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i+1)); done
  stop KILL
  i=0
  while [ -n "$(procs)" ] && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i+1)); done
  rm -rf -- "$P"
  [ "$round" -lt "$rounds" ] && sleep 0.3
done
if [ -n "$(procs)" ]; then echo "crabbox: processes using $P survived SIGKILL" >&2; exit 1; fi
if [ -e "$P" ]; then echo "crabbox: could not remove $P" >&2; exit 1; fi
echo cleaned
