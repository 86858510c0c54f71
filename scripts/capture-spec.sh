#!/usr/bin/env bash
# Usage: scripts/capture-spec.sh [--keep] [SCENARIO...]
#        scripts/capture-spec.sh --facts [FIXTURE-DIR...]
#
# Captures REAL config.json files from container engines into spec-fixtures/<scenario>/input.json
# (verbatim: ids, paths and all), for the golden rewrite test (src/rewrite/golden.rs). The
# engines run scripts/capture-runtime, which copies the bundle's config.json and then execs runc.
# Each capture also writes facts.json (see gen_facts: what `lifecycle::gather` would produce on
# this host for that input, with a fixed mount-dir hash); `scripts/capture-spec.sh --facts [DIR...]`
# rewrites only the facts.json files. expected.json / expected-error.txt come from
# `NESTRUN_BLESS=1 cargo test golden`.
#
# Engines:
#   dockerd-*      a capture dockerd of its OWN, never the test dockerd of scripts/dockerd.sh:
#                  data root $CAP_DIR/docker, exec root $CAP_RUNDIR/docker-exec, socket
#                  unix://$CAP_RUNDIR/docker.sock, bridge $CAP_BRIDGE ($CAP_BRIDGE_CIDR) with
#                  --iptables=false --ip-forward=false --ip-masq=false (two dockerds with
#                  iptables on would flush each other's DOCKER chains). It uses the private
#                  containerd of scripts/containerd.sh in its own namespaces (nestrun-capture*),
#                  and registers scripts/capture-runtime as its default runtime `capture`.
#                  The image comes from the test dockerd (docker save nestrun-test/busybox).
#   containerd-*   ctr on the private containerd (namespace nestrun), --runc-binary capture-runtime
#   podman-*       podman with its own --root/--runroot, --runtime capture-runtime
#   cri-*, cri2-*  a pod sandbox and one container in it, through the CRI (scripts/cri.py, as
#                  kubelet sends them) of a private CRI containerd of scripts/cri-containerd.sh
#                  (1.6, the host's; cri2: sid's 2.1, scripts/sid-engines.sh fetch) whose handler
#                  `nested` is capture-runtime; own root, state, CNI network and bridge under
#                  $CAP_DIR/$CAP_RUNDIR, stopped afterwards (both scenarios of one engine come
#                  from one pod)
# The capture dockerd is stopped at the end (also on error); `--keep` leaves it running.
#
# Environment: CAP_DIR (/var/lib/nestrun-capture), CAP_RUNDIR (/run/nestrun-capture),
# NESTRUN_FIXTURES_DIR (spec-fixtures/), NESTRUN_CAPTURE_REAL (runc). NESTRUN_CAPTURE_DIR
# (default $CAP_RUNDIR/specs) must stay capture-runtime's default /run/nestrun-capture/specs
# for the dockerd and ctr captures: their shims don't pass the environment on.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

CAP_DIR=${CAP_DIR:-/var/lib/nestrun-capture}
CAP_RUNDIR=${CAP_RUNDIR:-/run/nestrun-capture}
CAP_BRIDGE=${CAP_BRIDGE:-nestrcap0}
CAP_BRIDGE_CIDR=${CAP_BRIDGE_CIDR:-10.214.0.1/24}
export NESTRUN_CAPTURE_DIR=${NESTRUN_CAPTURE_DIR:-$CAP_RUNDIR/specs}
CAPTURE_RUNTIME="$NESTRUN_REPO/scripts/capture-runtime"
FIXTURES=${NESTRUN_FIXTURES_DIR:-$NESTRUN_REPO/spec-fixtures}
IMAGE=nestrun-test/busybox:latest
CAP_SOCK="unix://$CAP_RUNDIR/docker.sock"
CAP_PIDFILE="$CAP_RUNDIR/dockerd.pid"
CAP_LOG="$NESTRUN_TEST_LOGDIR/nestrun-capture-dockerd.log"
PODMAN=(podman --root "$CAP_DIR/podman" --runroot "$CAP_RUNDIR/podman" --runtime "$CAPTURE_RUNTIME"
  --cgroup-manager cgroupfs --events-backend file --storage-driver overlay)
CTR=(ctr --address "$NESTRUN_CONTAINERD_SOCK" -n nestrun)
KEEP=0

