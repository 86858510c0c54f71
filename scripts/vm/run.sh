#!/bin/bash
# The cgroup v2 smoke suite, run as root inside the scripts/cgroup2-vm guest by
# nestrun-guest-boot, from the 9p share mounted at /mnt/nestrun (which also holds
# the nestrun binary and the image tarballs). Prints PASS/FAIL/INFO lines and
# ends with "N passed, N failed". Runs the suite once per docker cgroup driver:
# systemd (docker 20.10's default on cgroup v2) and cgroupfs.
set -u
SHARE=/mnt/nestrun
PASSED=0
FAILED=0
pass() { echo "PASS [$DRIVER] $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL [$DRIVER] $1: $2"; FAILED=$((FAILED + 1)); }
info() { echo "INFO $*"; }
# check NAME EXPECTED ACTUAL
check() { if [[ "$3" == "$2" ]]; then pass "$1"; else fail "$1" "expected '$2', got '$(echo "$3" | head -c 400)'"; fi; }
now_ms() { date +%s%3N; }

DRIVER=-
install -m 755 "$SHARE/nestrun" /usr/local/bin/nestrun
info "kernel $(uname -r), /sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup)"
check "/sys/fs/cgroup is cgroup2fs (pure unified hierarchy)" cgroup2fs "$(stat -fc %T /sys/fs/cgroup)"
check "no cgroup v1 hierarchy mounted" 0 "$(awk '$9 == "cgroup"' /proc/self/mountinfo | wc -l)"
info "root cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
info "nestrun $(/usr/local/bin/nestrun --version 2>&1 | head -1)"

out=$(/usr/local/bin/nestrun check 2>&1); rc=$?
echo "$out" | sed 's/^/INFO check: /'
check "nestrun check exits 0" 0 "$rc"
check "nestrun check: cgroups v2 (unified)" 1 "$(echo "$out" | grep -c '^cgroups .*yes.*v2 (unified)')"
check "nestrun check: cgroup v2 delegation works" 1 "$(echo "$out" | grep -c '^cgroup v2 delegation .*yes')"

wait_docker() {
  local i
  for ((i = 0; i < 120; i++)); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}

import_images() {
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["sh"]' "$SHARE/busybox.tar" nestrun-test/busybox:latest >/dev/null &&
    docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'VOLUME /var/lib/docker' \
      --change 'ENTRYPOINT ["/usr/bin/docker-init", "--", "/usr/local/bin/dind-entrypoint"]' \
      --change 'CMD []' "$SHARE/dind.tar" nestrun-test/dind-base:latest >/dev/null &&
    # the repository's current entrypoint over the cached tarball's
    mkdir -p /tmp/dind-ctx && install -m 755 "$SHARE/dind-entrypoint" /tmp/dind-ctx/ &&
    printf 'FROM nestrun-test/dind-base:latest\nCOPY dind-entrypoint /usr/local/bin/dind-entrypoint\n' |
    DOCKER_BUILDKIT=0 docker build -q -t nestrun-test/dind:latest -f - /tmp/dind-ctx >/dev/null
}

# the host side of a container's cgroup (v2 mount of the guest)
host_cgroup() {
  local pid
  pid=$(docker inspect -f '{{.State.Pid}}' "$1")
  echo "/sys/fs/cgroup$(cut -d: -f3 "/proc/$pid/cgroup")"
}

leftovers() { # what a removed container $1 (full id) might leave behind
  local id=$1
  grep -c "$id" /proc/self/mountinfo
  find /sys/fs/cgroup -name "*$id*" 2>/dev/null | wc -l
  ls /run/nestrun-subid 2>/dev/null | wc -l
  pgrep -fc "fuse-serve.*$id" || true
}
# leftovers_detail ID: what leftovers counted, on INFO lines
leftovers_detail() {
  grep "$1" /proc/self/mountinfo | cut -d' ' -f5 | sed 's/^/INFO   left mount: /' | head -5
  ls -la /run/nestrun-subid 2>&1 | sed 's/^/INFO   lease dir: /' | head -8
  journalctl -u docker -u containerd --no-pager 2>/dev/null | grep -i -E 'nestrun|error' | tail -5 | sed 's/^/INFO   log: /'
}
# check_gone NAME ID
check_gone() {
  local got
  got=$(leftovers "$2" | xargs)
  check "$1" "0 0 0 0" "$got"
  [[ "$got" == "0 0 0 0" ]] || leftovers_detail "$2"
}

suite() {
  local B=nestrun-test/busybox D=nestrun-test/dind t0 out id cg

  [[ -e $SHARE/only-dind ]] || suite_basic
  suite_dind
}

