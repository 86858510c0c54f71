#!/usr/bin/env bash
# Usage: scripts/sid-engines.sh fetch|fetch-trixie|start|stop|status|env|import [IMAGE...]
#
# Today's engines outside: dockerd 28.5 with containerd 2.1, from Debian sid's .debs, unpacked
# (never installed into the host) and run privately beside the bookworm test dockerd:
#   fetch    apt-get download docker.io docker-cli containerd from sid with a private apt
#            configuration, dpkg-deb -x into $NESTRUN_IMAGE_CACHE/../sid/root (kept)
#   fetch-trixie  the same for trixie's containerd (1.7) alone, into
#            $NESTRUN_IMAGE_CACHE/../trixie/root, for scripts/cri-containerd.sh (nothing started)
#   start    containerd 2.1 (config v3, no CRI; root $NESTRUN_TEST_DIR/sid-containerd, socket
#            $NESTRUN_TEST_RUNDIR/sid/containerd.sock, its own runc shim first in PATH) and
#            dockerd 28.5 (data root $NESTRUN_TEST_DIR/docker28, socket
#            $NESTRUN_TEST_RUNDIR/docker28.sock, bridge nestrun28 10.214.0.1/24, runtime
#            `nested` = $NESTRUN_BIN, the host's runc as default runtime)
#   stop     stops both, removes the bridge; the data root (images) stays
#   env      prints `export NESTRUN_DOCKER28_HOST=... NESTRUN_DOCKER28_CLI=... NESTRUN_SID_BIN=...
#            NESTRUN_TRIXIE_BIN=...` (sid's and trixie's containerd, shim and ctr, for
#            scripts/cri-containerd.sh; trixie's once fetch-trixie ran)
#   import   copies images from the bookworm test dockerd (default: nestrun-test/busybox
#            and nestrun-test/dind)
# sid's dockerd and containerd need glibc <= 2.34 and run on bookworm; sid's runc does not.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

SID="$(dirname "$NESTRUN_IMAGE_CACHE")/sid"
SYSROOT="$SID/root"
TRIXIE="$(dirname "$NESTRUN_IMAGE_CACHE")/trixie"
RUN="$NESTRUN_TEST_RUNDIR/sid"
CSOCK="$RUN/containerd.sock"
DSOCK="$NESTRUN_TEST_RUNDIR/docker28.sock"
DATA="$NESTRUN_TEST_DIR/docker28"
CROOT="$NESTRUN_TEST_DIR/sid-containerd"
CLOG="$NESTRUN_TEST_LOGDIR/nestrun-test-sid-containerd.log"
DLOG="$NESTRUN_TEST_LOGDIR/nestrun-test-dockerd28.log"
BRIDGE=nestrun28
CIDR=10.214.0.1/24
CLI="$SYSROOT/usr/bin/docker"
PKGS=(docker.io docker-cli containerd)

dk() { "$CLI" -H "unix://$DSOCK" "$@"; }

