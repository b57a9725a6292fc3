# Creates the shared pnpm cache, world-writable with the sticky bit; sudo when not root.
R="${CRABBOX_FS_ROOT:-}"
if [ -n "$R" ] || [ "$(id -u)" = 0 ]; then S=; else S="sudo -n"; fi
$S mkdir -p "$R/var/cache/crabbox/pnpm" && $S chmod 1777 "$R/var/cache/crabbox" "$R/var/cache/crabbox/pnpm" && ls -ld "$R/var/cache/crabbox/pnpm"