suite_basic() {
  local B=nestrun-test/busybox t0 out id cg
  check "docker cgroup driver" "$DRIVER" "$(docker info -f '{{.CgroupDriver}}')"
  check "docker cgroup version" 2 "$(docker info -f '{{.CgroupVersion}}')"

  t0=$(now_ms)
  out=$(docker run --rm --runtime nested $B echo hi 2>&1)
  check "docker run --rm --runtime nested busybox echo hi" hi "$out"
  info "[$DRIVER] run --rm echo hi took $(($(now_ms) - t0)) ms"

  out=$(docker run --rm --runtime nested -m 256m $B grep MemTotal /proc/meminfo 2>&1)
  check "-m 256m: /proc/meminfo MemTotal" "MemTotal:         262144 kB" "$out"

  out=$(docker run --rm --runtime nested --cpus 1 $B grep -c ^processor /proc/cpuinfo 2>&1)
  check "--cpus 1: processors in /proc/cpuinfo" 1 "$out"

  out=$(docker run --rm --runtime nested --cpus 1 $B cat /sys/devices/system/cpu/online 2>&1)
  check "--cpus 1: /sys/devices/system/cpu/online" 0 "$out"

  # update, then stop
  docker rm -f smoke-upd >/dev/null 2>&1
  if docker run -d --name smoke-upd --runtime nested -m 256m --memory-swap 512m $B sleep 1000 >/dev/null 2>&1; then
    cg=$(host_cgroup smoke-upd)
    info "[$DRIVER] container cgroup on the host: $cg"
    check "run -d -m 256m: host memory.max" 268435456 "$(cat "$cg/memory.max" 2>&1)"
    out=$(docker update --memory 384m --memory-swap 768m smoke-upd 2>&1)
    check "docker update --memory 384m" smoke-upd "$out"
    check "docker update: host memory.max" 402653184 "$(cat "$cg/memory.max" 2>&1)"
    check "docker update: MemTotal inside" "MemTotal:         393216 kB" "$(docker exec smoke-upd grep MemTotal /proc/meminfo 2>&1)"
    t0=$(now_ms)
    out=$(docker stop -t 3 smoke-upd 2>&1)
    check "docker stop" smoke-upd "$out"
    info "[$DRIVER] docker stop -t 3 of sleep (pid 1 ignores TERM) took $(($(now_ms) - t0)) ms"
    check "docker stop: state" exited "$(docker inspect -f '{{.State.Status}}' smoke-upd 2>&1)"
    check "docker stop: cgroup gone" no "$([[ -d $cg ]] && echo yes || echo no)"
    out=$(docker start smoke-upd 2>&1)
    check "docker start after stop" smoke-upd "$out"
    check "restarted: MemTotal inside" "MemTotal:         393216 kB" "$(docker exec smoke-upd grep MemTotal /proc/meminfo 2>&1)"
    id=$(docker inspect -f '{{.Id}}' smoke-upd)
    docker rm -f smoke-upd >/dev/null 2>&1
    check_gone "rm -f: nothing left (mounts, cgroups, leases, fuse)" "$id"
  else
    fail "run -d -m 256m" "$(docker run -d --name smoke-upd2 --runtime nested -m 256m $B true 2>&1 | tail -1)"
  fi

}

