#!/bin/sh
# Builds the cloudbox test image: a Debian bookworm rootfs with cloud-init,
# OpenSSH, sudo, the tools crabbox's readiness check and desktop bootstrap
# use (a "baked" image: nothing has to be downloaded at boot), and an
# offline apt repository holding the one extra package the "with packages"
# lease installs. Usage: rootfs.sh TARGET MIRROR EXTRA_PACKAGE [DEB_CACHE]
# Runs as root in a mount namespace of its own (unshare --mount), with
# network access to MIRROR; downloaded packages are kept in DEB_CACHE for
# the next build. The boxes booted from TARGET never reach the network.
set -eu
target=$1
mirror=$2
extra=$3
debs=${4:-}
pkgs="cloud-init openssh-server sudo passwd procps iproute2 apt-utils git rsync curl jq ca-certificates"
pkgs="$pkgs xvfb xdotool scrot ffmpeg x11vnc openbox chromium"
cache=""
if [ -n "$debs" ]; then
  mkdir -p "$debs/partial"
  cache="--cache-dir=$debs"
fi
# shellcheck disable=SC2086
debootstrap --variant=minbase $cache bookworm "$target" "$mirror"

# The rest with apt (debootstrap's --include does not resolve virtual
# packages). No service starts in the chroot.
printf '#!/bin/sh\nexit 101\n' >"$target/usr/sbin/policy-rc.d"
chmod 755 "$target/usr/sbin/policy-rc.d"
mount -t proc proc "$target/proc"
if [ -n "$debs" ]; then mount --bind "$debs" "$target/var/cache/apt/archives"; fi
chroot "$target" apt-get -q update
# shellcheck disable=SC2086
chroot "$target" env DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends install $pkgs

# The offline repository: EXTRA_PACKAGE (not installed) and its index.
repo=/var/local/crabbox-repo
mkdir -p "$target$repo"
chroot "$target" sh -c "cd $repo && apt-get -q download $extra && apt-ftparchive packages . >Packages"
echo "deb [trusted=yes] file:$repo ./" >"$target/etc/apt/sources.list"
if [ -n "$debs" ]; then umount "$target/var/cache/apt/archives"; fi
umount "$target/proc"
rm -f "$target/usr/sbin/policy-rc.d"
rm -rf "$target"/var/lib/apt/lists/* "$target"/var/cache/apt/*.bin "$target"/var/cache/apt/archives/*.deb

# The image's own cloud-init configuration (a cloud image carries one):
# NoCloud seed only, keep the image's sources.list.
cat >"$target/etc/cloud/cloud.cfg.d/90-crabbox-testimage.cfg" <<'CFG'
datasource_list: [NoCloud, None]
apt:
  preserve_sources_list: true
CFG

# The TTL: shutdown records what it was asked instead of powering off.
if [ -e "$target/usr/sbin/shutdown" ]; then
  chroot "$target" dpkg-divert --local --rename --add /usr/sbin/shutdown
fi
cat >"$target/usr/sbin/shutdown" <<'SH'
#!/bin/sh
# crabbox test image: records the request instead of powering off.
mkdir -p /var/lib/crabbox-testimage
printf '%s\n' "$*" >>/var/lib/crabbox-testimage/shutdown.log
SH
chmod 755 "$target/usr/sbin/shutdown"
# Host keys made by openssh-server's postinst: a booted box must have only
# the lease's (cloud-init deletes these; their presence proves it did).
ls "$target"/etc/ssh/ssh_host_*_key >/dev/null
echo "crabbox-testimage: built"
