#!/usr/bin/env bash
# Usage: scripts/install-deps.sh [--dev]
#
# Installs (idempotently) every Debian package that nestrun's build, test
# scripts and test images need. It is a fast no-op when everything is already
# installed (checked with dpkg-query); `apt-get update` runs at most once per
# invocation and only when something is missing.
#   --dev   also install developer-only tools (shellcheck).
# Environment: NESTRUN_EXTRA_PKGS="pkg1 pkg2" adds packages to the list.
set -euo pipefail

PKGS=(
  # container stack used by the tests and baked into the dind image
  docker.io containerd runc crun podman tini
  # test image building blocks
  busybox-static iptables iproute2 util-linux mount ca-certificates
  # nestrun-test/systemd image (Debian bookworm minbase from the apt mirror)
  debootstrap
  # user namespaces / fuse
  uidmap fuse3
  # build deps for the Rust crate (libseccomp via pkg-config)
  libseccomp-dev pkg-config build-essential
  # misc tooling used by the scripts
  jq strace hyperfine e2fsprogs procps file
)
# 32-bit probes (integration/supervisor.rs builds one with -m32)
if [[ $(dpkg --print-architecture) == amd64 ]]; then
  PKGS+=(gcc-multilib)
fi
if [[ "${1:-}" == "--dev" ]]; then
  PKGS+=(shellcheck)
fi
if [[ -n "${NESTRUN_EXTRA_PKGS:-}" ]]; then
  # shellcheck disable=SC2206 # intentional word splitting
  PKGS+=(${NESTRUN_EXTRA_PKGS})
fi

missing=()
for p in "${PKGS[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  if [[ "$status" != "installed" ]]; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PKGS[@]} packages present" >&2
  exit 0
fi

echo "install-deps: installing: ${missing[*]}" >&2
SUDO=()
if [[ $(id -u) -ne 0 ]]; then SUDO=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
# Try without an update first only if package lists exist; otherwise update.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
elif ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Installing docker.io on a systemd-less machine may leave no daemon running;
# that is fine: scripts/dockerd.sh starts a private one.
echo "install-deps: done" >&2
