#!/usr/bin/env bash
# Usage: scripts/cri-containerd.sh start|stop|restart|restart-keep|status|env|import [TAR|IMAGE...]
#
# A private containerd with the CRI plugin, for nestrun's Kubernetes tests (integration/cri.rs,
# driven through scripts/cri.py as kubelet drives the CRI). Separate from any system containerd,
# from scripts/containerd.sh's (which has no CRI) and from the test dockerd:
#   root     $NESTRUN_TEST_DIR/cri          (default /var/lib/nestrun-test/cri)
#   state    $NESTRUN_TEST_RUNDIR/cri       (default /run/nestrun-test/cri; netns mounts too)
#   socket   $NESTRUN_TEST_RUNDIR/cri/containerd.sock
#   log      $NESTRUN_TEST_LOGDIR/<basename of NESTRUN_TEST_RUNDIR>-cri-containerd.log
#            (default /var/log/nestrun-test-cri-containerd.log)
#   CNI      conf dir $NESTRUN_TEST_RUNDIR/cri-cni: bridge nrcri0 + host-local 10.88.77.0/24
#            (network nestrun-cri), the bridge the pods' gateway (10.88.77.1 on the host, so
#            the host reaches pod IPs, as a node does; no masquerade: nothing beyond the host),
#            portmap (hostPort, also on 127.0.0.1), loopback; plugins in /usr/lib/cni
#   runtime handlers  runc     runc, root /run/nestrun-test/cri-runc
#                     nested   $NESTRUN_BIN, root /run/nestrun-test/cri-nestrun
#   sandbox image     docker.io/nestrun-test/pause:latest, built from integration/pause.c
#                     (gcc -static) as an OCI archive and imported into namespace k8s.io
#   client   $NESTRUN_TEST_DIR/cri-venv: python venv with PyPI container-runtime-interface-api
#            and websocket-client (scripts/cri.py stream)
#   start    installs what it needs (apt: containerd containernetworking-plugins python3-venv
#            ...; pip into the venv), no-op if running; waits until the CRI says ready
#   stop     removes every pod through the CRI, stops containerd, then clears what may be
#            left: containers of both runtimes, shims, mounts under state, the bridge,
#            CNI allocations/results of network nestrun-cri, the pods' cgroup parents
#            and pod logs ($NESTRUN_TEST_DIR/cri-logs); the root (images) stays
#   restart-keep  stops only the containerd process (SIGTERM) and starts it again: shims,
#            containers and pods stay and are recovered, as after `systemctl restart
#            containerd` (KillMode=process); no stale-pod cleanup (integration/cri_dind.rs)
#   env      prints `export NESTRUN_TEST_CRI=1 NESTRUN_CRI_ADDRESS=... NESTRUN_CRI_PYTHON=...`
#            (and NESTRUN_CRI_NET/_SUBNET/_CGROUP_PARENT, which integration/cri.rs follows)
#   import   imports `docker save` tarballs into namespace k8s.io; arguments that are not
#            files are image names exported from the test dockerd ($DOCKER_HOST, default
#            scripts/dockerd.sh's); an image already there with the same id is skipped.
#            Without arguments: nestrun-test/busybox:latest.
# By hand:  eval "$(scripts/cri-containerd.sh env)"; "$NESTRUN_CRI_PYTHON" scripts/cri.py Version
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

