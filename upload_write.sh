# Writes stdin to a new temporary file beside the destination p and prints
# its path and size. Set before it: p. upload_install.sh moves it into place.
d=$(dirname -- "$p")
mkdir -p -- "$d" || exit 93
t=$(mktemp "$d/.crabbox-upload.XXXXXXXX") || exit 93
if ! cat > "$t"; then rm -f -- "$t"; exit 93; fi
printf 'tmp=%s\nsize=%s\n' "$t" "$(wc -c < "$t" | tr -d ' ')"