ALL_SCENARIOS=(
  dockerd-default dockerd-limits dockerd-volume dockerd-varlibdocker dockerd-readonly
  dockerd-user dockerd-privileged dockerd-userns-host dockerd-hostnet
  containerd-ctr podman-default cri-sandbox cri-container cri2-sandbox cri2-container
)

cdk() { "$DOCKER_CLI" -H "$CAP_SOCK" "$@"; }
tdk() { "$DOCKER_CLI" -H "$NESTRUN_DOCKER_HOST" "$@"; }

start_dockerd() {
  if pid_alive "$CAP_PIDFILE" >/dev/null && timeout 10 "$DOCKER_CLI" -H "$CAP_SOCK" info >/dev/null 2>&1; then
    return 0
  fi
  "$NESTRUN_REPO/scripts/containerd.sh" start
  mkdir -p "$CAP_DIR/docker" "$CAP_RUNDIR/docker-exec"
  if ! ip link show "$CAP_BRIDGE" >/dev/null 2>&1; then
    ip link add "$CAP_BRIDGE" type bridge
    ip addr add "$CAP_BRIDGE_CIDR" dev "$CAP_BRIDGE"
  fi
  ip link set "$CAP_BRIDGE" up
  # an empty config file: never /etc/docker/daemon.json
  echo '{}' >"$CAP_RUNDIR/daemon.json"
  local args=(
    --config-file "$CAP_RUNDIR/daemon.json"
    --data-root "$CAP_DIR/docker"
    --exec-root "$CAP_RUNDIR/docker-exec"
    --pidfile "$CAP_PIDFILE"
    -H "$CAP_SOCK"
    --containerd "$NESTRUN_CONTAINERD_SOCK"
    --containerd-namespace nestrun-capture
    --containerd-plugins-namespace nestrun-capture-plugins
    --bridge "$CAP_BRIDGE"
    --iptables=false --ip-forward=false --ip-masq=false
    --storage-driver overlay2
    --exec-opt native.cgroupdriver=cgroupfs
    --add-runtime "capture=$CAPTURE_RUNTIME"
    --default-runtime capture
  )
  echo "=== $(date -Is) starting capture dockerd ${args[*]}" >>"$CAP_LOG"
  setsid /usr/sbin/dockerd "${args[@]}" </dev/null >>"$CAP_LOG" 2>&1 &
  local i
  for ((i = 0; i < 120; i++)); do
    timeout 10 "$DOCKER_CLI" -H "$CAP_SOCK" info >/dev/null 2>&1 && break
    sleep 0.5
  done
  cdk info >/dev/null || { tail -n 30 "$CAP_LOG" >&2; die "capture dockerd did not start"; }
  if ! cdk image inspect "$IMAGE" >/dev/null 2>&1; then
    tdk save "$IMAGE" | cdk load >/dev/null
  fi
}

