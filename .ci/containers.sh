# Container engine for the tests marked `container`. Sourced by .ci/run.
#
# - Installs podman + runc + debootstrap with apt-get when podman is missing and we are root.
#   If that cannot be done (no apt, not root, no network), nothing fails here: the
#   container tests skip with a reason.
# - Builds the local base image once (no registry is reachable, so the base comes from
#   debootstrap); an existing image is reused, so debootstrap (~2 min) runs once a machine.
# - On these machines crun fails ("cgroups in hybrid mode not supported") and runc works, and
#   containers need lower rlimits than the host's ("setrlimit RLIMIT_NOFILE: Operation not
#   permitted" otherwise): the tests pass both (tests/converters/edgetpu/test_edgetpu_container.py).
#
# The base holds python3 (Debian's package), which the tests' STAND-IN compiler needs.
# Nothing here fetches anything but Debian's packages.

EDGEPORT_TEST_BASE_IMAGE="${EDGEPORT_TEST_BASE_IMAGE:-localhost/edgeport-ci-base:bookworm}"
export EDGEPORT_TEST_BASE_IMAGE
# The container tests pass `--container-runtime runc` (when runc is installed) and the
# ulimits on the command line themselves; nothing else is exported, so the other tests see
# edgeport's defaults.

_edgeport_containers() {
  local need=()
  command -v podman >/dev/null 2>&1 || need+=(podman)
  command -v runc >/dev/null 2>&1 || need+=(runc)
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "containers: ${need[*]} missing and cannot be installed here (not root or no apt-get); container tests will skip"
      return 0
    fi
    echo "containers: installing ${need[*]} with apt-get"
    if ! { apt-get update -q >/tmp/edgeport-apt.log 2>&1 &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
             podman runc debootstrap >>/tmp/edgeport-apt.log 2>&1; }; then
      echo "containers: apt-get failed ($(tail -n 1 /tmp/edgeport-apt.log)); container tests will skip"
      return 0
    fi
  fi
  if podman image exists "$EDGEPORT_TEST_BASE_IMAGE" 2>/dev/null; then
    echo "containers: base image $EDGEPORT_TEST_BASE_IMAGE present (cached)"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "containers: base image missing and debootstrap needs root; container tests will skip"
    return 0
  fi
  local root
  root="$(mktemp -d /tmp/edgeport-base.XXXXXX)"
  echo "containers: building $EDGEPORT_TEST_BASE_IMAGE with debootstrap (once, ~2 min)"
  if debootstrap --variant=minbase --include=python3 bookworm "$root" >/tmp/edgeport-debootstrap.log 2>&1 &&
     tar -C "$root" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$EDGEPORT_TEST_BASE_IMAGE" >/dev/null; then
    echo "containers: base image built"
  else
    echo "containers: could not build the base image ($(tail -n 1 /tmp/edgeport-debootstrap.log)); container tests will skip"
  fi
  rm -rf "$root"
}
_edgeport_containers || true
