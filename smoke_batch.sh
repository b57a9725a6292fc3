# Runs a batch of smoke check commands concurrently in one SSH session and
# streams one frame per finished check to stdout. The caller sends it on
# stdin (so no check sees it, or the boundary, in a process list) with, set
# before it: N (number of checks), M (frame marker), B (the frame boundary,
# random per batch), HEAD and TAIL (bytes of a long output kept from its
# start and its end), and for each check i in 0..N-1: c<i> (the command
# line) and t<i> (seconds after which it is killed, 0: never).
#
# Frame: "$M <i> <exit code>" and a newline, then the check's stdout, the
# line "$B", its stderr and the line "$B" again; a stream longer than
# HEAD+TAIL bytes is sent as its first HEAD and last TAIL bytes. Exit 97:
# the runner could not set up (the caller then runs the checks one by one).
#
# Every process counts on a busy box, so a check costs a subshell, its
# timeout(1) and its shell, and, when it printed anything, one wc and one
# cat (head and tail for a long output).
d=$(mktemp -d "${TMPDIR:-/tmp}/crabbox-smoke.XXXXXX" 2>/dev/null) || exit 97
trap 'rm -rf "$d"' EXIT
trap 'exit 129' HUP
trap 'exit 143' TERM
mkfifo "$d/f" 2>/dev/null || exit 97
exec 3<>"$d/f" || exit 97
printf '%s\n' "$B" >"$d/b" || exit 97
# The runner runs under /bin/sh (cheaper to fork than bash on a busy box);
# the checks under the login shell the session started with, $1.
sh_=${1:-}
[ -x "$sh_" ] || sh_=${SHELL:-/bin/sh}
# Without timeout(1) a hung command is left to the session's end, as with a
# session per check.
to=
command -v timeout >/dev/null 2>&1 && to=1

max=$((HEAD + TAIL))
i=0
while [ "$i" -lt "$N" ]; do
  eval "c=\$c$i t=\$t$i"
  {
    if [ -n "$to" ] && [ "$t" -gt 0 ]; then
      timeout -s KILL "$t" "$sh_" -c "$c" </dev/null >"$d/$i.o" 2>"$d/$i.e" 3>&-
    else
      "$sh_" -c "$c" </dev/null >"$d/$i.o" 2>"$d/$i.e" 3>&-
    fi
    rc=$?
    so=0 se=0
    if [ -s "$d/$i.o" ] || [ -s "$d/$i.e" ]; then
      # Relative names: $d may hold spaces, wc's output is split on them.
      cd "$d" && set -- $(wc -c "$i.o" "$i.e") && so=$1 se=$3
    fi
    echo "$i $rc $so $se" >&3
  } &
  i=$((i + 1))
done

# Frames, in the order the commands finish.
left=$N
while [ "$left" -gt 0 ] && read -r i rc so se <&3; do
  printf '%s %s %s\n' "$M" "$i" "$rc"
  if [ "$so" -eq 0 ] && [ "$se" -eq 0 ]; then
    printf '%s\n%s\n' "$B" "$B"
  elif [ "$so" -le "$max" ] && [ "$se" -le "$max" ]; then
    cat "$d/$i.o" "$d/b" "$d/$i.e" "$d/b"
  else
    for f in o e; do
      if [ "$f" = o ]; then n=$so; else n=$se; fi
      if [ "$n" -gt "$max" ]; then
        head -c "$HEAD" "$d/$i.$f"
        tail -c "$TAIL" "$d/$i.$f"
      elif [ "$n" -gt 0 ]; then
        head -c "$n" "$d/$i.$f"
      fi
      printf '%s\n' "$B"
    done
  fi
  left=$((left - 1))
done