stop_dockerd() {
  local pid m
  if pid=$(pid_alive "$CAP_PIDFILE"); then
    cdk ps -aq | xargs -r "$DOCKER_CLI" -H "$CAP_SOCK" rm -f >/dev/null 2>&1 || true
    kill -TERM "$pid"
    wait_pid_exit "$pid" 30 || { kill -KILL "$pid"; wait_pid_exit "$pid" 10 || true; }
  fi
  rm -f "$CAP_PIDFILE" "$CAP_RUNDIR/docker.sock"
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(awk -v a="$CAP_DIR" -v b="$CAP_RUNDIR" 'index($5, a) == 1 || index($5, b) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  ip link del "$CAP_BRIDGE" 2>/dev/null || true
}

# save_capture SCENARIO ID: move the captured config.json of container ID to the fixture
save_capture() {
  local name=$1 id=$2 src="$NESTRUN_CAPTURE_DIR/$2.json"
  [[ -s "$src" ]] || die "$name: nothing captured for $id (is capture-runtime the runtime?)"
  mkdir -p "$FIXTURES/$name"
  python3 -m json.tool --indent 2 "$src" >"$FIXTURES/$name/input.json"
  echo "$id" >"$FIXTURES/$name/id"
  rm -f "$src"
  gen_facts "$FIXTURES/$name"
  log "$name: captured $id"
}

# gen_facts FIXTURE-DIR: facts.json for its input.json, as lifecycle::gather builds them:
#  - host_id/id_size: the first lease of the default pool (1048576, 65536)
#  - runtime_caps: the names in this host's bounding set (CapBnd of this shell)
#  - rlimit_hard: this host's hard limits, but RLIMIT_NOFILE 1048576 (a systemd-started
#    containerd's; the shell here may have less)
#  - rootfs and ID-mapped bind clones under /run/nestrun-mnt/<id>-0000abcd (a fixed hash
#    instead of the fnv of the state root); every absolute bind source outside /proc /sys /dev
#    is cloned to m/<mount index>, as gather does (existence on the host is assumed)
#  - data_dirs under /var/lib/nestrun/data/<id>-0000abcd, except where the spec already mounts
#  - cgroup_path: the spec's cgroupsPath (or /nestrun/<id>); lib_modules /lib/modules/$(uname -r)
#  - CRI pods: pod_net_from (a sandbox's network namespace path), pod_userns (an app container:
#    /proc/<pid>/ns/user of the sandbox whose namespaces it joins)
gen_facts() {
  local dir=$1
  python3 - "$dir" "$(uname -r)" <<'PY'
import json, os, re, sys
d, release = sys.argv[1], sys.argv[2]
spec = json.load(open(os.path.join(d, "input.json")))
CAP_NAMES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]
bnd = int(re.search(r"^CapBnd:\s*([0-9a-f]+)", open("/proc/self/status").read(), re.M).group(1), 16)
import resource as R
rl = []
for n in ["NOFILE", "NPROC", "MEMLOCK", "CORE", "STACK", "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO"]:
    hard = R.getrlimit(getattr(R, "RLIMIT_" + n))[1]
    hard = 2**64 - 1 if hard == R.RLIM_INFINITY else hard
    rl.append(["RLIMIT_" + n, 1048576 if n == "NOFILE" else hard])
# the runtime's container id: the capture file's name, kept in the fixture's id file
cid = open(os.path.join(d, "id")).read().strip()
mdir = f"/run/nestrun-mnt/{cid}-0000abcd"
droot = f"/var/lib/nestrun/data/{cid}-0000abcd"
mounts = spec.get("mounts") or []
def is_bind(m):
    return m.get("type") == "bind" or any(o in ("bind", "rbind") for o in m.get("options") or [])
idm = []
for i, m in enumerate(mounts):
    src = m.get("source") or ""
    if not src.startswith("/") or not is_bind(m) or any(src == p or src.startswith(p + "/") for p in ("/proc", "/sys", "/dev")):
        continue
    idm.append([src, f"{mdir}/m/{i}"])
dests = {m["destination"] for m in mounts}
DATA_DIRS = ["/var/lib/docker", "/var/lib/containerd", "/var/lib/buildkit", "/var/lib/kubelet", "/var/lib/rancher/k3s", "/var/lib/k0s"]
facts = {
    "mode": "system",
    "host_id": 1048576,
    "id_size": 65536,
    "rootfs": f"{mdir}/rootfs",
    "idmapped_sources": idm,
    "runtime_caps": [n for b, n in enumerate(CAP_NAMES) if bnd & (1 << b)],
    "rlimit_hard": rl,
    "cgroup_path": spec.get("linux", {}).get("cgroupsPath") or f"/nestrun/{cid}",
    "data_dirs": [{"destination": x, "source": droot + x} for x in DATA_DIRS if x not in dests],
    "lib_modules": f"/lib/modules/{release}",
    "fuse_device": False,
    "tun_device": False,
}
# pods: a sandbox's network namespace made by the engine in the host's user namespace moves
# (pod_net_from); an app container joins the user namespace of the sandbox whose namespaces
# its spec names by /proc path (pod_userns), in the pod's range (the same first lease here)
ann = spec.get("annotations") or {}
nss = spec.get("linux", {}).get("namespaces") or []
ctype = ann.get("io.kubernetes.cri.container-type")
if ctype == "sandbox":
    net = next((n["path"] for n in nss if n.get("type") == "network" and n.get("path")), None)
    if net:
        facts["pod_net_from"] = net
elif ctype == "container":
    peer = next((n["path"] for n in nss if (n.get("path") or "").startswith("/proc/")), None)
    if peer:
        facts["pod_userns"] = re.sub(r"/ns/[a-z_]+$", "/ns/user", peer)
with open(os.path.join(d, "facts.json"), "w") as f:
    json.dump(facts, f, indent=2)
    f.write("\n")
PY
}

