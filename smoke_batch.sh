# Runs a batch of smoke check commands concurrently in one SSH session and
# streams one frame per finished check to stdout. Set before it: N (number
# of checks), M (frame marker), HEAD and TAIL (bytes of a long output kept
# from its start and its end), and for each check i in 0..N-1: c<i> (the
# command line) and t<i> (seconds after which it is killed, 0: never).
#
# Frame: "$M <i> <exit code> <stdout bytes> <stderr bytes>" and a newline,
# then exactly that many bytes of stdout and of stderr. Exit 97: the runner
# could not set up (the caller then runs the checks one by one).
d=$(mktemp -d "${TMPDIR:-/tmp}/crabbox-smoke.XXXXXX" 2>/dev/null) || exit 97
trap 'rm -rf "$d"' EXIT
trap 'exit 129' HUP
trap 'exit 143' TERM
mkfifo "$d/f" 2>/dev/null || exit 97
exec 3<>"$d/f" || exit 97
sh_=$(readlink /proc/$$/exe 2>/dev/null)
[ -x "$sh_" ] || sh_=${SHELL:-/bin/sh}

# run i timeout command: runs the command into $d/i.o and $d/i.e, kills it
# after timeout seconds, and reports "i rc" on the fifo.
run() {
  "$sh_" -c "$3" </dev/null >"$d/$1.o" 2>"$d/$1.e" 3>&- &
  p=$!
  w=
  if [ "$2" -gt 0 ]; then
    (
      trap 'kill "$s" 2>/dev/null; exit 0' TERM
      sleep "$2" &
      s=$!
      wait "$s" && kill -9 "$p" 2>/dev/null
    ) </dev/null >/dev/null 2>&1 &
    w=$!
  fi
  wait "$p"
  rc=$?
  [ -n "$w" ] && kill "$w" 2>/dev/null
  echo "$1 $rc" >&3
}

# part file size: prints the file's first size bytes (size is what wc
# counted, the file may have grown since) or, when longer than HEAD+TAIL,
# its first HEAD and last TAIL bytes.
part() {
  if [ "$2" -le $((HEAD + TAIL)) ]; then
    head -c "$2" "$1"
  else
    head -c "$HEAD" "$1"
    tail -c "$TAIL" "$1"
  fi
}

# size file: the file's size; sent: the bytes part sends for a size.
size() {
  n=$(wc -c <"$1")
  echo $((n + 0))
}
sent() {
  if [ "$1" -gt $((HEAD + TAIL)) ]; then echo $((HEAD + TAIL)); else echo "$1"; fi
}

i=0
while [ "$i" -lt "$N" ]; do
  eval "run $i \"\$t$i\" \"\$c$i\" &"
  i=$((i + 1))
done

left=$N
while [ "$left" -gt 0 ] && read -r i rc <&3; do
  so=$(size "$d/$i.o")
  se=$(size "$d/$i.e")
  printf '%s %s %s %s %s\n' "$M" "$i" "$rc" "$(sent "$so")" "$(sent "$se")"
  part "$d/$i.o" "$so"
  part "$d/$i.e" "$se"
  left=$((left - 1))
done
