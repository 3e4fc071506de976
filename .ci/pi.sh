#!/usr/bin/env bash
# An emulated Raspberry Pi in CI: edgeport's device side on a real arm64 Debian 12 (the base of
# 64-bit Raspberry Pi OS) with real aarch64 wheels, under qemu user-mode emulation. Called by
# .ci/run; the same checks run natively on an arm64 runner in .github/workflows/pi-arm64.yml.
#
#  1. registers qemu-aarch64 with binfmt_misc (apt-get: qemu-user-static binfmt-support debootstrap);
#  2. builds the arm64 bookworm root once a machine (.ci/pi-rootfs.sh: debootstrap's first
#     stage and the .debs unpacked natively, under a minute) and keeps it as a tarball in
#     $EDGEPORT_PI_CACHE (default /var/cache/edgeport-ci, outside the checkout) keyed by the
#     hash of pi-rootfs.sh (which holds the package list);
#  3. installs the checkout in the root with each Pi combination the README documents:
#     `.[edge]` (ai-edge-litert, NumPy 2) and `. tflite-runtime 'numpy<2'`: pip on this host
#     picks and unpacks the genuine aarch64 wheels from PyPI into a virtualenv the root's own
#     python3 made (no pip under qemu), the checkout as a wheel built here, and the console
#     scripts (classify, edgeport) written for the root's python; each combination's
#     virtualenv is cached as a tarball keyed by its requirements, so a later run only
#     replaces the checkout in it;
#  4. runs classify (top-k text and --json), bench and eval (.ci/pi_checks.py) on the Coral
#     fixtures, on the bundled photos and on 12 MP JPEGs made from them (the draft-decode
#     path), and compares with the same combination and commands run on this x86-64 host: the
#     same top-k in the same order, every score within one quantization step, the same eval hits.
#
# Measured (wall time) on a 2-core x86-64 shared with seven other engineers' jobs: a fresh
# run, empty cache, 6 min 10 s at load average 5-10 (the root 1 min; each combination's
# wheels fetched, unpacked and cached 0.5-2 min while the x86-64 references install
# alongside; the checks under qemu 1-1.5 min each), 9 min 3 s and 9 min 14 s at load 8-18
# (before the x86-64 references were cached); a cached run 3 min 7 s at load 5-8 (6 min 35 s
# at load 11-18 before the x86-64 references' virtualenvs were cached).
# (Before: 33 min fresh, with debootstrap's second stage and pip under qemu.)
# The last line is `pi: N passed, M failed`. Exit 1 when a check failed. When emulation cannot be
# set up here (not root, no apt-get, no binfmt_misc, no network for debootstrap or pip), it
# prints `pi: skipped: REASON` and exits 0, so CI elsewhere is not failed by the machine.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
START=$SECONDS
CACHE="${EDGEPORT_PI_CACHE:-/var/cache/edgeport-ci}"
HOST_PYTHON="${PYTHON:-python3}"

skip() { echo "pi: skipped: $*"; exit 0; }
say() { echo "pi: $* ($(( SECONDS - START ))s)"; }

# --- 1. qemu-aarch64 registered with binfmt_misc ---
case "$(uname -m)" in
  x86_64) ;;
  aarch64) skip "this machine is arm64: run .ci/pi_checks.py natively (the arm64 workflow does)" ;;
  *) skip "emulation is set up for x86-64 hosts only, not $(uname -m)" ;;
esac
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot and mounts)"
need=()
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v update-binfmts >/dev/null 2>&1 || need+=(binfmt-support)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || skip "${need[*]} missing and no apt-get to install them"
  say "installing ${need[*]} with apt-get"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      qemu-user-static binfmt-support debootstrap; } >/tmp/edgeport-pi-apt.log 2>&1 ||
    skip "apt-get failed: $(tail -n 1 /tmp/edgeport-pi-apt.log)"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
    skip "binfmt_misc is not mounted and cannot be (a container without the privilege?)"
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null ||
  skip "qemu-aarch64 is not registered with binfmt_misc"
# The F flag (qemu loaded when registered) lets binaries inside a chroot find qemu.
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
  skip "qemu-aarch64 is registered without the F flag: chroots cannot run it"

