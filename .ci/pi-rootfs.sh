#!/usr/bin/env bash
# Builds the arm64 Debian 12 (bookworm) root for the emulated Raspberry Pi checks
# (.ci/pi.sh) and stores it as a tarball: usage `pi-rootfs.sh TARBALL`.
# 64-bit Raspberry Pi OS is Debian 12 arm64, so this root has the same Python (3.11), glibc
# and aarch64 libraries as a Pi. .ci/pi.sh keys the tarball by the hash of this file, so
# changing the package list below (or anything else here) builds a new one.
#
# Only debootstrap's first stage runs (`--foreign`: download and unpack, native, seconds).
# Its second stage would run every package's maintainer scripts through qemu-aarch64, which
# took 6.5 min on a quiet 2-core machine and 12 min on a loaded one, to configure what the
# checks never use (dpkg's database, users, alternatives). Instead every downloaded .deb is
# unpacked natively with `dpkg-deb --fsys-tarfile | tar` (tar keeps merged /usr's /bin -> usr/bin
# symlinks), plus the three things the checks do use: /etc/passwd and /etc/group (from
# base-passwd's masters), and ld.so.cache (ldconfig, the one emulated command, a second).
# The result runs python3, `python3 -m venv` and the aarch64 wheels exactly as a Pi does;
# dpkg and apt inside it know no packages (nothing here installs any: .ci/pi.sh puts the
# Python packages in with pip on the host). 45-90 s with the download, 64 MB compressed.
set -euo pipefail
out="$1"
PI_SUITE=bookworm
PI_PACKAGES=python3-venv
root="$(mktemp -d "${TMPDIR:-/tmp}/edgeport-pi-root.XXXXXX")"
trap 'rm -rf --one-file-system "$root"' EXIT
debootstrap --foreign --arch=arm64 --variant=minbase --include="$PI_PACKAGES" "$PI_SUITE" "$root"
# debootstrap/debpaths: "PACKAGE PATH-OF-ITS-DEB" for every package the second stage would install.
while read -r pkg deb; do
  dpkg-deb --fsys-tarfile "$root/$deb" | tar -C "$root" --keep-directory-symlink -xf - ||
    { echo "pi-rootfs: cannot unpack $pkg" >&2; exit 1; }
done <"$root/debootstrap/debpaths"
# In a container debootstrap makes /proc a symlink to the host's /proc (setup_proc_symlink):
# .ci/pi.sh mounts proc there and an ARM cpuinfo over /proc/cpuinfo, which through that
# symlink would land on this machine's own /proc. A plain directory, as on a Pi.
for d in proc sys dev; do
  if [ -L "$root/$d" ]; then rm -f "$root/$d" && mkdir -m 555 "$root/$d"; fi
done
for f in passwd group; do
  [ -e "$root/etc/$f" ] || cp "$root/usr/share/base-passwd/$f.master" "$root/etc/$f"
done
chroot "$root" /sbin/ldconfig
chroot "$root" /usr/bin/python3 -c 'import ensurepip, ssl, venv' ||
  { echo "pi-rootfs: python3 does not run in the unpacked root" >&2; exit 1; }
# The downloaded .debs and debootstrap's own files are not needed in the tarball.
rm -rf "$root/debootstrap" "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tmp="$out.tmp.$$"
tar -C "$root" --numeric-owner -czf "$tmp" .
mv -f "$tmp" "$out"
