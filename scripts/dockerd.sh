#!/usr/bin/env bash
# Usage: scripts/dockerd.sh start|stop|restart|status|env|logs [N]|purge
#
# A private dockerd for nestrun's tests that never touches the system one:
#   data root  $NESTRUN_TEST_DIR/docker        (default /var/lib/nestrun-test/docker, real disk)
#   exec root  $NESTRUN_TEST_RUNDIR/docker-exec (default /run/nestrun-test/docker-exec)
#   socket     unix://$NESTRUN_TEST_RUNDIR/docker.sock
#   pidfile    $NESTRUN_TEST_RUNDIR/dockerd.pid
#   log        $NESTRUN_TEST_LOGDIR/nestrun-test-dockerd.log
#   bridge     nestrun0 ($NESTRUN_TEST_BRIDGE_CIDR, default 10.213.0.1/24) instead of docker0
#   config     its own daemon.json (the system /etc/docker/daemon.json is ignored)
# containerd: the private one of scripts/containerd.sh (started here if needed;
# dockerd uses its "moby" namespace). NOT dockerd's managed containerd: docker
# 20.10 silently uses the *system* containerd instead whenever
# /run/containerd/containerd.sock exists, which would mix the two setups.
# `stop` leaves that containerd running (scripts/containerd.sh stop ends it).
# The nestrun runtime is registered as
# `nested` (docker run --runtime nested ...), pointing at $NESTRUN_BIN.
#   start    no-op if already running; waits up to $NESTRUN_DOCKERD_TIMEOUT (60)s
#            for `docker info`, prints the log tail on failure
#   stop     SIGTERM, wait, SIGKILL if needed; cleans pidfile/socket/stray containerd
#   status   exit 0 if running and answering, 3 otherwise
#   env      prints `export DOCKER_HOST=...` (use: eval "$(scripts/dockerd.sh env)")
#   purge    stop dockerd + containerd and delete the dockerd data (images too)
# Extra dockerd flags: NESTRUN_DOCKERD_ARGS="--debug ...".
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

DATA_ROOT="$NESTRUN_TEST_DIR/docker"
EXEC_ROOT="$NESTRUN_TEST_RUNDIR/docker-exec"
PIDFILE="$NESTRUN_TEST_RUNDIR/dockerd.pid"
CONFIG="$NESTRUN_TEST_RUNDIR/daemon.json"
LOGFILE="$NESTRUN_TEST_LOGDIR/nestrun-test-dockerd.log"
BRIDGE=${NESTRUN_TEST_BRIDGE:-nestrun0}
BRIDGE_CIDR=${NESTRUN_TEST_BRIDGE_CIDR:-10.213.0.1/24}
ADDR_POOL=${NESTRUN_TEST_ADDR_POOL:-10.213.128.0/17}
TIMEOUT=${NESTRUN_DOCKERD_TIMEOUT:-60}

dk() { "$DOCKER_CLI" -H "$NESTRUN_DOCKER_HOST" "$@"; }

answering() { timeout 10 "$DOCKER_CLI" -H "$NESTRUN_DOCKER_HOST" info >/dev/null 2>&1; }

setup_bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  if ! ip -4 addr show dev "$BRIDGE" | grep -q "inet ${BRIDGE_CIDR%/*}/"; then
    ip addr flush dev "$BRIDGE"
    ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
}

kill_stray_containerd() {
  # dockerd's managed containerd keeps its pid here; left behind if dockerd was SIGKILLed
  local cpid
  if cpid=$(pid_alive "$EXEC_ROOT/containerd/containerd.pid"); then
    if grep -q containerd "/proc/$cpid/comm" 2>/dev/null; then
      log "stopping stray managed containerd (pid $cpid)"
      kill -TERM "$cpid" 2>/dev/null || true
      wait_pid_exit "$cpid" 15 || kill -KILL "$cpid" 2>/dev/null || true
    fi
  fi
  rm -f "$EXEC_ROOT/containerd/containerd.pid"
}

write_config() {
  mkdir -p "$NESTRUN_TEST_RUNDIR"
  cat >"$CONFIG.tmp" <<JSON
{
  "runtimes": { "nested": { "path": "$NESTRUN_BIN" } },
  "default-address-pools": [ { "base": "$ADDR_POOL", "size": 24 } ]
}
JSON
  mv -f "$CONFIG.tmp" "$CONFIG"
}

