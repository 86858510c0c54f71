#!/usr/bin/env bash
# Usage: scripts/containerd.sh start|stop|restart|status|env|import [TAR|IMAGE...]
#
# A private containerd for nestrun's integration tests (use with
# `ctr --address $CONTAINERD_ADDRESS -n nestrun ...`), separate from any
# system containerd and from the one dockerd.sh's dockerd runs:
#   root     $NESTRUN_TEST_DIR/containerd        (default /var/lib/nestrun-test/containerd)
#   state    $NESTRUN_TEST_RUNDIR/containerd     (default /run/nestrun-test/containerd)
#   socket   $NESTRUN_TEST_RUNDIR/containerd.sock
#   pidfile  $NESTRUN_TEST_RUNDIR/containerd.pid
#   log      $NESTRUN_TEST_LOGDIR/nestrun-test-containerd.log
#   start    no-op if running; waits up to 30s for `ctr version`
#   stop     SIGTERM (running shims/containers are left alone, as with any containerd)
#   env      prints `export CONTAINERD_ADDRESS=... CONTAINERD_NAMESPACE=nestrun`
#   import   imports `docker save` tarballs into namespace nestrun; arguments
#            that are not files are treated as image names and exported from
#            the test dockerd ($DOCKER_HOST, default scripts/dockerd.sh's).
#            Without arguments: nestrun-test/busybox:latest.
# Run a container with nestrun instead of runc:
#   ctr -a $sock -n nestrun run --rm --runc-binary "$NESTRUN_BIN" docker.io/nestrun-test/busybox:latest id1 echo hi
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

ROOT="$NESTRUN_TEST_DIR/containerd"
STATE="$NESTRUN_TEST_RUNDIR/containerd"
SOCK="$NESTRUN_CONTAINERD_SOCK"
PIDFILE="$NESTRUN_TEST_RUNDIR/containerd.pid"
CONFIG="$NESTRUN_TEST_RUNDIR/containerd.toml"
LOGFILE="$NESTRUN_TEST_LOGDIR/nestrun-test-containerd.log"
NS=nestrun

ctr_() { ctr --address "$SOCK" "$@"; }
answering() { timeout 10 ctr --address "$SOCK" version >/dev/null 2>&1; }

start() {
  local pid
  if pid=$(pid_alive "$PIDFILE") && answering; then
    log "already running (pid $pid)"
    return 0
  fi
  if [[ -z "${pid:-}" ]]; then
    rm -f "$PIDFILE" "$SOCK" "$SOCK.ttrpc"
    mkdir -p "$ROOT" "$STATE" "$NESTRUN_TEST_LOGDIR"
    cat >"$CONFIG" <<TOML
version = 2
root = "$ROOT"
state = "$STATE"
# CRI is not needed and would clash with a system containerd's CNI setup
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""
TOML
    echo "=== $(date -Is) starting containerd --config $CONFIG" >>"$LOGFILE"
    setsid /usr/bin/containerd --config "$CONFIG" </dev/null >>"$LOGFILE" 2>&1 &
    echo $! >"$PIDFILE"
    log "started containerd (pid $!)"
  fi
  local i
  for ((i = 0; i < 60; i++)); do
    if answering; then
      log "ready: CONTAINERD_ADDRESS=$SOCK"
      return 0
    fi
    pid_alive "$PIDFILE" >/dev/null || break
    sleep 0.5
  done
  log "containerd did not become ready; last log lines:"
  tail -n 30 "$LOGFILE" >&2 || true
  return 1
}

stop() {
  local pid
  if pid=$(pid_alive "$PIDFILE"); then
    log "stopping containerd (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_pid_exit "$pid" 20; then
      kill -KILL "$pid" 2>/dev/null || true
      wait_pid_exit "$pid" 5 || true
    fi
  else
    log "not running"
  fi
  rm -f "$PIDFILE" "$SOCK" "$SOCK.ttrpc"
}

status() {
  local pid
  if pid=$(pid_alive "$PIDFILE") && answering; then
    echo "running (pid $pid) CONTAINERD_ADDRESS=$SOCK"
    return 0
  fi
  echo "not running"
  return 3
}

import() {
  answering || die "containerd not running (scripts/containerd.sh start)"
  [[ $# -gt 0 ]] || set -- nestrun-test/busybox:latest
  local a tmp
  for a in "$@"; do
    if [[ -f "$a" ]]; then
      ctr_ -n "$NS" images import --all-platforms "$a" >/dev/null
      log "imported $a"
    else
      tmp=$(mktemp /var/tmp/nestrun-ctr-import.XXXXXX)
      DOCKER_HOST=${DOCKER_HOST:-$NESTRUN_DOCKER_HOST} "$DOCKER_CLI" save -o "$tmp" "$a"
      ctr_ -n "$NS" images import --all-platforms "$tmp" >/dev/null
      rm -f "$tmp"
      log "imported $a (as docker.io/$a in namespace $NS)"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) status ;;
  env) echo "export CONTAINERD_ADDRESS=$SOCK CONTAINERD_NAMESPACE=$NS" ;;
  import) shift; import "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
esac
