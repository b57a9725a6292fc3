# Cleans a crabbox box for imaging; refuses anywhere without the bootstrap marker.
set -eu
R="${CRABBOX_FS_ROOT:-}"
if [ ! -f "$R/var/lib/crabbox/bootstrap-done" ]; then echo "crabbox: not a crabbox box (no bootstrap marker); refusing to prepare" >&2; exit 2; fi
S=""
if [ -z "$R" ] && [ "$(id -u)" != 0 ]; then S="sudo -n"; fi
if [ -z "$R" ] && command -v cloud-init >/dev/null 2>&1; then $S cloud-init clean --logs || true; fi
$S rm -f "$R"/etc/ssh/ssh_host_*_key "$R"/etc/ssh/ssh_host_*_key.pub
$S rm -f "$R"/root/.bash_history "$R"/root/.zsh_history "$R"/root/.python_history "$R"/root/.lesshst "$R"/root/.viminfo
# The next box booted from the image must run its own bootstrap before it
# counts as ready.
$S rm -f "$R/var/lib/crabbox/bootstrap-done"
for h in "$R"/home/*; do
  [ -d "$h" ] || continue
  $S rm -f "$h/.bash_history" "$h/.zsh_history" "$h/.python_history" "$h/.lesshst" "$h/.viminfo" "$h/.ssh/authorized_keys"
done
sync