# unpack SUITE PKG...: apt-get download the packages of Debian SUITE with a private apt
# configuration and dpkg-deb -x them into $NESTRUN_IMAGE_CACHE/../SUITE/root
unpack() {
  local suite=$1 dir d
  shift
  dir="$(dirname "$NESTRUN_IMAGE_CACHE")/$suite"
  log "fetching $* from Debian $suite (unpacked into $dir/root, not installed)"
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/debs" "$dir/root"
  echo "deb [trusted=yes] http://deb.debian.org/debian $suite main" >"$dir/sources.list"
  local apt=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o APT::Architecture=amd64
    -o APT::Sandbox::User=root)
  apt-get "${apt[@]}" update -qq
  (cd "$dir/debs" && rm -f ./*.deb && apt-get "${apt[@]}" download "$@" >/dev/null)
  for d in "$dir"/debs/*.deb; do dpkg-deb -x "$d" "$dir/root"; done
}

fetch() {
  if [[ -x "$SYSROOT/usr/sbin/dockerd" && -x "$SYSROOT/usr/bin/containerd" && -x "$CLI" ]]; then
    return 0
  fi
  unpack sid "${PKGS[@]}"
  "$SYSROOT/usr/sbin/dockerd" --version >&2
}

fetch_trixie() {
  [[ -x "$TRIXIE/root/usr/bin/containerd" ]] && return 0
  unpack trixie containerd
  "$TRIXIE/root/usr/bin/containerd" --version >&2
}

start_containerd() {
  if pid_alive "$RUN/containerd.pid" >/dev/null; then return 0; fi
  mkdir -p "$RUN" "$CROOT"
  cat >"$RUN/containerd.toml" <<EOF
version = 3
root = "$CROOT"
state = "$RUN/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim"]
[grpc]
  address = "$CSOCK"
[ttrpc]
  address = "$CSOCK.ttrpc"
EOF
  echo "=== $(date -Is) start" >>"$CLOG"
  PATH="$SYSROOT/usr/bin:$PATH" setsid "$SYSROOT/usr/bin/containerd" --config "$RUN/containerd.toml" </dev/null >>"$CLOG" 2>&1 &
  echo $! >"$RUN/containerd.pid"
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -S "$CSOCK" ]] && "$SYSROOT/usr/bin/ctr" --address "$CSOCK" version >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  tail -n 20 "$CLOG" >&2
  die "containerd 2.1 did not answer"
}

start() {
  fetch
  start_containerd
  if pid_alive "$RUN/dockerd.pid" >/dev/null && dk info >/dev/null 2>&1; then return 0; fi
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip -4 addr show dev "$BRIDGE" | grep -q "inet ${CIDR%/*}/" || ip addr add "$CIDR" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  mkdir -p "$DATA" "$RUN/exec"
  cat >"$RUN/daemon.json" <<EOF
{ "runtimes": { "nested": { "path": "$NESTRUN_BIN" } }, "userland-proxy": false }
EOF
  echo "=== $(date -Is) start" >>"$DLOG"
  PATH="$SYSROOT/usr/bin:$SYSROOT/usr/sbin:$PATH" setsid "$SYSROOT/usr/sbin/dockerd" \
    --config-file "$RUN/daemon.json" --data-root "$DATA" --exec-root "$RUN/exec" \
    --pidfile "$RUN/dockerd.pid" -H "unix://$DSOCK" --containerd "$CSOCK" \
    --bridge "$BRIDGE" --storage-driver overlay2 </dev/null >>"$DLOG" 2>&1 &
  local i
  for ((i = 0; i < 300; i++)); do
    dk info >/dev/null 2>&1 && { log "dockerd $(dk version -f '{{.Server.Version}}') ready: unix://$DSOCK"; return 0; }
    sleep 0.2
  done
  tail -n 30 "$DLOG" >&2
  die "dockerd 28 did not answer"
}

stop() {
  local pid
  if pid=$(pid_alive "$RUN/dockerd.pid"); then
    dk ps -aq 2>/dev/null | xargs -r "$CLI" -H "unix://$DSOCK" rm -f >/dev/null 2>&1 || true
    kill "$pid" 2>/dev/null || true
    wait_pid_exit "$pid" 20 || kill -9 "$pid" 2>/dev/null || true
  fi
  if pid=$(pid_alive "$RUN/containerd.pid"); then
    kill "$pid" 2>/dev/null || true
    wait_pid_exit "$pid" 20 || kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/dockerd.pid" "$RUN/containerd.pid" "$DSOCK"
  ip link del "$BRIDGE" 2>/dev/null || true
}

import() {
  local img
  [[ $# -gt 0 ]] || set -- nestrun-test/busybox:latest nestrun-test/dind:latest
  for img in "$@"; do
    if ! dk image inspect "$img" >/dev/null 2>&1; then
      "$DOCKER_CLI" -H "$NESTRUN_DOCKER_HOST" save "$img" | dk load -q >&2
    fi
  done
}

case "${1:-}" in
  fetch) fetch ;;
  fetch-trixie) fetch_trixie ;;
  start) start ;;
  stop) stop ;;
  status) pid_alive "$RUN/dockerd.pid" >/dev/null && dk info >/dev/null 2>&1 ;;
  env) echo "export NESTRUN_DOCKER28_HOST=unix://$DSOCK NESTRUN_DOCKER28_CLI=$CLI NESTRUN_SID_BIN=$SYSROOT/usr/bin NESTRUN_TRIXIE_BIN=$TRIXIE/root/usr/bin" ;;
  import) shift; import "$@" ;;
  *) die "usage: $0 fetch|fetch-trixie|start|stop|status|env|import [IMAGE...]" ;;
esac
