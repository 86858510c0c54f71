#!/usr/bin/env bash
# Usage: scripts/build-images.sh [--docker-host unix:///path.sock] [--force] [--no-dind]
#                               [--no-systemd] [--no-dind-trixie] [--no-dind-sid]
#
# Builds nestrun's test images from the host's own Debian packages (no registry
# is reachable) and `docker import`s them into a dockerd:
#   nestrun-test/busybox:latest  busybox-static + applets in /bin, passwd/group
#                                (root, nobody, user 1000), CMD sh
#   nestrun-test/dind:latest     dockerd/docker/containerd/shim/runc/docker-init/
#                                docker-proxy/iptables(legacy+nft)/ip/mount + libs
#                                + busybox; /images/busybox.tar baked in;
#                                ENTRYPOINT docker-init -- dind-entrypoint
#   nestrun-test/systemd:latest  Debian bookworm (debootstrap --variant=minbase, from
#                                $NESTRUN_DEBIAN_MIRROR, default deb.debian.org) with
#                                systemd, dbus, docker.io, containerd, runc, iptables
#                                (legacy), iproute2, procps; docker.service enabled,
#                                units that cannot work in a container masked,
#                                /images/busybox.tar loaded by a oneshot unit;
#                                CMD /sbin/init, STOPSIGNAL SIGRTMIN+3.
#                                Needs the Debian mirror on the first build (then
#                                cached); if debootstrap fails the image is skipped
#                                with a warning. --no-systemd skips it.
#   nestrun-test/dind-trixie:latest  Debian trixie minbase (debootstrap, same mirror
#                                and cache) with docker.io + docker-cli 26, containerd, runc, tini,
#                                iptables, iproute2, procps, busybox + the dind
#                                entrypoint/wait/modprobe helpers; same ENTRYPOINT
#                                and /images/busybox.tar as nestrun-test/dind. Its
#                                docker can run an inner --privileged here. If
#                                debootstrap fails it is skipped with a warning and
#                                the tests that need it fail. --no-dind-trixie skips it.
#   nestrun-test/dind-sid:latest  the same on Debian sid (today's engines: docker.io 28,
#                                containerd 2, runc 1.3, docker-buildx, glibc's newest
#                                syscalls such as fchmodat2) plus tar, ca-certificates;
#                                the integration tests `sid::` use it. Skipped with a
#                                warning if debootstrap fails. --no-dind-sid skips it.
# Root filesystems are cached as tarballs under $NESTRUN_IMAGE_CACHE
# (default /var/cache/nestrun-test/images/*.tar) and rebuilt only when missing
# (or --force). An image is (re)imported when it is missing from the target
# dockerd or was imported from a different tarball (label nestrun.tar-sha256).
# Target dockerd: --docker-host, else $DOCKER_HOST, else the private test
# dockerd of scripts/dockerd.sh (unix:///run/nestrun-test/docker.sock).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

# bump when the image contents change, so caches are rebuilt
IMAGE_VERSION=7
FORCE=0
WANT_DIND=1
WANT_SYSTEMD=1
# bump when the systemd image contents change (separate from IMAGE_VERSION: it
# is slow to rebuild and needs the network)
SYSTEMD_IMAGE_VERSION=1
WANT_TRIXIE=1
# the same for nestrun-test/dind-trixie
TRIXIE_IMAGE_VERSION=1
WANT_SID=1
# the same for nestrun-test/dind-sid (sid moves: --force or a bump takes today's packages)
SID_IMAGE_VERSION=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --docker-host) DOCKER_HOST=$2; shift 2 ;;
    --docker-host=*) DOCKER_HOST=${1#*=}; shift ;;
    --force) FORCE=1; shift ;;
    --no-dind) WANT_DIND=0; shift ;;
    --no-systemd) WANT_SYSTEMD=0; shift ;;
    --no-dind-trixie) WANT_TRIXIE=0; shift ;;
    --no-dind-sid) WANT_SID=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
done
export DOCKER_HOST=${DOCKER_HOST:-$NESTRUN_DOCKER_HOST}
dk() { "$DOCKER_CLI" "$@"; }
dk version --format '{{.Server.Version}}' >/dev/null 2>&1 || die "no dockerd answering at $DOCKER_HOST (start one: scripts/dockerd.sh start)"

