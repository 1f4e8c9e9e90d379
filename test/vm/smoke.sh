#!/usr/bin/env bash
# Smoke test of the VM environment itself; run it inside the VM:
#   bash test/vm/run.sh --suite trixie -- bash test/vm/smoke.sh
# Checks everything the e2e suite relies on: ublk control node, loop with
# direct I/O, device-mapper without udev (linear + error + flakey targets),
# scsi_debug with a medium error, null_blk, ext4, node, fio, read-only repo.
set -euo pipefail
step() { echo "--- $*"; }

step "kernel $(uname -r)"
ls -l /dev/ublk-control

step "repo is read-only, /tmp writable"
if touch "$PWD/.vm-write-test" 2>/dev/null; then
  echo "FAIL: could write to $PWD"; exit 1
fi
df -h /tmp | tail -1

step "loop with direct I/O"
truncate -s 64M /tmp/backing.img
loopdev="$(losetup -f --show --direct-io=on /tmp/backing.img)"
losetup -l "$loopdev"
dd if=/dev/zero of="$loopdev" bs=1M count=4 oflag=direct status=none

step "device-mapper without udev: linear | error | linear"
# 64 MiB loop = 131072 sectors; sectors 2048..2055 fail.
dmsetup create smoke_err --table "0 2048 linear $loopdev 0
2048 8 error
2056 129016 linear $loopdev 2056"
dmsetup mknodes
ls -l /dev/mapper/smoke_err
if dd if=/dev/mapper/smoke_err of=/dev/null bs=4096 skip=256 count=1 iflag=direct status=none 2>/tmp/dd.err; then
  echo "FAIL: read of error segment succeeded"; exit 1
fi
echo "error segment read failed as expected: $(cat /tmp/dd.err)"
dmsetup remove smoke_err

step "dm-flakey"
dmsetup create smoke_flakey --table "0 131072 flakey $loopdev 0 0 5 1 error_writes"
dmsetup mknodes
dmsetup table smoke_flakey
dmsetup remove smoke_flakey
losetup -d "$loopdev"

step "scsi_debug with a medium error"
modprobe scsi_debug dev_size_mb=16 medium_error_start=1000 medium_error_count=8 opts=2
sdev=""
for _ in $(seq 50); do
  sdev="$(grep -l scsi_debug /sys/block/sd*/device/model 2>/dev/null | head -n1 | cut -d/ -f4 || true)"
  [[ -n "$sdev" && -b "/dev/$sdev" ]] && break
  sleep 0.1
done
[[ -n "$sdev" ]] || { echo "FAIL: no scsi_debug disk"; exit 1; }
echo "scsi_debug disk: /dev/$sdev"
if dd if="/dev/$sdev" of=/dev/null bs=512 skip=1000 count=1 iflag=direct status=none 2>/tmp/dd.err; then
  echo "FAIL: read of medium error succeeded"; exit 1
fi
echo "medium error read failed as expected: $(cat /tmp/dd.err)"
rmmod scsi_debug

step "null_blk"
modprobe null_blk nr_devices=1 gb=1
ls -l /dev/nullb0
rmmod null_blk

step "ext4"
mkfs.ext4 -q -F /tmp/backing.img
mkdir -p /tmp/mnt
mount -o loop /tmp/backing.img /tmp/mnt
df -h /tmp/mnt | tail -1
umount /tmp/mnt

step "tools"
node --version
fio --version
node -e 'require("crypto").randomBytes(16); console.log("node ok, cpus", require("os").cpus().length)'
echo "SMOKE OK"
