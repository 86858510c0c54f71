#!/usr/bin/env bash
# Usage: scripts/build-images.sh [--docker-host unix:///path.sock] [--force] [--no-dind]
#
# Builds nestrun's test images from the host's own Debian packages (no registry
# is reachable) and `docker import`s them into a dockerd:
#   nestrun-test/busybox:latest  busybox-static + applets in /bin, passwd/group
#                                (root, nobody, user 1000), CMD sh
#   nestrun-test/dind:latest     dockerd/docker/containerd/shim/runc/docker-init/
#                                docker-proxy/iptables(legacy+nft)/ip/mount + libs
#                                + busybox; /images/busybox.tar baked in;
#                                ENTRYPOINT docker-init -- dind-entrypoint
# (A systemd-as-PID-1 image is not built yet.)
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
while [[ $# -gt 0 ]]; do
  case "$1" in
    --docker-host) DOCKER_HOST=$2; shift 2 ;;
    --docker-host=*) DOCKER_HOST=${1#*=}; shift ;;
    --force) FORCE=1; shift ;;
    --no-dind) WANT_DIND=0; shift ;;
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
DIND_TAR="$NESTRUN_IMAGE_CACHE/dind-v$IMAGE_VERSION.tar"
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

log "done"
