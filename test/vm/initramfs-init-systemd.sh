#!/bin/busybox sh
# /init of the test VM's initramfs for `run.sh --init systemd` (PID 1 until it hands over to systemd; busybox
# only). Not run on the host.
#
# Like initramfs-init.sh it loads the 9p chain and mounts the host's root read-only over virtio-9p, but then it
# stacks an overlay on it (a tmpfs as the upper layer) so that the whole root is writable - /etc, /var,
# /usr/local - and every change is thrown away at power-off. Into that root it puts the VM kernel's modules
# (links in /lib/modules), the units run.sh wrote into the control share (the test target and service, the
# masks) and fresh tmpfs on /tmp, /var/tmp, /dev/shm and /run (the control share moved to /run/dmremap-vm),
# then switch_root's to /lib/systemd/systemd, the host's own. systemd keeps the mounts it finds there.
# The test service (dmremap-vm.service, started by dmremap-vm.target, which the kernel command line names)
# runs the command, writes its status to the control share and powers off.
#
# Anything that fails before systemd runs ends in poweroff with status 125 (harness failure).
# shellcheck shell=sh
/bin/busybox --install -s /bin
export PATH=/bin

status=125
ctl_ok=

die() {
  echo "vm-init: $*" >&2
  if [ -n "$ctl_ok" ]; then
    echo "$status" >/ctl/status.tmp && mv /ctl/status.tmp /ctl/status
    sync
  fi
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

mkdir -p /lower /upper /newroot /ctl
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=524288,cache=loose \
  hostroot /lower || die "mounting host root over 9p failed"
mount -t 9p -o rw,trans=virtio,version=9p2000.L,msize=524288,cache=none \
  vmctl /ctl || die "mounting control share failed"
ctl_ok=1
for f in keep modlib units masked; do
  [ -f "/ctl/$f" ] || die "no $f in control share"
done

# The writable root: the host's, read-only, under a tmpfs. 9p is fine as a lower layer (not as an upper one).
mount -t tmpfs -o mode=755 tmpfs /upper || die "tmpfs for the overlay failed"
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot ||
  die "overlay on the host root failed"

for d in proc sys dev tmp run var/tmp etc; do
  [ -d "/newroot/$d" ] || die "/$d missing on host root"
done
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts

# Host paths below the scratch mounts (a checkout in /tmp): held from the lower layer, put back on top.
mkdir -p /keep
: >/keep.list
i=0
while read -r p; do
  [ -n "$p" ] || continue
  i=$((i + 1))
  mkdir -p "/keep/$i"
  mount -o bind "/lower$p" "/keep/$i" || die "cannot hold on to $p"
  echo "$i $p" >>/keep.list
done </ctl/keep
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=1777 tmpfs /newroot/var/tmp
mount -t tmpfs -o mode=755 tmpfs /newroot/run
while read -r i p; do
  mkdir -p "/newroot$p" && mount -o move "/keep/$i" "/newroot$p" || die "cannot put $p back"
done </keep.list

# The VM kernel's modules at /lib/modules/<ver>: links into the extracted kernel package (seen over 9p at
# its host path), so that modprobe, systemd-modules-load and udev find them.
read -r modlib </ctl/modlib || die "no modlib in control share"
mkdir -p /newroot/lib/modules || die "cannot create /lib/modules"
for v in "/lower$modlib/modules/"*; do
  [ -d "$v" ] || die "no kernel modules in $modlib/modules"
  ln -sfn "$modlib/modules/${v##*/}" "/newroot/lib/modules/${v##*/}" || die "cannot link modules ${v##*/}"
done

# The host may be a container: systemd takes /.dockerenv (or /run/.containerenv, on our fresh /run: absent)
# to mean it runs in one, and then ignores the kernel command line and starts no udev. This VM is no container.
rm -f /newroot/.dockerenv || die "cannot hide /.dockerenv"

# The test units, and the units that cannot work (or only cost time) in the VM masked.
mkdir -p /newroot/etc/systemd/system
while read -r u; do
  [ -n "$u" ] || continue
  cp "/ctl/$u" "/newroot/etc/systemd/system/$u" || die "cannot install unit $u"
done </ctl/units
while read -r u; do
  [ -n "$u" ] || continue
  ln -sfn /dev/null "/newroot/etc/systemd/system/$u" || die "cannot mask $u"
done </ctl/masked

mkdir -p /newroot/run/dmremap-vm
mount -o move /ctl /newroot/run/dmremap-vm || die "moving the control share failed"
ctl_ok=
[ -x /newroot/lib/systemd/systemd ] || die "no /lib/systemd/systemd on the host (apt-get install systemd)"

exec switch_root /newroot /lib/systemd/systemd