# --- 2. the arm64 root, once a machine ---
mkdir -p "$CACHE/pip-host" || skip "cannot create the cache $CACHE"
key="$(sha256sum .ci/pi-rootfs.sh | cut -c1-16)"
tarball="$CACHE/pi-root-bookworm-arm64-$key.tar.gz"
if [ -f "$tarball" ]; then
  say "arm64 root cached ($(basename "$tarball"))"
else
  say "building the arm64 bookworm root with debootstrap (once a machine, about a minute)"
  bash .ci/pi-rootfs.sh "$tarball" >"$CACHE/pi-rootfs.log" 2>&1 ||
    skip "debootstrap failed (no network to deb.debian.org?): $(tail -n 1 "$CACHE/pi-rootfs.log")"
  say "arm64 root built"
fi

WORK="$(realpath "$(mktemp -d /tmp/edgeport-pi.XXXXXX)")"
ROOT="$WORK/root"
MOUNTS=()
declare -A HOST_PID COMBO_ARGS
cleanup() {
  local pid
  for pid in "${HOST_PID[@]}"; do kill "$pid" 2>/dev/null; done  # the x86-64 references
  wait 2>/dev/null
  # Always unmount, innermost first, and delete the root only when nothing is mounted in it:
  # `rm -rf` through a bind mount of /dev would delete the host's device nodes.
  local i
  for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do
    umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" 2>/dev/null ||
      echo "pi: warning: could not unmount ${MOUNTS[$i]}"
  done
  if grep -q " $ROOT[/ ]" /proc/mounts 2>/dev/null; then
    echo "pi: warning: something is still mounted under $ROOT; left in place"
  else
    rm -rf --one-file-system "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mnt() {  # mount ... TARGET, TARGET inside the root: never through a symlink out of it
  local target="${@: -1}" real
  real="$(realpath -e "$target" 2>/dev/null)"
  if [ -L "$target" ] || [ "$real" != "$target" ] || [ "${real#"$ROOT"/}" = "$real" ]; then
    echo "pi: refusing to mount on $target (a symlink, or outside the root: $real)"; exit 1
  fi
  mount "$@" && MOUNTS+=("$target")
}

mkdir -p "$ROOT" && tar -C "$ROOT" -xzf "$tarball" || { echo "pi: cannot unpack $tarball"; exit 1; }
say "root unpacked"

# The checkout (tracked and new files, as in the working tree), the fixtures, 12 MP photos.
mkdir -p "$ROOT/src" "$ROOT/fixtures" "$ROOT/big"
if git rev-parse --git-dir >/dev/null 2>&1; then
  git ls-files -z -co --exclude-standard |
    while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -c | tar -x -C "$ROOT/src"
else
  tar --exclude=./.venv --exclude=./.ci-venv --exclude=./models --exclude=./.git -c . | tar -x -C "$ROOT/src"
fi
FIXTURES="${EDGEPORT_CORAL_FIXTURES:-$REPO/../shared/fixtures/coral}"
[ -f "$FIXTURES/mobilenet_v1_0.25_128_quant.tflite" ] ||
  skip "no Coral fixtures at $FIXTURES (set EDGEPORT_CORAL_FIXTURES)"