# NESTRUN_CRI_CONTAINERD=DIR: the containerd (and its shim and ctr) in DIR instead of the host's,
# with config version 3 when it is 2.x (e.g. scripts/sid-engines.sh's 2.1: DIR =
# /var/cache/nestrun-test/sid/root/usr/bin; its fetch-trixie's 1.7, config version 2: DIR =
# /var/cache/nestrun-test/trixie/root/usr/bin), in its own root ($NESTRUN_TEST_DIR/cri-2.1,
# cri-1.7: a 2.x meta.db is not for 1.x); the socket, CNI network and runtime roots stay: run
# one at a time.
CTRD_DIR=${NESTRUN_CRI_CONTAINERD:-/usr/bin}
CTRD_VERSION=$("$CTRD_DIR/containerd" --version 2>/dev/null | awk '{print $3}' | sed 's/^v//; s/[~+-].*//')
CTRD_MAJOR=${CTRD_VERSION%%.*}
SUFFIX=""
# its own root per major.minor (sid's 2.1 and trixie's 1.7 both live in .../root/usr/bin)
[[ "$CTRD_DIR" == /usr/bin ]] || SUFFIX="-$(cut -d. -f1,2 <<<"$CTRD_VERSION")"
ROOT="$NESTRUN_TEST_DIR/cri$SUFFIX"
STATE="$NESTRUN_TEST_RUNDIR/cri"
SOCK="$STATE/containerd.sock"
PIDFILE="$NESTRUN_TEST_RUNDIR/cri-containerd.pid"
CONFIG="$NESTRUN_TEST_RUNDIR/cri-containerd.toml"
CNI_CONF="$NESTRUN_TEST_RUNDIR/cri-cni"
LOGFILE="$NESTRUN_TEST_LOGDIR/$(basename "$NESTRUN_TEST_RUNDIR")-cri-containerd.log"
RUNC_ROOT="$NESTRUN_TEST_RUNDIR/cri-runc"
NESTED_ROOT="$NESTRUN_TEST_RUNDIR/cri-nestrun"
VENV="$NESTRUN_TEST_DIR/cri-venv"
PY="$VENV/bin/python"
CRI_PY="$NESTRUN_REPO/scripts/cri.py"
# NESTRUN_CRI_NET/_BRIDGE/_SUBNET/_CGROUP_PARENT (with NESTRUN_TEST_DIR, _RUNDIR and _LOGDIR)
# let a second instance run beside this one, by hand
NET=${NESTRUN_CRI_NET:-nestrun-cri}
BRIDGE=${NESTRUN_CRI_BRIDGE:-nrcri0}
SUBNET=${NESTRUN_CRI_SUBNET:-10.88.77.0/24}
PAUSE_IMAGE=docker.io/nestrun-test/pause:latest
# bump when pause_image() changes what goes into the image (its archive is cached)
PAUSE_RECIPE=2
# the pods' cgroup parents (integration/cri.rs: /nestrun-test-cri/pod<uid>, as kubelet's /kubepods/...)
CGROUP_PARENT=${NESTRUN_CRI_CGROUP_PARENT:-nestrun-test-cri}
NS=k8s.io
CRI_API_VERSION=2.0.1
# scripts/cri.py stream (Exec/Attach through containerd's stream server, as kubectl)
WEBSOCKET_CLIENT_VERSION=1.8.0
# integration/cri.rs's pods log here (log_directory <dir>/<pod uid>)
POD_LOGS="$NESTRUN_TEST_DIR/cri-logs"

ctr_() { "$CTRD_DIR/ctr" --address "$SOCK" -n "$NS" "$@"; }
answering() { timeout 10 "$CTRD_DIR/ctr" --address "$SOCK" version >/dev/null 2>&1; }
cri() { timeout 300 "$PY" "$CRI_PY" --address "$SOCK" "$@"; }

deps() {
  NESTRUN_EXTRA_PKGS="containernetworking-plugins python3-venv libc6-dev gcc ${NESTRUN_EXTRA_PKGS:-}" \
    "$NESTRUN_REPO/scripts/install-deps.sh"
  if ! "$PY" -c 'import grpc, cri_api.v1.api_pb2, websocket' 2>/dev/null; then
    log "making the CRI client venv $VENV (pip: container-runtime-interface-api==$CRI_API_VERSION websocket-client==$WEBSOCKET_CLIENT_VERSION)"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "container-runtime-interface-api==$CRI_API_VERSION" \
      "websocket-client==$WEBSOCKET_CLIENT_VERSION"
  fi
}

# pause_image: prints the path of the OCI archive of the pause image (built when missing)
pause_image() {
  local src="$NESTRUN_REPO/integration/pause.c" sha out w arch
  sha=$(sha256sum "$src" | cut -c1-12)
  out="$NESTRUN_IMAGE_CACHE/pause-oci-v$PAUSE_RECIPE-$sha.tar"
  if [[ ! -s "$out" ]]; then
    mkdir -p "$NESTRUN_IMAGE_CACHE"
    w=$(mktemp -d /var/tmp/nestrun-pause.XXXXXX)
    mkdir -p "$w/root"/{dev,proc,sys,etc} "$w/oci/blobs/sha256"
    gcc -static -O2 -Wall -o "$w/root/pause" "$src"
    strip "$w/root/pause"
    tar --numeric-owner --owner=0 --group=0 --sort=name --mtime='2020-01-01 00:00Z' -C "$w/root" -cf "$w/layer.tar" .
    arch=$(dpkg --print-architecture)
    blob() { # blob FILE -> prints "sha256:<hex> <size>" after storing it
      local h; h=$(sha256sum "$1" | cut -d' ' -f1)
      cp "$1" "$w/oci/blobs/sha256/$h"
      echo "sha256:$h $(stat -c %s "$1")"
    }
    local ld ls cd cs md ms
    read -r ld ls < <(blob "$w/layer.tar")
    printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":["/pause"],"User":"65535:65535","WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
      "$arch" "$ld" >"$w/config.json"
    read -r cd cs < <(blob "$w/config.json")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
      "$cd" "$cs" "$ld" "$ls" >"$w/manifest.json"
    read -r md ms < <(blob "$w/manifest.json")
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"latest"}}]}' \
      "$md" "$ms" "$arch" "$PAUSE_IMAGE" >"$w/oci/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$w/oci/oci-layout"
    tar --numeric-owner --owner=0 --group=0 --sort=name --mtime='2020-01-01 00:00Z' -C "$w/oci" -cf "$out.tmp" .
    mv -f "$out.tmp" "$out"
    rm -rf "$w"
    log "built $out"
  fi
  echo "$out"
}

