#!/bin/sh
# cloudbox boot, PID 1 inside the box's root: runs cloud-init's four boot
# stages the way systemd runs them on a real first boot (their exit codes
# are logged; `cloud-init status` tells the tests what happened), then
# starts the box's sshd in the foreground on the ports cloud-init
# configured and waits.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
LANG=C.UTF-8
export LANG
for stage in "init --local" "init" "modules --mode config" "modules --mode final"; do
  echo "cloudbox: cloud-init $stage"
  # shellcheck disable=SC2086
  cloud-init $stage
  echo "cloudbox: cloud-init $stage exited $?"
done
# A service restart cloud-init attempted may have left an sshd: the box
# runs exactly one, this one.
if [ -s /run/sshd.pid ]; then kill "$(cat /run/sshd.pid)" 2>/dev/null; sleep 0.2; fi
mkdir -p /run/sshd
/usr/sbin/sshd -D -e &
sshd=$!
echo "cloudbox: sshd started (pid $sshd)"
trap 'kill $sshd 2>/dev/null; exit 0' TERM INT
while :; do
  wait
  kill -0 "$sshd" 2>/dev/null || { echo "cloudbox: sshd exited"; exit 1; }
done
