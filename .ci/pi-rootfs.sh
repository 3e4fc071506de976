#!/usr/bin/env bash
# Builds the arm64 Debian 12 (bookworm) root for the emulated Raspberry Pi checks
# (.ci/pi.sh) and stores it as a tarball: usage `pi-rootfs.sh TARBALL`.
# 64-bit Raspberry Pi OS is Debian 12 arm64, so this root has the same Python (3.11), glibc
# and aarch64 wheels as a Pi. debootstrap runs its second stage through qemu-aarch64
# (binfmt must be registered first: .ci/pi.sh does it). About 6.5 min and 323 MB, once a
# machine: .ci/pi.sh keys the tarball by the hash of this file, so changing the package
# list below (or anything else here) builds a new one.
set -euo pipefail
out="$1"
PI_SUITE=bookworm
PI_PACKAGES=python3-venv,ca-certificates
root="$(mktemp -d "${TMPDIR:-/tmp}/edgeport-pi-root.XXXXXX")"
trap 'rm -rf "$root"' EXIT
debootstrap --arch=arm64 --variant=minbase --include="$PI_PACKAGES" "$PI_SUITE" "$root"
# apt's downloaded .debs are not needed in the tarball.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tmp="$out.tmp.$$"
tar -C "$root" --numeric-owner -czf "$tmp" .
mv -f "$tmp" "$out"
