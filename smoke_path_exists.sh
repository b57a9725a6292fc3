# Prints p if it is a FLAG (d: directory, f: file); fails naming WHAT.
if [ -"$FLAG" "$p" ]; then printf '%s\n' "$p"; else printf 'no such %s: %s\n' "$WHAT" "$p" >&2; exit 1; fi