start() {
  local pid
  if pid=$(pid_alive "$PIDFILE"); then
    if answering; then
      if ! grep -qF "\"path\": \"$NESTRUN_BIN\"" "$CONFIG" 2>/dev/null; then
        # runtimes are reloadable: point `nested` at this NESTRUN_BIN
        write_config
        kill -HUP "$pid"
        sleep 1
        log "reloaded config: runtime nested -> $NESTRUN_BIN"
      fi
      log "already running (pid $pid)"
      return 0
    fi
    log "dockerd pid $pid alive but not answering; waiting"
  else
    rm -f "$PIDFILE" "$NESTRUN_DOCKER_SOCK"
    kill_stray_containerd
    mkdir -p "$DATA_ROOT" "$EXEC_ROOT" "$NESTRUN_TEST_LOGDIR"
    case "$(stat -f -c %T "$DATA_ROOT")" in
      tmpfs | ramfs) log "WARNING: $DATA_ROOT is on tmpfs; overlay2 may misbehave" ;;
    esac
    setup_bridge
    "$NESTRUN_REPO/scripts/containerd.sh" start
    [[ -x "$NESTRUN_BIN" ]] || log "note: $NESTRUN_BIN does not exist (yet); runtime 'nested' will fail until it does"
    write_config
    local args=(
      --config-file "$CONFIG"
      --data-root "$DATA_ROOT"
      --exec-root "$EXEC_ROOT"
      --pidfile "$PIDFILE"
      --containerd "$NESTRUN_CONTAINERD_SOCK"
      -H "$NESTRUN_DOCKER_HOST"
      --bridge "$BRIDGE"
      --iptables=true
      --storage-driver overlay2
      --exec-opt native.cgroupdriver=cgroupfs
    )
    # shellcheck disable=SC2206 # intentional word splitting of user flags
    [[ -z "${NESTRUN_DOCKERD_ARGS:-}" ]] || args+=(${NESTRUN_DOCKERD_ARGS})
    {
      echo "=== $(date -Is) starting dockerd ${args[*]}"
    } >>"$LOGFILE"
    # setsid: detach from our session so ^C / CI teardown of the caller does
    # not hit the daemon; stop() is the way to end it.
    setsid /usr/sbin/dockerd "${args[@]}" </dev/null >>"$LOGFILE" 2>&1 &
    log "started dockerd (pid $!), waiting for it to answer"
  fi
  local i
  for ((i = 0; i < TIMEOUT * 2; i++)); do
    if answering; then
      log "ready: DOCKER_HOST=$NESTRUN_DOCKER_HOST"
      return 0
    fi
    if ((i > 4)) && ! pid_alive "$PIDFILE" >/dev/null && ! pgrep -f "dockerd .*--pidfile $PIDFILE" >/dev/null; then
      break
    fi
    sleep 0.5
  done
  log "dockerd did not become ready within ${TIMEOUT}s; last log lines:"
  tail -n 40 "$LOGFILE" >&2 || true
  return 1
}

stop() {
  local pid
  if pid=$(pid_alive "$PIDFILE"); then
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_pid_exit "$pid" 30; then
      log "dockerd did not exit in 30s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_pid_exit "$pid" 10 || true
    fi
  else
    log "not running"
  fi
  kill_stray_containerd
  rm -f "$PIDFILE" "$NESTRUN_DOCKER_SOCK"
  # dockerd bind-mounts its data root onto itself (to make it rprivate) and
  # may leave that behind; unmount leftovers under our dirs (deepest first)
  local m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(awk -v a="$DATA_ROOT" -v b="$EXEC_ROOT" 'index($5, a) == 1 || index($5, b) == 1 {print $5}' /proc/self/mountinfo | sort -r)
}

purge() {
  stop
  "$NESTRUN_REPO/scripts/containerd.sh" stop
  log "removing $DATA_ROOT $EXEC_ROOT"
  rm -rf "$DATA_ROOT" "$EXEC_ROOT"
}

status() {
  local pid
  if pid=$(pid_alive "$PIDFILE") && answering; then
    echo "running (pid $pid) DOCKER_HOST=$NESTRUN_DOCKER_HOST"
    return 0
  fi
  echo "not running"
  return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  purge) purge ;;
  status) status ;;
  env) echo "export DOCKER_HOST=$NESTRUN_DOCKER_HOST" ;;
  logs) tail -n "${2:-100}" "$LOGFILE" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
esac
