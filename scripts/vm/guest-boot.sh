#!/bin/sh
# /usr/local/sbin/nestrun-guest-boot in the scripts/cgroup2-vm guest: mounts
# the host's share (9p tag "nestrun") at /mnt/nestrun, runs its run.sh with the
# output in /mnt/nestrun/results.txt, and powers the guest off whatever happens.
modprobe 9pnet_virtio 2>/dev/null
modprobe 9p 2>/dev/null
mkdir -p /mnt/nestrun
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 nestrun /mnt/nestrun; then
  /bin/bash /mnt/nestrun/run.sh >/mnt/nestrun/results.txt 2>/mnt/nestrun/run.log
  echo "nestrun-guest-boot: run.sh exited $?" >/dev/console
  sync
  umount /mnt/nestrun
else
  echo "nestrun-guest-boot: cannot mount the 9p share" >/dev/console
fi
systemctl poweroff --no-block