write_config() {
  mkdir -p "$CNI_CONF"
  cat >"$CNI_CONF/10-$NET.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$NET",
  "plugins": [
    { "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$SUBNET" }]] } },
    { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true },
    { "type": "loopback" }
  ]
}
JSON
  if [[ "${CTRD_MAJOR:-1}" -ge 2 ]]; then
    config_v3 >"$CONFIG"
    return
  fi
  cat >"$CONFIG" <<TOML
version = 2
root = "$ROOT"
state = "$STATE"

[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$ROOT/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_CONF"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
TOML
  runtimes_toml 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes' >>"$CONFIG"
  registry_hosts 'plugins."io.containerd.grpc.v1.cri"' >>"$CONFIG"

}

# runtimes_toml TABLE: the runc and nested handlers under TABLE (config v2 and v3 name it apart)
runtimes_toml() {
  local h bin root
  for h in runc nested; do
    if [[ $h == runc ]]; then bin=runc root=$RUNC_ROOT; else bin=$NESTRUN_BIN root=$NESTED_ROOT; fi
    cat <<TOML
    [$1.$h]
      runtime_type = "io.containerd.runc.v2"
      [$1.$h.options]
        BinaryName = "$bin"
        Root = "$root"
        SystemdCgroup = false
TOML
  done
}

