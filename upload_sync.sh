# Extracts the tar archive on stdin into the directory p (created if
# missing), keeping modes, owned by the login user. Set before it: p.
command -v tar >/dev/null 2>&1 || { echo "crabbox-missing: tar" >&2; exit 91; }
mkdir -p -- "$p" || exit 93
exec tar -x -p --no-same-owner -f - -C "$p"
