# Moves the box's TTL shutdown to MINUTES from now. Set before it: MINUTES.
# Emulated boxes (CRABBOX_FS_ROOT set) run on a test host: never touch its
# power state.
if [ -n "${CRABBOX_FS_ROOT:-}" ]; then exit 0; fi
sudo -n shutdown -c 2>/dev/null || true
sudo -n shutdown -P +"$MINUTES"