# docker_capture SCENARIO DOCKER-RUN-ARGS...: docker create + start; a failing start is fine
# (the capture happens before runc runs)
docker_capture() {
  local name=$1 id
  shift
  start_dockerd
  id=$(cdk create "$@" "$IMAGE" true)
  cdk start -a "$id" >/dev/null 2>&1 || log "$name: container failed to start (expected for some; capture is done first)"
  cdk rm -f "$id" >/dev/null 2>&1 || true
  save_capture "$name" "$id"
}

# cri_capture PREFIX CONTAINERD-DIR SUBNET: fixtures PREFIX-sandbox and PREFIX-container
cri_capture() {
  local tag=$1 dir=$2 subnet=$3 out
  local env=(NESTRUN_BIN="$CAPTURE_RUNTIME" NESTRUN_TEST_DIR="$CAP_DIR/$tag" NESTRUN_TEST_RUNDIR="$CAP_RUNDIR/$tag"
    NESTRUN_CRI_NET="nestrun-cap$tag" NESTRUN_CRI_BRIDGE="nrcap${tag}0" NESTRUN_CRI_SUBNET="$subnet"
    NESTRUN_CRI_CGROUP_PARENT="nestrun-capture-$tag")
  [[ -z "$dir" ]] || env+=(NESTRUN_CRI_CONTAINERD="$dir")
  CRI_STOP+=("${env[*]}")
  env "${env[@]}" "$NESTRUN_REPO/scripts/cri-containerd.sh" start
  env "${env[@]}" DOCKER_HOST="$NESTRUN_DOCKER_HOST" "$NESTRUN_REPO/scripts/cri-containerd.sh" import "$IMAGE"
  eval "$(env "${env[@]}" "$NESTRUN_REPO/scripts/cri-containerd.sh" env)"
  local cri=("$NESTRUN_CRI_PYTHON" "$NESTRUN_REPO/scripts/cri.py" --address "$NESTRUN_CRI_ADDRESS")
  local pod='{"metadata": {"name": "capture", "uid": "capture-uid", "namespace": "default", "attempt": 0},
    "hostname": "capture", "log_directory": "'"$CAP_DIR/$tag"'-logs",
    "linux": {"cgroup_parent": "/nestrun-capture-'"$tag"'/podcapture-uid",
      "security_context": {"namespace_options": {"network": "POD", "pid": "CONTAINER", "ipc": "POD"}}}}'
  mkdir -p "$CAP_DIR/$tag-logs"
  out=$("${cri[@]}" RunPodSandbox '{"config": '"$pod"', "runtime_handler": "nested"}')
  local sid cid
  sid=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["pod_sandbox_id"])' <<<"$out")
  save_capture "$tag-sandbox" "$sid"
  out=$("${cri[@]}" CreateContainer '{"pod_sandbox_id": "'"$sid"'", "sandbox_config": '"$pod"', "config": {
    "metadata": {"name": "app", "attempt": 0}, "image": {"image": "docker.io/'"$IMAGE"'"},
    "command": ["sleep", "1000"], "log_path": "app/0.log", "labels": {"io.kubernetes.container.name": "app"},
    "linux": {"resources": {"cpu_shares": 2, "memory_limit_in_bytes": 268435456, "oom_score_adj": 1000},
      "security_context": {"namespace_options": {"network": "POD", "pid": "CONTAINER", "ipc": "POD"}}}}}')
  cid=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["container_id"])' <<<"$out")
  "${cri[@]}" StartContainer '{"container_id": "'"$cid"'"}' >/dev/null || log "$tag-container: start failed"
  save_capture "$tag-container" "$cid"
}