# containerd 2.x: the same settings in config version 3
config_v3() {
  cat <<TOML
version = 3
root = "$ROOT"
state = "$STATE"

[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$ROOT/opt"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$CNI_CONF"
    max_conf_num = 1
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
TOML
  runtimes_toml 'plugins."io.containerd.cri.v1.runtime".containerd.runtimes'
  cat <<TOML

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
TOML
  registry_hosts 'plugins."io.containerd.cri.v1.images"'
}

# NESTRUN_CRI_REGISTRY_MIRROR=URL (scripts/critest's loopback registry): pulls from these
# registries go to URL (hosts.toml under config_path). registry_hosts TABLE: that setting.
REGISTRY_HOSTS="$NESTRUN_TEST_RUNDIR/cri-registry-hosts"
registry_hosts() {
  [[ -n "${NESTRUN_CRI_REGISTRY_MIRROR:-}" ]] || return 0
  local h
  for h in registry.k8s.io k8s.gcr.io gcr.io docker.io quay.io; do
    mkdir -p "$REGISTRY_HOSTS/$h"
    printf 'server = "%s"\n[host."%s"]\n  capabilities = ["pull", "resolve"]\n' \
      "$NESTRUN_CRI_REGISTRY_MIRROR" "$NESTRUN_CRI_REGISTRY_MIRROR" >"$REGISTRY_HOSTS/$h/hosts.toml"
  done
  printf '\n[%s.registry]\n  config_path = "%s"\n' "$1" "$REGISTRY_HOSTS"
}

start() {
  deps
  local pid tar fresh=0
  tar=$(pause_image)
  if pid=$(pid_alive "$PIDFILE") && answering; then
    log "already running (pid $pid)"
  else
    if [[ -z "${pid:-}" ]]; then
      rm -f "$PIDFILE" "$SOCK" "$SOCK.ttrpc"
      mkdir -p "$ROOT" "$STATE" "$NESTRUN_TEST_LOGDIR"
      # restart-keep: the same config (runtime binary) as the pods were made with
      [[ "${KEEP_PODS:-0}" == 1 && -s "$CONFIG" ]] || write_config
      echo "=== $(date -Is) starting containerd --config $CONFIG" >>"$LOGFILE"
      PATH="$CTRD_DIR:$PATH" setsid "$CTRD_DIR/containerd" --config "$CONFIG" </dev/null >>"$LOGFILE" 2>&1 &
      echo $! >"$PIDFILE"
      fresh=1
      log "started CRI containerd (pid $!)"
    fi
    local i
    for ((i = 0; i < 60; i++)); do
      answering && break
      pid_alive "$PIDFILE" >/dev/null || break
      sleep 0.5
    done
    if ! answering; then
      log "CRI containerd did not answer; last log lines:"
      tail -n 30 "$LOGFILE" >&2 || true
      return 1
    fi
  fi
  ctr_ images import "$tar" >/dev/null
  if ! cri wait 30 >/dev/null; then
    log "the CRI is not ready; last log lines:"
    tail -n 30 "$LOGFILE" >&2 || true
    return 1
  fi
  if [[ "$fresh" == 1 && "${KEEP_PODS:-0}" != 1 ]]; then
    # a fresh containerd: pods recorded by an earlier one that was killed are stale
    cri cleanup >/dev/null || log "warning: removing stale pods failed"
  fi
  log "ready: NESTRUN_CRI_ADDRESS=$SOCK (handlers runc, nested=$(awk -F\" '/BinaryName/ {b = $2} END {print b}' "$CONFIG"))"
}

# rmdir_tree DIR: remove an empty directory tree (cgroup dirs), leaves first
rmdir_tree() {
  [[ -d "$1" ]] || return 0
  find "$1" -depth -type d -exec rmdir {} \; 2>/dev/null || true
}

stop() {
  local pid
  if pid=$(pid_alive "$PIDFILE"); then
    if answering && [[ -x "$PY" ]]; then
      cri cleanup >&2 || log "warning: removing the pods through the CRI failed"
    fi
    log "stopping CRI containerd (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_pid_exit "$pid" 20; then
      kill -KILL "$pid" 2>/dev/null || true
      wait_pid_exit "$pid" 5 || true
    fi
  else
    log "not running"
  fi
  rm -f "$PIDFILE" "$SOCK" "$SOCK.ttrpc"
  # containers the CRI did not remove: ask their runtimes, then end their shims
  local r bin id sandboxes=()
  for id in "$ROOT"/io.containerd.grpc.v1.cri/sandboxes/* "$STATE"/io.containerd.grpc.v1.cri/sandboxes/*; do
    [[ -e "$id" ]] && sandboxes+=("$(basename "$id")")
  done
  for r in "runc:$RUNC_ROOT/$NS" "$NESTRUN_BIN:$NESTED_ROOT/$NS"; do
    bin=${r%%:*}
    [[ -d "${r#*:}" && -x "$(command -v "$bin")" ]] || continue
    for id in $("$bin" --root "${r#*:}" list -q 2>/dev/null); do
      log "leftover container $id ($bin): delete --force"
      "$bin" --root "${r#*:}" delete --force "$id" >&2 || true
    done
  done
  for pid in $(pgrep -f -- "-address $SOCK( |\$)" || true); do
    log "leftover shim $pid: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  done
  # mounts under the state and root dirs (netns, shm, rootfs), deepest first
  local m
  while read -r m; do
    [[ -z "$m" ]] || umount -l "$m" 2>/dev/null || true
  done < <(awk -v s="$STATE/" -v r="$ROOT/" 'index($5, s) == 1 || index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  if awk -v s="$STATE/" 'index($5, s) == 1 {found = 1} END {exit !found}' /proc/self/mountinfo; then
    log "warning: mounts left under $STATE; not removing it"
  else
    rm -rf "$STATE" "$RUNC_ROOT" "$NESTED_ROOT"
  fi
  ip link del "$BRIDGE" 2>/dev/null || true
  cleanup_portmap
  rm -rf "/var/lib/cni/networks/$NET" "$CNI_CONF" "$CONFIG" "$POD_LOGS" "$REGISTRY_HOSTS"
  # libcni's cache: <network>-<64 hex id>-<ifname> (not a longer network's, nestrun-cri-a-...)
  local f
  for f in /var/lib/cni/results/"$NET"-*; do
    if [[ "${f#/var/lib/cni/results/"$NET"-}" =~ ^[0-9a-f]{64}-[^-]+$ ]]; then rm -f "$f"; fi
  done
  # containerd's own loopback network caches its results as cni-loopback-<sandbox id>-lo
  for id in "${sandboxes[@]}"; do
    rm -f /var/lib/cni/results/cni-loopback-"$id"-*
  done
  rmdir /var/lib/cni/networks /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  local c
  for c in /sys/fs/cgroup/*/"$CGROUP_PARENT" /sys/fs/cgroup/"$CGROUP_PARENT"; do
    rmdir_tree "$c"
  done
}

# nat_rules CHAIN TEXT TARGET: the numbers of the nat table's CHAIN rules whose `iptables -L`
# line contains TEXT and whose target starts with TARGET, highest first (to delete in order)
nat_rules() {
  iptables -w -t nat -L "$1" --line-numbers -n 2>/dev/null |
    awk -v t="$2" -v p="$3" 'NR > 2 && index($0, t) && index($2, p) == 1 {print $1}' | sort -rn
}

# portmap's iptables (nat): CNI DEL removes a pod's DNAT chain and its jump; left are those of
# pods the CRI did not remove (rules whose comment names this network) and portmap's shared
# chains CNI-HOSTPORT-*, which other CNI networks (another instance) may use: they go only
# when no pod of any network has a host port any more.
cleanup_portmap() {
  command -v iptables >/dev/null && iptables -w -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1 || return 0
  local n chain chains mine="name: \"$NET\" "
  chains=$(iptables -w -t nat -L CNI-HOSTPORT-DNAT -n | awk -v t="$mine" 'NR > 2 && index($0, t) {print $1}')
  for n in $(nat_rules CNI-HOSTPORT-DNAT "$mine" ""); do
    iptables -w -t nat -D CNI-HOSTPORT-DNAT "$n"
  done
  for chain in $chains; do
    log "leftover portmap chain $chain (network $NET): removed"
    { iptables -w -t nat -F "$chain" && iptables -w -t nat -X "$chain"; } 2>/dev/null || true
  done
  [[ $(iptables -w -t nat -S CNI-HOSTPORT-DNAT | wc -l) -le 1 ]] || return 0
  for chain in PREROUTING OUTPUT POSTROUTING; do
    for n in $(nat_rules "$chain" "" CNI-HOSTPORT-); do
      iptables -w -t nat -D "$chain" "$n"
    done
  done
  for chain in $(iptables -w -t nat -S | awk '$1 == "-N" && index($2, "CNI-HOSTPORT-") == 1 {print $2}'); do
    { iptables -w -t nat -F "$chain" && iptables -w -t nat -X "$chain"; } || log "warning: cannot remove iptables chain $chain"
  done
}

# restart_keep: containerd alone goes and comes back; what it runs stays
restart_keep() {
  local pid
  pid=$(pid_alive "$PIDFILE") || die "CRI containerd not running"
  log "restarting CRI containerd (pid $pid), keeping shims and pods"
  kill -TERM "$pid"
  if ! wait_pid_exit "$pid" 20; then
    kill -KILL "$pid" 2>/dev/null || true
    wait_pid_exit "$pid" 5 || true
  fi
  KEEP_PODS=1 start
}

status() {
  local pid
  if pid=$(pid_alive "$PIDFILE") && answering; then
    echo "running (pid $pid) NESTRUN_CRI_ADDRESS=$SOCK"
    return 0
  fi
  echo "not running"
  return 3
}

import() {
  answering || die "CRI containerd not running (scripts/cri-containerd.sh start)"
  [[ $# -gt 0 ]] || set -- nestrun-test/busybox:latest
  local a tmp id
  for a in "$@"; do
    if [[ -f "$a" ]]; then
      ctr_ images import "$a" >/dev/null
      log "imported $a"
    else
      # the CRI's image id is the config digest, which is docker's image id
      id=$(DOCKER_HOST=${DOCKER_HOST:-$NESTRUN_DOCKER_HOST} "$DOCKER_CLI" image inspect -f '{{.Id}}' "$a")
      if [[ "$(cri ImageStatus "{\"image\": {\"image\": \"docker.io/$a\"}}" |
        "$PY" -c 'import json, sys; print((json.load(sys.stdin).get("image") or {}).get("id", ""))')" == "$id" ]]; then
        log "$a already imported ($id)"
        continue
      fi
      tmp=$(mktemp /var/tmp/nestrun-cri-import.XXXXXX)
      DOCKER_HOST=${DOCKER_HOST:-$NESTRUN_DOCKER_HOST} "$DOCKER_CLI" save -o "$tmp" "$a"
      ctr_ images import "$tmp" >/dev/null
      rm -f "$tmp"
      log "imported $a (as docker.io/$a in namespace $NS)"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  restart-keep) restart_keep ;;
  status) status ;;
  env) echo "export NESTRUN_TEST_CRI=1 NESTRUN_CRI_ADDRESS=$SOCK NESTRUN_CRI_PYTHON=$PY NESTRUN_CRI_LOGS=$POD_LOGS NESTRUN_CRI_NET=$NET NESTRUN_CRI_SUBNET=$SUBNET NESTRUN_CRI_CGROUP_PARENT=$CGROUP_PARENT" ;;
  import) shift; import "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
esac