cp "$FIXTURES"/mobilenet_v1_0.25_128_quant.tflite "$FIXTURES"/imagenet_labels.txt "$FIXTURES"/*.bmp "$ROOT/fixtures/"

# 12 MP camera JPEGs (draft-decode path): made once, with Pillow from a small host virtualenv.
"$HOST_PYTHON" -m venv "$WORK/pillow" && PIP_CACHE_DIR="$CACHE/pip-host" "$WORK/pillow/bin/pip" install -q pillow \
  >"$WORK/pillow-pip.log" 2>&1 || skip "cannot install Pillow on the host: $(grep -v WARNING "$WORK/pillow-pip.log" | tail -n 1)"
"$WORK/pillow/bin/python" .ci/pi_checks.py bigphotos "$ROOT/big" images/coffee.jpg images/chelsea.jpg images/rocket.jpg ||
  { echo "pi: cannot make the 12 MP photos"; exit 1; }

# --- 3. inside the arm64 root ---
mnt -t proc proc "$ROOT/proc"
# Trap 1: without /sys, ai-edge-litert creates no XNNPACK delegate (it reads the CPU topology
# there) and the scores shift: Egyptian cat 0.72656 instead of the Pi's 0.74609; top-1 stays,
# the numbers do not. A real Pi has /sys, so mount it.
mnt -t sysfs sysfs "$ROOT/sys"
mnt --bind /dev "$ROOT/dev"
# Trap 2: qemu-user shows the host's x86 /proc/cpuinfo, and ai-edge-litert's CPU feature
# detection segfaults on it in allocate_tensors (QEMU_CPU does not change it). A Pi 4's
# Cortex-A72 cpuinfo bind-mounted over it fixes that; tflite-runtime does not need it.
cat >"$WORK/cpuinfo" <<'EOF'
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

processor	: 1
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

Hardware	: BCM2835
Revision	: c03111
Model		: Raspberry Pi 4 Model B Rev 1.1
EOF
mnt --bind "$WORK/cpuinfo" "$ROOT/proc/cpuinfo"

inroot() {
  chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TF_CPP_MIN_LOG_LEVEL=2 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
inroot uname -m | grep -qx aarch64 || skip "the root does not run as aarch64 under qemu"

# The aarch64 wheels are chosen and unpacked by pip on this host, not by pip under qemu (21 min
# for both combinations on a loaded 2-core machine; a minute natively, mostly the download):
# `pip install --target` with the platform tags pip on the Pi itself accepts (manylinux_2_17 up
# to the root's glibc, aarch64, CPython of the root's version), so it resolves the same
# genuine aarch64 wheels from PyPI. It reads no pip configuration of this machine (find-links,
# constraints and local indexes are this host's, a Pi has none); PIP_INDEX_URL and PIP_CERT
# from the environment still apply (a proxy). The .pyc files it compiles are valid in the root
# when the host's Python has the root's minor version (else Python compiles them on import).
pyver="$(inroot python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
glibc="$(inroot python3 -c 'import platform; print(platform.libc_ver()[1])')"
case "$pyver/$glibc" in
  3.*/2.*) ;;
  *) echo "pi: cannot read the root's Python ($pyver) and glibc ($glibc) versions"; exit 1 ;;
esac
PLATFORM=(--python-version "$pyver" --implementation cp --abi "cp${pyver/./}" --only-binary=:all:
          --platform manylinux2014_aarch64 --platform linux_aarch64)
