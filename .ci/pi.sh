#!/usr/bin/env bash
# An emulated Raspberry Pi in CI: edgeport's device side on a real arm64 Debian 12 (the base of
# 64-bit Raspberry Pi OS) with real aarch64 wheels, under qemu user-mode emulation. Called by
# .ci/run; the same checks run natively on an arm64 runner in .github/workflows/pi-arm64.yml.
#
#  1. registers qemu-aarch64 with binfmt_misc (apt-get: qemu-user-static binfmt-support debootstrap);
#  2. builds the arm64 bookworm root once a machine (.ci/pi-rootfs.sh: ~6.5 min on a quiet
#     machine, 12 min on a loaded 2-core one) and keeps it as
#     a tarball in $EDGEPORT_PI_CACHE (default /var/cache/edgeport-ci, outside the checkout)
#     keyed by the hash of pi-rootfs.sh (which holds the package list); each combination's
#     aarch64 virtualenv is cached there too, so a later run takes a few minutes;
#  3. installs the checkout in the root with each Pi combination the README documents:
#     `.[edge]` (ai-edge-litert, NumPy 2) and `. tflite-runtime 'numpy<2'`;
#  4. runs classify (top-k text and --json), bench and eval (.ci/pi_checks.py) on the Coral
#     fixtures, on the bundled photos and on 12 MP JPEGs made from them (the draft-decode
#     path), and compares with the same combination and commands run on this x86-64 host: the
#     same top-k in the same order, every score within one quantization step, the same eval hits.
#
# Measured on a 2-core x86-64 shared with seven other jobs: 12 min for the root, 21 min for a
# run that installs both combinations from PyPI, 2 min 50 s for a cached run.
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
  say "building the arm64 bookworm root with debootstrap (once a machine, 7-12 min)"
  bash .ci/pi-rootfs.sh "$tarball" >"$CACHE/pi-rootfs.log" 2>&1 ||
    skip "debootstrap failed (no network to deb.debian.org?): $(tail -n 1 "$CACHE/pi-rootfs.log")"
  say "arm64 root built"
fi

WORK="$(mktemp -d /tmp/edgeport-pi.XXXXXX)"
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
mnt() { mount "$@" && MOUNTS+=("${@: -1}"); }

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
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# pip inside the root trusts what the host's pip trusts (a proxy's CA on some CI machines).
cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$ROOT/etc/ssl/certs/edgeport-host-ca.crt" 2>/dev/null ||
  cp "$ROOT/etc/ssl/certs/ca-certificates.crt" "$ROOT/etc/ssl/certs/edgeport-host-ca.crt"

inroot() {
  local extra=()
  case "${PIP_INDEX_URL:-}" in http*) extra+=("PIP_INDEX_URL=$PIP_INDEX_URL") ;; esac
  chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TF_CPP_MIN_LOG_LEVEL=2 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/etc/ssl/certs/edgeport-host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180 PIP_NO_WARN_SCRIPT_LOCATION=1 "${extra[@]}" "$@"
}
inroot uname -m | grep -qx aarch64 || skip "the root does not run as aarch64 under qemu"

# The x86-64 reference: the same combination, the same commands, on this host. (Compare like
# with like: tflite-runtime 2.14 and ai-edge-litert 2.3 score the same photo a few
# quantization steps apart on any CPU.) Run in the background: qemu keeps one core busy.
host_reference() {  # NAME PIP-ARGS
  local name="$1" args="$2" hv="$WORK/host-$1"
  "$HOST_PYTHON" -m venv "$hv" &&
    sh -c "PIP_CACHE_DIR='$CACHE/pip-host' '$hv/bin/pip' install -q ${args//SRC/$ROOT/src}" &&
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
device_requirements() {  # what the device side installs, as pyproject.toml declares it
  python3 - <<'PY'
import json, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(json.dumps([p.get("requires-python"), p["dependencies"], p["optional-dependencies"]["edge"]]))
PY
}

run_combo() {  # NAME PIP-ARGS... (SRC stands for the checkout)
  local name="$1"; shift
  local venv="/venv-$name"
  local args="$*"
  set -- ${args//SRC//src}
  # Each combination's virtualenv is cached as a tarball keyed by the root, the device side's
  # requirements in pyproject.toml (`dependencies` and the `edge` extra: a new dev or convert
  # requirement does not rebuild it) and the pip arguments (pip's own cache does not help:
  # behind some proxies PyPI's files come uncacheable). A cached run only reinstalls the
  # checkout into it, without the network. Delete $CACHE/pi-venv-* to take newer releases.
  local vkey vtar
  vkey="$(cat .ci/pi-rootfs.sh <(device_requirements) <(echo "$*") | sha256sum | cut -c1-16)"
  vtar="$CACHE/pi-venv-$name-$vkey.tar.gz"
  if [ -f "$vtar" ] && tar -C "$ROOT" -xzf "$vtar" &&
     inroot "$venv/bin/pip" install -q --no-index --no-deps --no-build-isolation --force-reinstall /src \
       >"$WORK/pip-$name.log" 2>&1; then
    say "$name: cached virtualenv, checkout reinstalled"
  else
    say "$name: pip install $* (aarch64 wheels, from PyPI)"
    rm -rf "$ROOT$venv"
    if ! inroot sh -c "python3 -m venv $venv && $venv/bin/pip install -q 'setuptools>=68' $*" >"$WORK/pip-$name.log" 2>&1; then
      if grep -qiE "connection|resolve|network|timed out|Max retries" "$WORK/pip-$name.log"; then
        skip "pip cannot reach PyPI from the arm64 root: $(grep -v WARNING "$WORK/pip-$name.log" | tail -n 1)"
      fi
      echo "FAIL $name install: $(tail -n 5 "$WORK/pip-$name.log")"
      failed=$((failed + 1)); return
    fi
    tar -C "$ROOT" -czf "$vtar.tmp.$$" "${venv#/}" && mv -f "$vtar.tmp.$$" "$vtar" || rm -f "$vtar.tmp.$$"
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
