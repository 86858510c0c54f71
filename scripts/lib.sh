# shellcheck shell=bash
# Common settings for nestrun's test scripts. Source it, don't run it:
#   . "$(dirname "$0")/lib.sh"
#
# Overridable environment:
#   NESTRUN_BIN          nestrun binary (default: target/release/nestrun if it
#                        exists, else target/debug/nestrun); made absolute.
#   NESTRUN_TEST_DIR     persistent state root (default /var/lib/nestrun-test;
#                        must be a real disk, not tmpfs: overlay2 lives there)
#   NESTRUN_TEST_RUNDIR  runtime dir for sockets/pids (default /run/nestrun-test)
#   NESTRUN_TEST_LOGDIR  log dir (default /var/log)
#   NESTRUN_IMAGE_CACHE  image tarball cache (default /var/cache/nestrun-test/images)
#   DOCKER_CLI           docker client to use (default /usr/bin/docker from
#                        docker.io, which matches the 20.10 daemon)

NESTRUN_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export NESTRUN_REPO

if [[ -z "${NESTRUN_BIN:-}" ]]; then
  if [[ -x "$NESTRUN_REPO/target/release/nestrun" ]]; then
    NESTRUN_BIN="$NESTRUN_REPO/target/release/nestrun"
  else
    NESTRUN_BIN="$NESTRUN_REPO/target/debug/nestrun"
  fi
fi
# dockerd's --add-runtime wants an absolute path
case "$NESTRUN_BIN" in
  /*) ;;
  *) NESTRUN_BIN="$PWD/$NESTRUN_BIN" ;;
esac
export NESTRUN_BIN

NESTRUN_TEST_DIR=${NESTRUN_TEST_DIR:-/var/lib/nestrun-test}
NESTRUN_TEST_RUNDIR=${NESTRUN_TEST_RUNDIR:-/run/nestrun-test}
NESTRUN_TEST_LOGDIR=${NESTRUN_TEST_LOGDIR:-/var/log}
NESTRUN_IMAGE_CACHE=${NESTRUN_IMAGE_CACHE:-/var/cache/nestrun-test/images}
export NESTRUN_TEST_DIR NESTRUN_TEST_RUNDIR NESTRUN_TEST_LOGDIR NESTRUN_IMAGE_CACHE

NESTRUN_DOCKER_SOCK="$NESTRUN_TEST_RUNDIR/docker.sock"
NESTRUN_DOCKER_HOST="unix://$NESTRUN_DOCKER_SOCK"
NESTRUN_CONTAINERD_SOCK="$NESTRUN_TEST_RUNDIR/containerd.sock"
export NESTRUN_DOCKER_SOCK NESTRUN_DOCKER_HOST NESTRUN_CONTAINERD_SOCK

if [[ -z "${DOCKER_CLI:-}" ]]; then
  if [[ -x /usr/bin/docker ]]; then DOCKER_CLI=/usr/bin/docker; else DOCKER_CLI=docker; fi
fi
export DOCKER_CLI

log() { echo "[$(basename "$0")] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pid_alive PIDFILE -> prints pid and returns 0 if the process in PIDFILE lives
pid_alive() {
  local f=$1 pid
  [[ -s "$f" ]] || return 1
  pid=$(tr -dc '0-9' <"$f")
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # a zombie is not alive
  [[ "$(awk '/^State:/{print $2}' "/proc/$pid/status" 2>/dev/null)" != "Z" ]] || return 1
  echo "$pid"
}

# wait_pid_exit PID TIMEOUT_S -> 0 if gone within timeout
wait_pid_exit() {
  local pid=$1 t=$2 i
  for ((i = 0; i < t * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    [[ "$(awk '/^State:/{print $2}' "/proc/$pid/status" 2>/dev/null)" != "Z" ]] || return 0
    sleep 0.1
  done
  return 1
}