for (( v=17; v<=${glibc#2.}; v++ )); do PLATFORM+=(--platform "manylinux_2_${v}_aarch64"); done
aarch64_pip() {  # pip install --target SITE-PACKAGES ARGS..., for the root
  env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
    PIP_CACHE_DIR="$CACHE/pip-host" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1 \
    "$WORK/pillow/bin/pip" install -q --target "$@" "${PLATFORM[@]}"
}
# The checkout as a wheel, built once on the host (pure Python) and installed in both
# virtualenvs. (pip's build isolation fetches setuptools for it: the one network access of a
# cached run.)
cp -a "$ROOT/src" "$WORK/wheel-src" &&
  PIP_CACHE_DIR="$CACHE/pip-host" "$WORK/pillow/bin/pip" wheel -q --no-deps -w "$WORK/wheels" "$WORK/wheel-src" \
    >"$WORK/wheel.log" 2>&1 ||
  skip "cannot build the checkout's wheel (no network for setuptools?): $(grep -v WARNING "$WORK/wheel.log" | tail -n 1)"
CHECKOUT_WHL="$(ls "$WORK"/wheels/edgeport-*.whl)"

# The x86-64 reference: the same combination, the same commands, on this host. (Compare like
# with like: tflite-runtime 2.14 and ai-edge-litert 2.3 score the same photo a few
# quantization steps apart on any CPU.) Run in the background: qemu keeps one core busy.
device_requirements() {  # what the device side installs, as pyproject.toml declares it
  python3 - <<'PY'
import json, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(json.dumps([p.get("requires-python"), p["dependencies"], p["optional-dependencies"]["edge"]]))
PY
}
# Its virtualenv is cached like the root's (a tarball keyed by the device side's requirements,
# the pip arguments and this host's Python); a cached run only replaces the checkout in it.
# (The checks run `python -m`, which works wherever the virtualenv is unpacked.)
host_reference() {  # NAME PIP-ARGS
  local name="$1" args="$2" hv="$WORK/host-$1" htar
  htar="$CACHE/pi-x86-venv-$name-$(cat <(device_requirements) <(echo "$args") <("$HOST_PYTHON" -VV) |
    sha256sum | cut -c1-16).tar.gz"
  if [ -f "$htar" ] && mkdir -p "$hv" && tar -C "$hv" -xzf "$htar" &&
     PIP_CACHE_DIR="$CACHE/pip-host" "$hv/bin/python" -m pip install -q --no-index --no-deps \
       --force-reinstall "$CHECKOUT_WHL"; then
    echo "x86-64 reference: cached virtualenv, checkout replaced"
  else
    rm -rf "$hv"
    "$HOST_PYTHON" -m venv "$hv" &&
      sh -c "PIP_CACHE_DIR='$CACHE/pip-host' '$hv/bin/pip' install -q ${args//SRC/$CHECKOUT_WHL}" || return 1
    tar -C "$hv" -czf "$htar.tmp.$$" . && mv -f "$htar.tmp.$$" "$htar" || rm -f "$htar.tmp.$$"
  fi
  "$hv/bin/python" .ci/pi_checks.py collect --python "$hv/bin/python" --fixtures "$ROOT/fixtures" \
    --photos "$ROOT/src/images" --photos "$ROOT/big" --eval-photos "$ROOT/src/images/holdout" \
    --out "$WORK/x86-$name.json"
}
# The README's two Pi combinations (its Raspberry Pi section cites this script): NAME PIP-ARGS.
COMBOS=()
combo() { COMBOS+=("$1"); COMBO_ARGS[$1]="$2"; }
combo litert "'SRC[edge]'"
combo tflite-runtime "SRC tflite-runtime 'numpy<2'"
for c in "${COMBOS[@]}"; do
  host_reference "$c" "${COMBO_ARGS[$c]}" >"$WORK/host-$c.log" 2>&1 &
  HOST_PID[$c]=$!
done

passed=0; failed=0

run_combo() {  # NAME PIP-ARGS... (SRC stands for the checkout)
  local name="$1"; shift
  local venv="/venv-$name"
  local args="$*"
  local site="$ROOT$venv/lib/python$pyver/site-packages"
  # Each combination's virtualenv is cached as a tarball keyed by the root, the device side's
  # requirements in pyproject.toml (`dependencies` and the `edge` extra: a new dev or convert
  # requirement does not rebuild it), the pip arguments and the platform tags (pip's own cache
  # does not help: behind some proxies PyPI's files come uncacheable). A cached run only
  # replaces the checkout in it (pip --target --upgrade replaces its packages' folders).
  # Delete $CACHE/pi-venv-* to take newer releases.
  local vkey vtar
  vkey="$(cat .ci/pi-rootfs.sh <(device_requirements) <(echo "$args ${PLATFORM[*]}") | sha256sum | cut -c1-16)"
  vtar="$CACHE/pi-venv-$name-$vkey.tar.gz"
  eval "set -- ${args//SRC/$CHECKOUT_WHL}"  # the quotes in ARGS are the shell's, as a user types them
  if [ -f "$vtar" ] && tar -C "$ROOT" -xzf "$vtar" && rm -rf "$site"/edgeport-*.dist-info &&
     aarch64_pip "$site" --no-index --no-deps --upgrade "$CHECKOUT_WHL" >"$WORK/pip-$name.log" 2>&1; then
    say "$name: cached virtualenv, checkout replaced"
  else
    say "$name: pip install --target (aarch64 wheels from PyPI, chosen and unpacked on this host)"
    rm -rf "$ROOT$venv"
    # The virtualenv itself is made by the root's python3 (a second under qemu), without pip:
    # nothing runs pip inside the root.
    if ! { inroot python3 -m venv --without-pip "$venv" && aarch64_pip "$site" "$@"; } >"$WORK/pip-$name.log" 2>&1; then
      if grep -qiE "connection|resolve|network|timed out|Max retries" "$WORK/pip-$name.log"; then
        skip "pip cannot reach PyPI: $(grep -v WARNING "$WORK/pip-$name.log" | tail -n 1)"
      fi
      echo "FAIL $name install: $(tail -n 5 "$WORK/pip-$name.log")"
      failed=$((failed + 1)); return
    fi
    tar -C "$ROOT" -czf "$vtar.tmp.$$" "${venv#/}" && mv -f "$vtar.tmp.$$" "$vtar" || rm -f "$vtar.tmp.$$"
  fi
  # pip --target writes the console scripts for this host's python into site-packages/bin;
  # write them as pip on the Pi would, into the virtualenv's bin, for its python.
  rm -rf "$site/bin"
  "$HOST_PYTHON" .ci/pi_checks.py scripts "$ROOT" "$venv" >/dev/null ||
    { echo "FAIL $name: cannot write the console scripts"; failed=$((failed + 1)); return; }
  if inroot "$venv/bin/classify" --help >/dev/null 2>&1 && inroot "$venv/bin/edgeport" --help >/dev/null 2>&1; then
    passed=$((passed + 1)); echo "ok   $name console scripts (classify, edgeport)"
  else
    failed=$((failed + 1)); echo "FAIL $name console scripts: classify or edgeport --help failed"
  fi
  inroot "$venv/bin/python" -c 'import numpy, PIL, platform; print("pi:", platform.machine(), "numpy", numpy.__version__, "Pillow", PIL.__version__)'
  say "$name: running the checks"
  inroot python3 /src/.ci/pi_checks.py collect --python "$venv/bin/python" --fixtures /fixtures \
    --photos /src/images --photos /big --eval-photos /src/images/holdout --out "/arm64-$name.json" ||
    { echo "FAIL $name: the checks did not run"; failed=$((failed + 1)); return; }
  # The x86-64 reference (host_reference, started in the background while the root works).
  local ref_status=0
  wait "${HOST_PID[$name]}" || ref_status=$?
  unset "HOST_PID[$name]"  # waited for: its id may be reused, cleanup must not kill it
  if [ "$ref_status" != 0 ]; then
    echo "FAIL $name: the x86-64 reference: $(grep -v WARNING "$WORK/host-$name.log" | tail -n 1)"
    failed=$((failed + 1)); return
  fi
  say "$name: x86-64 reference done"
  local out
  out="$("$HOST_PYTHON" .ci/pi_checks.py compare "$WORK/x86-$name.json" "$ROOT/arm64-$name.json" --label "$name")"
  echo "$out" | grep -v '^pi\['
  passed=$((passed + $(echo "$out" | sed -n 's/^pi\[.*\]: \([0-9]*\) passed.*/\1/p')))
  failed=$((failed + $(echo "$out" | sed -n 's/^pi\[.*\]: [0-9]* passed, \([0-9]*\) failed/\1/p')))
}
for c in "${COMBOS[@]}"; do
  run_combo "$c" "${COMBO_ARGS[$c]}"
done

say "checks done: $passed passed, $failed failed"

# On request, the camera-photo benchmark inside the emulated Pi (figures labelled "emulated":
# qemu translates every instruction, so they say nothing about a real Pi's speed, only that the
# ratios hold on arm64 code paths). Photos are made on the host, where it is fast.
if [ "${EDGEPORT_PI_BENCH:-0}" = 1 ] && [ -x "$ROOT/venv-litert/bin/python" ]; then
  "$WORK/pillow/bin/python" scripts/bench_photos.py --prepare-only --out "$ROOT/benchphotos" \
    --photos "${EDGEPORT_PI_BENCH_PHOTOS:-6}" --holdout "${EDGEPORT_PI_BENCH_HOLDOUT:-20}" >/dev/null
  inroot /venv-litert/bin/python /src/scripts/bench_photos.py --label emulated --out /benchphotos \
    --model /fixtures/mobilenet_v1_0.25_128_quant.tflite \
    --photos "${EDGEPORT_PI_BENCH_PHOTOS:-6}" --holdout "${EDGEPORT_PI_BENCH_HOLDOUT:-20}" 2>&1 | grep -v '^INFO'
fi

echo "pi: $passed passed, $failed failed (emulated arm64 Debian 12, $(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s)"
[ "$failed" = 0 ]
