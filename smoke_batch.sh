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
# The runner runs under /bin/sh (cheaper to fork than bash on a busy box);
# the checks under the login shell the session started with, $1.
sh_=${1:-}
[ -x "$sh_" ] || sh_=${SHELL:-/bin/sh}

to=
command -v timeout >/dev/null 2>&1 && to=1

# run i timeout command: runs the command into $d/i.o and $d/i.e (killed
# after timeout seconds where timeout(1) exists; without it a hung command
# is left to the session's end, as with a session per check), writes its
# frame to $d/i.f and reports i on the fifo. The frame is built here, in
# parallel, so that the loop below sends each with one cat: on a busy box
# every fork counts.
run() {
  if [ -n "$to" ] && [ "$2" -gt 0 ]; then
    timeout -s KILL "$2" "$sh_" -c "$3" </dev/null >"$d/$1.o" 2>"$d/$1.e" 3>&-
  else
    "$sh_" -c "$3" </dev/null >"$d/$1.o" 2>"$d/$1.e" 3>&-
  fi
  rc=$?
  wc -c "$d/$1.o" "$d/$1.e" | {
    read -r so _
    read -r se _
    frame "$1" "$rc" "$so" "$se" >"$d/$1.f"
    echo "$1" >&3
  }
}

# frame i rc so se: the frame of check i. Output within HEAD+TAIL bytes is
# sent whole (exactly the bytes counted: the file may grow meanwhile),
# longer output as its first HEAD and last TAIL bytes.
frame() {
  max=$((HEAD + TAIL))
  po=$3 pe=$4
  [ "$po" -gt "$max" ] && po=$max
  [ "$pe" -gt "$max" ] && pe=$max
  printf '%s %s %s %s %s\n' "$M" "$1" "$2" "$po" "$pe"
  if [ "$3" -le "$max" ] && [ "$4" -le "$max" ] && [ "$3" -gt 0 ] && [ "$4" -gt 0 ] &&
    [ "$(($3 + $4))" -le "$max" ]; then
    head -c "$3" "$d/$1.o"
    head -c "$4" "$d/$1.e"
    return
  fi
  for f in o e; do
    if [ "$f" = o ]; then n=$3; else n=$4; fi
    if [ "$n" -gt "$max" ]; then
      head -c "$HEAD" "$d/$1.$f"
      tail -c "$TAIL" "$d/$1.$f"
    elif [ "$n" -gt 0 ]; then
      head -c "$n" "$d/$1.$f"
    fi
  done
}

to=
command -v timeout >/dev/null 2>&1 && to=1

i=0
while [ "$i" -lt "$N" ]; do
  eval "run $i \"\$t$i\" \"\$c$i\" &"
  i=$((i + 1))
done

# Frames, in the order the commands finish.
left=$N
while [ "$left" -gt 0 ] && read -r i <&3; do
  cat "$d/$i.f"
  left=$((left - 1))
done