suite_dind() {
  local D=nestrun-test/dind t0 out id cg
  # nested DinD
  docker rm -f smoke-dind >/dev/null 2>&1
  t0=$(now_ms)
  if ! docker run -d --name smoke-dind --runtime nested -m 1g $D >/dev/null 2>&1; then
    fail "dind starts" "$(docker logs smoke-dind 2>&1 | tail -3)"
    return
  fi
  local i ok=0
  for ((i = 0; i < 120; i++)); do
    docker exec smoke-dind docker info >/dev/null 2>&1 && { ok=1; break; }
    [[ "$(docker inspect -f '{{.State.Running}}' smoke-dind 2>&1)" == true ]] || break
    sleep 0.5
  done
  if [[ $ok == 0 ]]; then
    fail "inner dockerd answers" "$(docker logs smoke-dind 2>&1 | tail -5 | tr '\n' '|') $(docker exec smoke-dind tail -5 /var/log/dockerd.log 2>&1 | tr '\n' '|')"
  else
    pass "inner dockerd answers"
    info "[$DRIVER] dind run -d -> inner docker info: $(($(now_ms) - t0)) ms"
    check "inner storage driver" overlay2 "$(docker exec smoke-dind docker info -f '{{.Driver}}' 2>&1)"
    check "inner cgroup version" 2 "$(docker exec smoke-dind docker info -f '{{.CgroupVersion}}' 2>&1)"
    for ((i = 0; i < 60; i++)); do
      docker exec smoke-dind docker image inspect busybox >/dev/null 2>&1 && break
      sleep 0.5
    done
    out=$(docker exec smoke-dind docker run --rm -m 64m busybox cat /sys/fs/cgroup/memory.max 2>&1)
    check "inner docker run -m 64m: its memory.max" 67108864 "$out"
    out=$(docker exec smoke-dind docker run --rm busybox echo inner-hi 2>&1)
    check "inner docker run echo" inner-hi "$out"
  fi
  check "docker exec joins the init's leaf (/init), not the container's cgroup" "0::/init" "$(docker exec smoke-dind cat /proc/self/cgroup 2>&1)"
  cg=$(dirname "$(host_cgroup smoke-dind)")
  # delegation: sub-cgroups with controllers below the container's init leaf
  out=$(docker exec smoke-dind sh -c '
    set -e; c=/sys/fs/cgroup; mkdir -p $c/smoke/leaf
    echo "+memory +pids" > $c/smoke/cgroup.subtree_control
    echo 100M > $c/smoke/leaf/memory.max; echo 50 > $c/smoke/leaf/pids.max
    sh -c "echo \$\$ > $c/smoke/leaf/cgroup.procs; cat /proc/self/cgroup"
    cat $c/smoke/leaf/memory.max $c/smoke/leaf/pids.max' 2>&1 | xargs)
  check "delegation: sub-cgroup with memory+pids, process moved in" "0::/smoke/leaf 104857600 50" "$out"
  check "delegation: the sub-cgroup on the host" 104857600 "$(cat "$cg/smoke/leaf/memory.max" 2>&1)"
  out=$(docker exec smoke-dind sh -c 'echo max > /sys/fs/cgroup/memory.max && echo RAISED || echo refused' 2>/dev/null)
  check "cannot raise its own memory.max" refused "$out"
  out=$(docker exec smoke-dind sh -c 'echo max > /sys/fs/cgroup/pids.max && echo RAISED || echo refused' 2>/dev/null)
  check "cannot raise its own pids.max" refused "$out"
  check "host memory.max unchanged" 1073741824 "$(cat "$cg/memory.max" 2>&1)"
  check "MemTotal inside dind" "MemTotal:        1048576 kB" "$(docker exec smoke-dind grep MemTotal /proc/meminfo 2>&1)"
  id=$(docker inspect -f '{{.Id}}' smoke-dind)
  t0=$(now_ms)
  docker rm -f smoke-dind >/dev/null 2>&1
  info "[$DRIVER] rm -f of dind with inner containers took $(($(now_ms) - t0)) ms"
  check_gone "dind rm -f: nothing left (mounts, cgroups, leases, fuse)" "$id"
  check "dind rm -f: container cgroup dir gone" no "$([[ -d $cg ]] && echo yes || echo no)"
}

for DRIVER in systemd cgroupfs; do
  # systemd is docker 20.10's default driver on cgroup v2
  opts=
  [[ $DRIVER == systemd ]] || opts=', "exec-opts": ["native.cgroupdriver=cgroupfs"]'
  conf="{ \"runtimes\": { \"nested\": { \"path\": \"/usr/local/bin/nestrun\" } }$opts }"
  if [[ "$(cat /etc/docker/daemon.json)" != "$conf" ]]; then
    echo "$conf" >/etc/docker/daemon.json
    systemctl restart docker
  fi
  if ! wait_docker; then
    fail "dockerd answers" "$(journalctl -u docker --no-pager | tail -5 | tr '\n' '|')"
    continue
  fi
  if ! docker image inspect nestrun-test/dind >/dev/null 2>&1; then
    t0=$(now_ms)
    if import_images; then info "images imported in $(($(now_ms) - t0)) ms"; else fail "docker import of the test images" "see run.log"; break; fi
  fi
  suite
done

echo "$PASSED passed, $FAILED failed"

# --hold (debugging): run the share's cmd-N.sh files as they appear, until "stop" appears
if [[ -e $SHARE/hold ]]; then
  n=0
  while [[ ! -e $SHARE/stop ]]; do
    if [[ -e $SHARE/cmd-$n.sh ]]; then
      bash "$SHARE/cmd-$n.sh" >"$SHARE/cmd-$n.out.tmp" 2>&1
      mv "$SHARE/cmd-$n.out.tmp" "$SHARE/cmd-$n.out"
      n=$((n + 1))
    fi
    sleep 1
  done
fi
