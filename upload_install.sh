# Gives the uploaded temporary file t its mode and moves it to p, or (with
# drop=1) removes it. Set before it: p, t, mode, drop.
if [ "$drop" = 1 ]; then rm -f -- "$t"; exit 0; fi
if [ -d "$p" ]; then rm -f -- "$t"; echo "crabbox: $p is a directory" >&2; exit 1; fi
chmod "$mode" "$t" && mv -f -- "$t" "$p" || { rm -f -- "$t"; exit 93; }
