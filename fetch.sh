# Streams the file p to stdout. Set before it: p. Runs after desktop_prelude.sh.
if [ -d "$p" ]; then echo "crabbox: $p is a directory" >&2; exit 92; fi
if [ ! -e "$p" ]; then echo "crabbox: no such file $p" >&2; exit 92; fi
if [ ! -r "$p" ]; then echo "crabbox: cannot read $p" >&2; exit 93; fi
exec cat -- "$p"