mkdir -p "$NESTRUN_IMAGE_CACHE"
WORK=$(mktemp -d /var/tmp/nestrun-images.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
IMAGES_DIR="$NESTRUN_REPO/scripts/images"

# --- helpers ------------------------------------------------------------------
# map a host path to its place in a merged-/usr image
usr_path() {
  case "$1" in
    /bin/* | /sbin/* | /lib/* | /lib64/*) echo "/usr$1" ;;
    *) echo "$1" ;;
  esac
}

is_elf() { [[ "$(head -c 4 "$1" 2>/dev/null | tr -d '\0')" == $'\x7fELF' ]]; }

declare -A COPIED=()
# add_file ROOT SRC [DEST]: copy SRC (dereferenced) into ROOT, plus its ELF libs
add_file() {
  local root=$1 src=$2 dest=${3:-}
  [[ -n "$dest" ]] || dest=$(usr_path "$src")
  [[ -z "${COPIED[$root$dest]:-}" ]] || return 0
  [[ -e "$src" ]] || die "missing host file $src (is its package installed? run scripts/install-deps.sh)"
  COPIED[$root$dest]=1
  mkdir -p "$root$(dirname "$dest")"
  cp -L --preserve=mode "$src" "$root$dest"
  if is_elf "$src"; then
    local lib
    while read -r lib; do
      [[ -n "$lib" ]] || continue
      add_file "$root" "$lib"
    done < <(ldd "$src" 2>/dev/null | awk '/=> \//{print $3} /^[[:space:]]*\/[^ ]*ld-linux/{print $1}')
  fi
}

make_usrmerged_root() {
  local root=$1
  mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64,etc,proc,sys,dev,run,var/tmp,var/log,root,home}
  install -d -m 1777 "$root/tmp"
  ln -s usr/bin "$root/bin"
  ln -s usr/sbin "$root/sbin"
  ln -s usr/lib "$root/lib"
  ln -s usr/lib64 "$root/lib64"
}

write_passwd() {
  local root=$1
  cat >"$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
user:x:1000:1000:user:/home/user:/bin/sh
P
  cat >"$root/etc/group" <<'G'
root:x:0:
docker:x:999:user
nogroup:x:65534:
user:x:1000:
G
  install -d -o 1000 -g 1000 "$root/home/user"
}

pack() { # pack ROOT OUT.tar
  tar --numeric-owner --sort=name --mtime='2020-01-01 00:00Z' -C "$1" -cf "$2.tmp" .
  mv -f "$2.tmp" "$2"
}

# import_image NAME TAR CHANGE...: import if missing or from another tarball
import_image() {
  local name=$1 tar=$2; shift 2
  local sha cur
  sha=$(sha256sum "$tar" | cut -d' ' -f1)
  cur=$(dk image inspect -f '{{index .Config.Labels "nestrun.tar-sha256"}}' "$name" 2>/dev/null || true)
  if [[ "$cur" == "$sha" && "$FORCE" == 0 ]]; then
    log "$name up to date in $DOCKER_HOST"
    return 0
  fi
  local args=() c
  for c in "$@" "LABEL nestrun.tar-sha256=$sha"; do args+=(--change "$c"); done
  dk import "${args[@]}" "$tar" "$name" >/dev/null
  log "imported $name ($(du -h "$tar" | cut -f1) tarball)"
}

# --- busybox ------------------------------------------------------------------
BUSYBOX_TAR="$NESTRUN_IMAGE_CACHE/busybox-v$IMAGE_VERSION.tar"
build_busybox() {
  local root="$WORK/busybox"
  mkdir -p "$root"/{bin,etc,proc,sys,dev,root,home,var/tmp,run}
  install -d -m 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  if ldd "$root/bin/busybox" >/dev/null 2>&1; then
    die "/bin/busybox is not static (install busybox-static)"
  fi
  local a
  for a in $(/bin/busybox --list); do
    [[ "$a" == busybox ]] || ln -s busybox "$root/bin/$a"
  done
  ln -s bin "$root/sbin"
  write_passwd "$root"
  pack "$root" "$BUSYBOX_TAR"
}
if [[ ! -s "$BUSYBOX_TAR" || "$FORCE" == 1 ]]; then
  log "building $BUSYBOX_TAR"
  build_busybox
fi
import_image nestrun-test/busybox:latest "$BUSYBOX_TAR" \
  'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'CMD ["sh"]'

# --- dind ---------------------------------------------------------------------
# The name carries a hash of the helper scripts it bakes in, so changing them rebuilds it.
HELPERS_SHA=$(cat "$IMAGES_DIR/dind-entrypoint" "$IMAGES_DIR/dind-wait" "$IMAGES_DIR/modprobe" | sha256sum | cut -c1-12)
DIND_TAR="$NESTRUN_IMAGE_CACHE/dind-v$IMAGE_VERSION-$HELPERS_SHA.tar"
build_dind() {
  local root="$WORK/dind" f
  make_usrmerged_root "$root"
  # busybox first; real binaries copied afterwards replace its applets
  cp /bin/busybox "$root/usr/bin/busybox"
  local a
  for a in $(/bin/busybox --list); do
    [[ "$a" == busybox ]] || ln -sf busybox "$root/usr/bin/$a"
  done
  for f in /usr/sbin/dockerd /usr/bin/docker /usr/bin/containerd \
    /usr/bin/containerd-shim-runc-v2 /usr/bin/ctr /usr/sbin/runc /usr/sbin/docker-proxy \
    /usr/sbin/xtables-legacy-multi /usr/sbin/xtables-nft-multi /usr/bin/ip \
    /usr/bin/mount /usr/bin/umount /usr/bin/nsenter /usr/bin/unshare /usr/bin/findmnt; do
    rm -f "$root$f"
    add_file "$root" "$f"
  done
  # docker-init is tini (docker.io: /usr/bin/docker-init -> tini-static)
  rm -f "$root/usr/bin/docker-init"
  add_file "$root" "$(readlink -f /usr/bin/docker-init)" /usr/bin/docker-init
  # iptables: every legacy/nft name, plus xtables extensions and their libs
  local t
  for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore \
    arptables ebtables; do
    ln -sf xtables-legacy-multi "$root/usr/sbin/$t-legacy"
    ln -sf xtables-nft-multi "$root/usr/sbin/$t-nft"
  done
  rm -f "$root"/usr/sbin/{arptables,ebtables}-legacy* # those are nft-only in Debian
  for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sf xtables-legacy-multi "$root/usr/sbin/$t"
  done
  mkdir -p "$root/usr/lib/x86_64-linux-gnu/xtables"
  for f in /usr/lib/x86_64-linux-gnu/xtables/*.so; do
    add_file "$root" "$f"
  done
  # helpers
  install -D -m 755 "$IMAGES_DIR/modprobe" "$root/usr/sbin/modprobe"
  install -D -m 755 "$IMAGES_DIR/dind-entrypoint" "$root/usr/local/bin/dind-entrypoint"
  install -D -m 755 "$IMAGES_DIR/dind-wait" "$root/usr/local/bin/dind-wait"
  # /etc
  write_passwd "$root"
  cat >"$root/etc/nsswitch.conf" <<'N'
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
N
  for f in /etc/protocols /etc/services /etc/ethertypes /etc/os-release; do
    [[ -e "$f" ]] && cp -L "$f" "$root$f"
  done
  if [[ -e /etc/ssl/certs/ca-certificates.crt ]]; then
    install -D -m 644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  fi
  mkdir -p "$root/etc/docker" "$root/var/lib/docker" "$root/var/lib/containerd" "$root/images"
  # the inner dockerd loads this instead of pulling
  dk save -o "$root/images/busybox.tar" nestrun-test/busybox:latest
  pack "$root" "$DIND_TAR"
}
if [[ "$WANT_DIND" == 1 ]]; then
  if [[ ! -s "$DIND_TAR" || "$FORCE" == 1 ]]; then
    log "building $DIND_TAR"
    build_dind
  fi
  import_image nestrun-test/dind:latest "$DIND_TAR" \
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'VOLUME /var/lib/docker' \
    'ENTRYPOINT ["/usr/bin/docker-init", "--", "/usr/local/bin/dind-entrypoint"]' \
    'CMD []'
fi

# --- systemd ------------------------------------------------------------------
SYSTEMD_TAR="$NESTRUN_IMAGE_CACHE/systemd-v$SYSTEMD_IMAGE_VERSION.tar"
# downloaded .debs are kept here, so a rebuild does not fetch them again
DEBOOTSTRAP_CACHE="$NESTRUN_IMAGE_CACHE/debootstrap-debs"
# debootstrap_root SUITE ROOT PACKAGES: a minbase Debian SUITE in ROOT, plus PACKAGES
debootstrap_root() {
  local suite=$1 root=$2 include=$3
  command -v debootstrap >/dev/null || { log "warning: debootstrap missing (run scripts/install-deps.sh)"; return 1; }
  mkdir -p "$DEBOOTSTRAP_CACHE"
  if ! debootstrap --variant=minbase --cache-dir="$DEBOOTSTRAP_CACHE" --include="$include" \
    "$suite" "$root" "${NESTRUN_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$WORK/debootstrap-$suite.log" 2>&1; then
    log "warning: debootstrap $suite failed; last lines of its log:"
    tail -n 15 "$WORK/debootstrap-$suite.log" >&2
    return 1
  fi
}
# strip_root ROOT: package caches, lists, docs (image size)
strip_root() {
  rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/* \
    "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/info/* "$1"/usr/share/locale/* \
    "$1"/var/log/*.log "$1"/var/log/apt/*
}
build_systemd() {
  local root="$WORK/systemd" u
  debootstrap_root bookworm "$root" systemd,systemd-sysv,dbus,docker.io,containerd,runc,iptables,iproute2,procps || return 1
  # the inner dockerd uses legacy iptables (no nf_tables in a user namespace on every kernel)
  chroot "$root" update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
  chroot "$root" update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null
  # a per-container machine id: systemd writes a transient one over an empty file
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
  # units that cannot work (or make no sense) in a container: hardware, kernel
  # modules and file systems the runtime owns, consoles, periodic maintenance
  for u in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
    systemd-udev-trigger.service systemd-udev-settle.service \
    getty@tty1.service getty.target console-getty.service \
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
    sys-fs-fuse-connections.mount dev-hugepages.mount dev-mqueue.mount \
    systemd-modules-load.service systemd-remount-fs.service systemd-pstore.service \
    systemd-firstboot.service systemd-hwdb-update.service systemd-journald-audit.socket \
    e2scrub_reap.service e2scrub_all.timer fstrim.timer apt-daily.timer \
    apt-daily-upgrade.timer dpkg-db-backup.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$u"
  done
  rm -f "$root/etc/systemd/system/getty.target.wants/getty@tty1.service"
  # dockerd (and containerd, docker.socket) enabled: debootstrap's postinst
  # does it already on Debian; make sure, as `systemctl enable` would
  mkdir -p "$root/etc/systemd/system/multi-user.target.wants" "$root/etc/systemd/system/sockets.target.wants"
  ln -sf /lib/systemd/system/docker.service "$root/etc/systemd/system/multi-user.target.wants/docker.service"
  ln -sf /lib/systemd/system/containerd.service "$root/etc/systemd/system/multi-user.target.wants/containerd.service"
  ln -sf /lib/systemd/system/docker.socket "$root/etc/systemd/system/sockets.target.wants/docker.socket"
  install -m 644 "$IMAGES_DIR/systemd/nestrun-load-images.service" "$root/etc/systemd/system/"
  ln -sf /etc/systemd/system/nestrun-load-images.service \
    "$root/etc/systemd/system/multi-user.target.wants/nestrun-load-images.service"
  # multi-user, not graphical
  ln -sf /lib/systemd/system/multi-user.target "$root/etc/systemd/system/default.target"
  # the journal to the console too, so `docker logs` shows the boot
  mkdir -p "$root/etc/systemd/journald.conf.d"
  printf '[Journal]\nForwardToConsole=yes\nMaxLevelConsole=info\n' >"$root/etc/systemd/journald.conf.d/nestrun.conf"
  mkdir -p "$root/images"
  dk save -o "$root/images/busybox.tar" nestrun-test/busybox:latest
  strip_root "$root"
  pack "$root" "$SYSTEMD_TAR"
}
if [[ "$WANT_SYSTEMD" == 1 ]]; then
  if [[ ! -s "$SYSTEMD_TAR" || "$FORCE" == 1 ]]; then
    log "building $SYSTEMD_TAR (debootstrap: a few minutes)"
    build_systemd || log "warning: nestrun-test/systemd not built; its tests will fail"
  fi
  if [[ -s "$SYSTEMD_TAR" ]]; then
    import_image nestrun-test/systemd-rootfs:latest "$SYSTEMD_TAR" \
      'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      'CMD ["/sbin/init"]'
    # docker 20.10's import/commit --change cannot set STOPSIGNAL: a one-line
    # build on top (no context, no network) does
    base_id=$(dk image inspect -f '{{.Id}}' nestrun-test/systemd-rootfs:latest)
    cur=$(dk image inspect -f '{{index .Config.Labels "nestrun.base-id"}}' nestrun-test/systemd:latest 2>/dev/null || true)
    if [[ "$cur" != "$base_id" || "$FORCE" == 1 ]]; then
      printf 'FROM nestrun-test/systemd-rootfs:latest\nSTOPSIGNAL SIGRTMIN+3\nCMD ["/sbin/init"]\nLABEL nestrun.base-id=%s\n' "$base_id" |
        DOCKER_BUILDKIT=0 dk build -q -t nestrun-test/systemd:latest - >/dev/null
      log "built nestrun-test/systemd:latest (STOPSIGNAL SIGRTMIN+3)"
    else
      log "nestrun-test/systemd:latest up to date in $DOCKER_HOST"
    fi
  fi
fi

# --- dind-trixie ---------------------------------------------------------------
# The dind image's entrypoint on Debian trixie's docker.io 26 / containerd 1.7 / runc 1.1:
# docker >= 23 gives an inner `docker run --privileged` the capabilities its runtime
# actually has, where 20.10 asks for all of the kernel's (fails on hosts whose bounding set
# lacks one, see SECURITY.md F2).
# Its name carries the versions and a hash of the helper scripts it bakes in (shared with
# nestrun-test/dind: HELPERS_SHA above), so changing them rebuilds it.
TRIXIE_TAR="$NESTRUN_IMAGE_CACHE/dind-trixie-v$TRIXIE_IMAGE_VERSION-$IMAGE_VERSION-$HELPERS_SHA.tar"
# dind_debian_root SUITE ROOT PACKAGES: a Debian SUITE with PACKAGES and the dind helpers
dind_debian_root() {
  local root=$2
  debootstrap_root "$1" "$root" "$3" || return 1
  # dockerd runs modprobe for bridge/netfilter modules: the host must have them loaded
  install -D -m 755 "$IMAGES_DIR/modprobe" "$root/usr/local/sbin/modprobe"
  install -D -m 755 "$IMAGES_DIR/dind-entrypoint" "$root/usr/local/bin/dind-entrypoint"
  install -D -m 755 "$IMAGES_DIR/dind-wait" "$root/usr/local/bin/dind-wait"
  mkdir -p "$root/etc/docker" "$root/var/lib/docker" "$root/var/lib/containerd" "$root/images"
  dk save -o "$root/images/busybox.tar" nestrun-test/busybox:latest
}
build_dind_trixie() {
  local root="$WORK/dind-trixie"
  dind_debian_root trixie "$root" docker.io,docker-cli,containerd,runc,tini,iptables,iproute2,procps,busybox || return 1
  strip_root "$root"
  pack "$root" "$TRIXIE_TAR"
  # older builds
  find "$NESTRUN_IMAGE_CACHE" -maxdepth 1 -name 'dind-trixie-*.tar' ! -path "$TRIXIE_TAR" -delete
}
# debian_dind NAME TAR BUILDER: build TAR (when missing, or --force) and import it as
# nestrun-test/NAME with the dind entrypoint
debian_dind() {
  local name=$1 tar=$2 builder=$3
  if [[ ! -s "$tar" || "$FORCE" == 1 ]]; then
    log "building $tar (debootstrap: about a minute)"
    "$builder" || log "warning: nestrun-test/$name not built; the tests that need it will FAIL"
  fi
  if [[ -s "$tar" ]]; then
    import_image "nestrun-test/$name:latest" "$tar" \
      'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      'VOLUME /var/lib/docker' \
      'ENTRYPOINT ["/usr/bin/docker-init", "--", "/usr/local/bin/dind-entrypoint"]' \
      'CMD []'
  fi
}
if [[ "$WANT_TRIXIE" == 1 ]]; then
  debian_dind dind-trixie "$TRIXIE_TAR" build_dind_trixie
fi

# --- dind-sid -------------------------------------------------------------------
# The same entrypoint on Debian sid: today's docker.io, containerd 2, runc 1.3, buildx and a
# glibc that uses the newest syscalls (fchmodat2 in tar, docker load/import/cp, builds).
# Named like dind-trixie's; sid changes daily, so the tarball is what was current when built.
SID_TAR="$NESTRUN_IMAGE_CACHE/dind-sid-v$SID_IMAGE_VERSION-$IMAGE_VERSION-$HELPERS_SHA.tar"
build_dind_sid() {
  local root="$WORK/dind-sid"
  dind_debian_root sid "$root" \
    docker.io,docker-cli,docker-buildx,containerd,runc,tini,iptables,iproute2,procps,busybox,tar,ca-certificates || return 1
  # shellcheck disable=SC2016 # dpkg-query's format, not shell
  chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' docker.io docker-cli docker-buildx containerd runc libc6 tar |
    sed 's/^/  /' >&2 || true
  strip_root "$root"
  pack "$root" "$SID_TAR"
  find "$NESTRUN_IMAGE_CACHE" -maxdepth 1 -name 'dind-sid-*.tar' ! -path "$SID_TAR" -delete
}
if [[ "$WANT_SID" == 1 ]]; then
  debian_dind dind-sid "$SID_TAR" build_dind_sid
fi

log "done"
