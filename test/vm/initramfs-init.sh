#!/bin/busybox sh
# /init of the test VM's initramfs (PID 1, busybox only). Not run on the host.
#
# Job: load the 9p chain (modules decompressed on the host and insmod'ed in
# modules.dep order, listed in /modules/order), mount the host's root read-only
# over virtio-9p at /newroot, give it the writable scratch mounts, mount the
# host-side control share (/run/dmremap-vm: boot script in, exit status out),
# chroot and run the boot script, then write the exit status back and power
# off. Whatever happens, we must end in poweroff: if PID 1 exits the kernel
# panics (harmless with panic=-1 + -no-reboot, but the status would be lost).
# shellcheck shell=sh
/bin/busybox --install -s /bin
export PATH=/bin

status=125 # "harness failure" until the command itself has run
ctl=/newroot/run/dmremap-vm
ctl_ok=

die() {
  echo "vm-init: $*" >&2
  finish
}

finish() {
  if [ -n "$ctl_ok" ]; then
    echo "$status" >"$ctl/status.tmp" && mv "$ctl/status.tmp" "$ctl/status"
    sync
  fi
  # No need to unmount cleanly: the root is read-only and the control share is
  # 9p (writes are synchronous to the host with cache=none).
  poweroff -f
  sleep 10
  echo o >/proc/sysrq-trigger
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

while read -r m; do
  [ -n "$m" ] || continue
  insmod "/modules/$m" || die "insmod $m failed"
done </modules/order

mkdir -p /newroot
# msize: 9p's per-request payload; 512 KiB makes large reads (node, the addon,
# fio) far fewer round trips. cache=loose lets the guest cache pages and
# dentries; the export is read-only and nothing on the host that the VM reads
# changes while it runs, so there is nothing to go stale.
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=524288,cache=loose \
  hostroot /newroot || die "mounting host root over 9p failed"

for d in proc sys dev tmp run root var/tmp; do
  [ -d "/newroot/$d" ] || die "/$d missing on host root"
done
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
# The control share first, at /ctl: it says which host paths below the scratch mounts must stay visible.
mkdir -p /ctl
mount -t 9p -o rw,trans=virtio,version=9p2000.L,msize=524288,cache=none \
  vmctl /ctl || die "mounting control share failed"
ctl=/ctl
ctl_ok=1
[ -f /ctl/keep ] || die "no keep list in control share"
mkdir -p /keep
: >/keep.list
i=0
while read -r p; do
  [ -n "$p" ] || continue
  i=$((i + 1))
  mkdir -p "/keep/$i"
  mount -o bind "/newroot$p" "/keep/$i" || die "cannot hold on to $p"
  echo "$i $p" >>/keep.list
done <"/ctl/keep"

mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=1777 tmpfs /newroot/var/tmp
mount -t tmpfs -o mode=755 tmpfs /newroot/run
mount -t tmpfs -o mode=700 tmpfs /newroot/root
mount -t debugfs debugfs /newroot/sys/kernel/debug 2>/dev/null || true
while read -r i p; do
  mkdir -p "/newroot$p" && mount -o move "/keep/$i" "/newroot$p" || die "cannot put $p back"
done </keep.list

mkdir -p /newroot/run/dmremap-vm
mount -o move /ctl /newroot/run/dmremap-vm || die "moving the control share failed"
ctl=/newroot/run/dmremap-vm

[ -f "$ctl/boot.sh" ] || die "no boot script in control share"

# Make the VM kernel's modules appear at /lib/modules/<ver> so that plain
# `modprobe` (the host's kmod) works in the guest. The host root is read-only
# and may not even have /lib/modules (containers without a kernel), so we
# cannot mount over a directory there. Instead, stack a read-only overlay on
# the host's lib dir: the extracted kernel package's lib/ (only modules/ in
# it) above the host's own. Both layers are on the 9p mount.
read -r modlib <"$ctl/modlib" || die "no modlib in control share"
libdir=/newroot/lib
[ -L "$libdir" ] && libdir="$(readlink -f "$libdir")" # merged /usr: usr/lib
mount -t overlay -o "ro,lowerdir=/newroot$modlib:$libdir" overlay "$libdir" ||
  die "overlay of kernel modules on $libdir failed"

# The boot script (written by run.sh) runs test/vm/guest-init.sh, which loads
# the kernel modules and then the command, with the console as its terminal.
chroot /newroot /bin/bash /run/dmremap-vm/boot.sh </dev/console >/dev/console 2>&1
status=$?
finish