capture() {
  local name=$1 id
  case "$name" in
    cri-sandbox) cri_capture cri "" 10.88.81.0/24 ;;
    cri2-sandbox)
      "$NESTRUN_REPO/scripts/sid-engines.sh" fetch
      cri_capture cri2 "$(dirname "$NESTRUN_IMAGE_CACHE")/sid/root/usr/bin" 10.88.82.0/24
      ;;
    cri-container | cri2-container) [[ -s "$FIXTURES/$name/input.json" ]] || die "$name comes with ${name%-*}-sandbox: capture that" ;;
    dockerd-default) docker_capture "$name" ;;
    dockerd-limits) docker_capture "$name" -m 256m --cpus 1 --pids-limit 100 ;;
    dockerd-volume)
      mkdir -p /tmp/nestrun-capture-vol
      docker_capture "$name" -v /tmp/nestrun-capture-vol:/data
      ;;
    dockerd-varlibdocker)
      start_dockerd
      cdk volume create nestrun-capture-dind >/dev/null
      docker_capture "$name" -v nestrun-capture-dind:/var/lib/docker
      cdk volume rm nestrun-capture-dind >/dev/null 2>&1 || true
      ;;
    dockerd-readonly) docker_capture "$name" --read-only ;;
    dockerd-user) docker_capture "$name" --user 1000 ;;
    dockerd-privileged) docker_capture "$name" --privileged ;;
    dockerd-userns-host) docker_capture "$name" --userns=host ;;
    dockerd-hostnet) docker_capture "$name" --network host ;;
    containerd-ctr)
      "$NESTRUN_REPO/scripts/containerd.sh" start
      if ! "${CTR[@]}" images check "name==docker.io/$IMAGE" | grep -q .; then
        "$NESTRUN_REPO/scripts/containerd.sh" import "$IMAGE"
      fi
      id="nestrun-capture-$$"
      "${CTR[@]}" run --rm --runc-binary "$CAPTURE_RUNTIME" "docker.io/$IMAGE" "$id" true ||
        log "$name: ctr run failed"
      save_capture "$name" "$id"
      ;;
    podman-default)
      mkdir -p "$CAP_DIR/podman" "$CAP_RUNDIR/podman"
      if ! "${PODMAN[@]}" image exists "$IMAGE"; then
        tdk save "$IMAGE" | "${PODMAN[@]}" load >/dev/null
      fi
      id=$("${PODMAN[@]}" create "$IMAGE" true)
      "${PODMAN[@]}" start -a "$id" >/dev/null || log "$name: podman start failed"
      "${PODMAN[@]}" rm -f "$id" >/dev/null 2>&1 || true
      save_capture "$name" "$id"
      ;;
    *) die "unknown scenario $name (known: ${ALL_SCENARIOS[*]})" ;;
  esac
}

CRI_STOP=()
cleanup() {
  local e
  for e in "${CRI_STOP[@]}"; do
    # shellcheck disable=SC2086 # one "K=V K=V" word per instance
    env $e "$NESTRUN_REPO/scripts/cri-containerd.sh" stop >/dev/null 2>&1 || true
  done
  if ! ((KEEP)); then
    stop_dockerd
    local ns
    for ns in nestrun-capture nestrun-capture-plugins; do
      ctr --address "$NESTRUN_CONTAINERD_SOCK" namespaces rm "$ns" >/dev/null 2>&1 || true
    done
  fi
  rmdir /tmp/nestrun-capture-vol 2>/dev/null || true
  # podman leaves its overlay mounts and storage root mounted
  if [[ -d "$CAP_DIR/podman" ]]; then
    "${PODMAN[@]}" system reset -f >/dev/null 2>&1 || true
  fi
  local m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(awk -v a="$CAP_DIR" -v b="$CAP_RUNDIR" 'index($5, a) == 1 || index($5, b) == 1 {print $5}' /proc/self/mountinfo | sort -r)
}

main() {
  if [[ "${1:-}" == --facts ]]; then
    shift
    [[ $# -gt 0 ]] || set -- "$FIXTURES"/*/
    local f
    for f in "$@"; do gen_facts "${f%/}"; log "wrote ${f%/}/facts.json"; done
    return 0
  fi
  if [[ "${1:-}" == --keep ]]; then KEEP=1; shift; fi
  [[ $# -gt 0 ]] || set -- "${ALL_SCENARIOS[@]}"
  [[ $EUID -eq 0 ]] || die "run as root"
  mkdir -p "$NESTRUN_CAPTURE_DIR"
  # engines don't pass the environment down to the runtime: tell capture-runtime the defaults
  [[ -z "${NESTRUN_CAPTURE_REAL:-}" ]] || echo "$NESTRUN_CAPTURE_REAL" >"$NESTRUN_CAPTURE_DIR/.real"
  trap cleanup EXIT
  local s
  for s in "$@"; do capture "$s"; done
}

main "$@"
