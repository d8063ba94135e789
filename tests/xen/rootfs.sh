#!/bin/bash
# Builds the lab's dom0 root (Debian bookworm + Xen 4.17 + Debian kernel) into $1, from Debian
# packages only. Slow (about 2 minutes); `cargo xtask xen-test` keeps the result and reuses it.
# `rootfs.sh --extra DIR` installs EXTRA into an existing root (once per EXTRA list: DIR.extra
# records it), so adding a package here does not redo the debootstrap.
set -euo pipefail
EXTRA_MODE=0
[ "${1:-}" = --extra ] && { EXTRA_MODE=1; shift; }
ROOT=${1:?usage: rootfs.sh [--extra] DIR}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
PKGS=(xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common linux-image-amd64 initramfs-tools
      systemd-sysv udev kmod iproute2 procps)

# nftables: the Linux PV domU that forwards like a Linux sys-firewall (bench) carries its nft.
# openssh-client, openssh-server: flow 3's AppVM initramfs carries ssh, ssh-add, ssh-keygen, sshd.
EXTRA=(nftables openssh-client openssh-server)
umount_all() { for m in dev/pts dev sys proc; do mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"; done; true; }
trap umount_all EXIT
umount_all
ch() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }
mounts() {
  mount -t proc proc "$ROOT/proc"; mount -t sysfs sys "$ROOT/sys"
  mount --bind /dev "$ROOT/dev"; mount --bind /dev/pts "$ROOT/dev/pts"
}
if [ $EXTRA_MODE = 1 ]; then
  [ "$(cat "$ROOT.extra" 2>/dev/null)" = "${EXTRA[*]}" ] && exit 0
  mounts
  printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod +x "$ROOT/usr/sbin/policy-rc.d"
  ch apt-get update -qq
  ch apt-get install -y -qq --no-install-recommends "${EXTRA[@]}"
  ch apt-get clean
  rm -f "$ROOT/usr/sbin/policy-rc.d"
  umount_all
  echo "${EXTRA[*]}" > "$ROOT.extra"
  exit 0
fi
rm -rf "$ROOT" "$ROOT.done" "$ROOT.extra"
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR"
mounts
# Packages must not start daemons inside the build chroot.
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod +x "$ROOT/usr/sbin/policy-rc.d"
echo "deb $MIRROR bookworm main" > "$ROOT/etc/apt/sources.list"
echo "deb $MIRROR bookworm-updates main" >> "$ROOT/etc/apt/sources.list"
# Security updates carry the Xen and kernel fixes the lab was shown to work with (4.17.7, 6.1.0-5x).
echo "deb $SECURITY bookworm-security main" >> "$ROOT/etc/apt/sources.list"
ch apt-get update -qq
ch apt-get install -y -qq --no-install-recommends "${PKGS[@]}" "${EXTRA[@]}"
ch apt-get clean
rm -f "$ROOT/usr/sbin/policy-rc.d"
echo xen-dom0 > "$ROOT/etc/hostname"
echo "LABEL=xenroot / ext4 defaults 0 1" > "$ROOT/etc/fstab"
ch passwd -d root >/dev/null
# xenconsoled writes each guest's console to /var/log/xen/console/guest-<name>.log.
echo 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"' >> "$ROOT/etc/default/xen"
mkdir -p "$ROOT/var/log/xen/console"
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
         systemd-timesyncd.service xendomains.service; do
  ln -sf /dev/null "$ROOT/etc/systemd/system/$u"
done
umount_all
echo "${EXTRA[*]}" > "$ROOT.extra"
touch "$ROOT.done"
