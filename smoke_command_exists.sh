# Prints the path of the first of "$@" found on PATH; fails naming NAMES.
for n in "$@"; do
  if p=$(command -v "$n" 2>/dev/null) && [ -n "$p" ]; then printf '%s\n' "$p"; exit 0; fi
done
printf 'not found on PATH: %s\n' "$NAMES" >&2
exit 1
