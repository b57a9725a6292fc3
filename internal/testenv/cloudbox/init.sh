#!/bin/sh
# cloudbox init, run by the host's /bin/sh as PID 1 of a new mount, PID,
# network, UTS and IPC namespace: mounts the box's overlay root (LOWER
# layers below the box's UPPER directory) with /proc, /sys, /dev, /run and
# /tmp of its own, brings the namespace's loopback up, and becomes the box's
# boot script (or COMMAND) inside the new root.
# Usage: init.sh LOWER DIR [COMMAND ARG...]
set -eu
lower=$1
dir=$2
shift 2
m=$dir/merged
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$dir/upper,workdir=$dir/work" "$m"
mount -t proc proc "$m/proc"
mount -t sysfs -o ro sysfs "$m/sys"
mount -t tmpfs -o mode=755 tmpfs "$m/run"
mount -t tmpfs -o mode=1777 tmpfs "$m/tmp"
mount -t tmpfs -o mode=755 tmpfs "$m/dev"
for d in null zero full random urandom tty; do
  touch "$m/dev/$d"
  mount --bind "/dev/$d" "$m/dev/$d"
done
mkdir -p "$m/dev/pts" "$m/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$m/dev/pts"
ln -s pts/ptmx "$m/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$m/dev/shm"
ip link set lo up
if [ "$#" -eq 0 ]; then set -- /bin/sh /usr/lib/crabbox-testimage/boot; fi
exec chroot "$m" "$@"
