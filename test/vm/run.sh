#!/usr/bin/env bash
# Run a command inside a throw-away QEMU VM whose kernel has ublk.
#
# Usage:
#   test/vm/run.sh [--suite trixie|sid] [--init busybox|systemd] [--mem MiB] [--smp N]
#                  [--timeout SEC] [--cwd DIR] [--env NAME[=VALUE]]... -- <command...>
#
# The VM boots a Debian kernel (test/vm/fetch-kernel.sh) under TCG, mounts
# this host's root file system read-only over virtio-9p and chroots into it,
# so the command sees the host's node, fio, dmsetup and the built project at
# the same paths. /tmp, /var/tmp, /run and /root are fresh tmpfs: tests write
# only there. The modules ublk_drv, dm-mod, dm-flakey, loop, ext4 and sd_mod
# are loaded first (test/vm/guest-init.sh); scsi_debug and null_blk can be
# loaded by the command with plain `modprobe`.
#
# --init systemd boots the host's systemd as PID 1 instead (initramfs-init-systemd.sh): the host root
# under a throw-away overlay (writable everywhere, tmpfs), udev, journald, systemd-modules-load, and the
# command run by a service (dmremap-vm.service) once sysinit.target is reached; nothing is preloaded and
# DM_DISABLE_UDEV is not set (udev runs). Units that cannot work in the VM are masked. Default: busybox.
#
# Output: the kernel's console is the serial port, wired to our stdout; the
# command's stdout and stderr both arrive there (merged, live).
# Exit status: the command's; 124 if the VM timed out; 125 if the harness
# failed (VM crashed, setup failed).
#
# Defaults come from the environment too: DMREMAP_VM_SUITE, DMREMAP_VM_MEM,
# DMREMAP_VM_SMP, DMREMAP_VM_TIMEOUT. DMREMAP_VM_VERBOSE=1 prints timings;
# DMREMAP_VM_CMDLINE adds kernel arguments; DMREMAP_VM_MODULES="a b" loads
# more modules before the command; DMREMAP_VM_KEEP_GOING=1 runs the command
# even if that setup failed (to debug the VM).
# Passed into the VM automatically: PATH, CI, TERM (dumb unless stdout is a
# terminal), LANG, LC_ALL, NO_COLOR, FORCE_COLOR, DEBUG and every DMREMAP_*
# variable; HOME is /root (a tmpfs). Stdin is /dev/null unless ours is a tty.
#
# The VM sees the host's files as they are when it reads them (cache=loose):
# build before starting it, and do not change the tree while it runs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

suite="${DMREMAP_VM_SUITE:-trixie}"
init=busybox
mem="${DMREMAP_VM_MEM:-3072}"
smp="${DMREMAP_VM_SMP:-2}"
timeout_s="${DMREMAP_VM_TIMEOUT:-1200}"
cwd="$PWD"
envs=()

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit "${1:-2}"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --suite) suite="$2"; shift 2 ;;
    --init) init="$2"; shift 2 ;;
    --mem) mem="$2"; shift 2 ;;
    --smp) smp="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --cwd) cwd="$2"; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --) shift; break ;;
    -h | --help) usage 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage ;;
  esac
done
[[ $# -gt 0 ]] || { echo "run.sh: no command given" >&2; usage; }
case "$suite" in trixie | sid) ;; *) echo "run.sh: bad --suite $suite" >&2; exit 2 ;; esac
case "$init" in busybox | systemd) ;; *) echo "run.sh: bad --init $init (busybox or systemd)" >&2; exit 2 ;; esac
for n in "$mem" "$smp" "$timeout_s"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: not a positive number: $n" >&2; exit 2; }
done
cwd="$(cd "$cwd" && pwd)" # absolute; the guest sees the same path

log() { echo "[vm] $*" >&2; }
t_start=$(date +%s.%N)

# --- Kernel -----------------------------------------------------------------
kver="$(bash "$here/fetch-kernel.sh" "$suite")"
kdir="$(readlink -f "$repo/.cache/vm/$suite")" # .cache may be a symlink: the guest resolves paths without it
modroot="$kdir/root"
moddir="$modroot/lib/modules/$kver"

# --- Initramfs ----------------------------------------------------------------
# Contents: static busybox, our /init, and the modules needed to mount the
# host root over virtio-9p, decompressed (busybox insmod cannot be relied on
# to handle .ko.xz/.ko.zst) and listed in load order. Cached, keyed on every
# input, so it is rebuilt only when one of them changes.
busybox="$(command -v busybox || true)"
[[ -n "$busybox" ]] || { log "busybox not found (apt-get install busybox-static)"; exit 125; }
# The initramfs has no libc: busybox must be static (ldd fails on those).
if LC_ALL=C ldd "$busybox" >/dev/null 2>&1; then
  log "$busybox is dynamically linked (apt-get install busybox-static)"
  exit 125
fi

# Modules for the 9p root: virtio transport (built in on Debian, but do not
# assume), 9p over virtio. Their dependencies come from modules.dep.
# overlay: to stack the kernel's modules over the host's /lib (see init).
want=(virtio virtio_ring virtio_pci 9pnet_virtio 9p overlay)

# Prints the path (relative to $moddir) of module $1, or nothing if built in.
mod_path() {
  local name="$1" alt
  alt="${name//_/-}"
  grep -E "(^|/)(${name}|${alt})\.ko(\.[a-z]+)?:" "$moddir/modules.dep" |
    head -n1 | cut -d: -f1 || true
}

# Emit the load order: dependencies first (modules.dep lists a module's
# dependencies with the deepest last, so walk them in reverse), each once.
declare -A seen=()
order=()
add_mod() {
  local path="$1" deps d i
  [[ -n "${seen[$path]:-}" ]] && return 0
  seen[$path]=1
  deps="$(grep -E "^${path//./\\.}:" "$moddir/modules.dep" | cut -d: -f2 || true)"
  read -r -a d <<<"$deps"
  for ((i = ${#d[@]} - 1; i >= 0; i--)); do add_mod "${d[$i]}"; done
  order+=("$path")
}
for m in "${want[@]}"; do
  p="$(mod_path "$m")"
  if [[ -n "$p" ]]; then add_mod "$p"; fi
done

# Each --init mode has its own /init and its own image (systemd-initramfs-*.cpio for systemd), so that the
# two never replace each other's cached image.
if [[ "$init" == systemd ]]; then
  init_script="$here/initramfs-init-systemd.sh"
  image_prefix=systemd-initramfs
else
  init_script="$here/initramfs-init.sh"
  image_prefix=initramfs
fi
key="$( {
  echo "v1 $kver"
  sha256sum "$busybox" "$init_script"
  for p in "${order[@]}"; do sha256sum "$moddir/$p"; done
} | sha256sum | cut -c1-16)"
initrd="$kdir/$image_prefix-$key.cpio"
exec 9>"$kdir/initramfs.lock"
flock 9 # another run.sh may be building the same image right now
if [[ ! -s "$initrd" ]]; then
  log "building initramfs ($kver: ${order[*]##*/})"
  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage"/{bin,dev,proc,sys,newroot,modules}
  cp "$busybox" "$stage/bin/busybox"
  install -m 755 "$init_script" "$stage/init"
  : >"$stage/modules/order"
  for p in "${order[@]}"; do
    base="$(basename "$p")"
    case "$p" in
      *.ko.xz) xz -dc "$moddir/$p" >"$stage/modules/${base%.xz}" ;;
      *.ko.zst) zstd -qdc "$moddir/$p" >"$stage/modules/${base%.zst}" ;;
      *.ko.gz) gzip -dc "$moddir/$p" >"$stage/modules/${base%.gz}" ;;
      *.ko) cp "$moddir/$p" "$stage/modules/$base" ;;
      *) log "unexpected module file $p"; exit 125 ;;
    esac
    echo "${base%.ko*}.ko" >>"$stage/modules/order"
  done
  # Uncompressed: unpacking gzip under TCG costs more than reading 3 MB.
  (cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) >"$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  rm -rf "$stage"
  trap - EXIT
  # Old initramfs images of this suite are stale now.
  find "$kdir" -maxdepth 1 -name "$image_prefix-*.cpio" ! -name "$(basename "$initrd")" -delete
fi
exec 9>&- # unlock

# --- Control share -------------------------------------------------------------
# A small writable 9p share carries the boot script in and the exit status
# out (a file written by the guest's PID 1 after the command ends, then synced
# before poweroff). Unlike a marker line on the console, the command's own
# output cannot forge or garble it.
ctl="$(mktemp -d "${TMPDIR:-/tmp}/dmremap-vm.XXXXXX")"
trap 'rm -rf "$ctl"' EXIT

echo "$modroot/lib" >"$ctl/modlib"
# The guest mounts fresh tmpfs over /tmp, /var/tmp, /run, /root and /dev/shm. A checkout (or a working
# directory) below one of them - CI may clone into /tmp - would vanish: list such paths so that the
# guest carries them over (read-only) onto the same path inside the tmpfs.
for p in "$repo" "$cwd"; do
  case "$p/" in /tmp/* | /var/tmp/* | /run/* | /root/* | /dev/shm/*) echo "$p" ;; esac
done | sort -u >"$ctl/keep"
{
  echo "# generated by test/vm/run.sh"
  q() { printf 'export %s=%q\n' "$1" "$2"; }
  q PATH "$PATH"
  q HOME /root
  # The guest's stdout is always a terminal (the serial console). When ours
  # is not (CI logs), say so via TERM=dumb so tools skip colours and cursor
  # tricks that would litter the log.
  if [[ -t 1 ]]; then q TERM "${TERM:-linux}"; else q TERM dumb; fi
  for v in CI LANG LC_ALL NO_COLOR FORCE_COLOR DEBUG; do
    if [[ -n "${!v+x}" ]]; then q "$v" "${!v}"; fi
  done
  while IFS= read -r v; do
    q "$v" "${!v}"
  done < <(compgen -e | grep -E '^DMREMAP_' || true)
  for e in "${envs[@]}"; do
    if [[ "$e" == *=* ]]; then q "${e%%=*}" "${e#*=}"
    elif [[ -n "${!e+x}" ]]; then q "$e" "${!e}"
    fi
  done
  # The guest command's stdin is the serial console. With no terminal on our
  # side (CI), nothing will ever be typed there: give it /dev/null so a
  # command that reads stdin ends instead of waiting for the timeout.
  if [[ "$init" == systemd ]]; then
    # Run by dmremap-vm.service (guest-systemd.sh): no preloading, udev runs. Its stdin is /dev/null.
    printf 'cd %q || { echo "vm: cannot cd to %q" >&2; exit 125; }\n' "$cwd" "$cwd"
    echo 'if [[ -n "${DMREMAP_VM_VERBOSE:-}" ]]; then read -r up _ </proc/uptime; echo "[vm] guest ready (systemd): kernel $(uname -r), uptime ${up}s" >&2; fi'
    printf 'exec'
  else
    if [[ ! -t 0 ]]; then echo 'exec </dev/null'; fi
    printf 'exec /bin/bash %q %q --' "$here/guest-init.sh" "$cwd"
  fi
  printf ' %q' "$@"
  echo
} >"$ctl/boot.sh"

if [[ "$init" == systemd ]]; then
  # The units initramfs-init-systemd.sh copies into the guest's /etc/systemd/system. The kernel command line
  # names dmremap-vm.target: sysinit (udev, journald, modules-load, tmpfiles), basic, then the command's
  # service. A boot that fails to emergency or rescue mode lists the failed units and powers off (status 125)
  # rather than waiting for the timeout; so does a target that is not reached in 600 s.
  console_out=$'StandardInput=null\nStandardOutput=tty\nStandardError=inherit\nTTYPath=/dev/console\nTTYReset=no\nTTYVHangup=no'
  cat >"$ctl/dmremap-vm.target" <<UNIT
[Unit]
Description=dmremap-ublk test VM (test/vm/run.sh --init systemd)
Requires=basic.target dmremap-vm.service
After=basic.target
AllowIsolate=yes
JobTimeoutSec=600
JobTimeoutAction=poweroff-force
UNIT
  cat >"$ctl/dmremap-vm.service" <<UNIT
[Unit]
Description=The test VM's command (test/vm/run.sh --init systemd)
After=basic.target

[Service]
Type=exec
ExecStart=/bin/bash $here/guest-systemd.sh
$console_out
TimeoutStartSec=infinity
UNIT
  for u in emergency rescue; do
    cat >"$ctl/$u.service" <<UNIT
[Unit]
Description=Test VM: the boot failed ($u mode), powering off
DefaultDependencies=no

[Service]
Type=oneshot
$console_out
ExecStart=-/bin/sh -c 'echo "vm: systemd went to $u mode; failed units:"; systemctl --no-pager --failed; echo 125 >/run/dmremap-vm/status.tmp && mv /run/dmremap-vm/status.tmp /run/dmremap-vm/status; sync'
ExecStart=/bin/systemctl poweroff --force --force
UNIT
  done
  printf '%s\n' dmremap-vm.target dmremap-vm.service emergency.service rescue.service >"$ctl/units"
  # What cannot work in the VM (no network, no terminal but the console) or only costs boot time. Names
  # that do not exist on the host are harmless.
  printf '%s\n' getty.target getty@tty1.service serial-getty@ttyS0.service console-getty.service \
    timers.target remote-fs.target network.target network-online.target networking.service \
    systemd-networkd.service systemd-resolved.service systemd-timesyncd.service systemd-pstore.service \
    systemd-firstboot.service systemd-repart.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
    systemd-logind.service dbus.socket dbus.service cron.service ssh.service postgresql.service \
    prometheus.service e2scrub_reap.service systemd-pcrphase.service systemd-pcrphase-sysinit.service \
    systemd-update-utmp.service systemd-hwdb-update.service ldconfig.service >"$ctl/masked"
fi

# --- Boot --------------------------------------------------------------------
# -cpu max: TCG's fullest CPU model (has RDRAND, so the guest's RNG seeds at
#   once and node does not block on getrandom).
# -no-reboot + panic=-1: a kernel panic ends QEMU instead of rebooting forever.
# mitigations=off: speculative-execution mitigations only cost time in TCG.
# multidevs=remap: the host root spans several file systems (/proc, /sys...)
#   whose inode numbers would otherwise collide in the guest.
# loglevel=3 keeps the expected kernel I/O error messages (the tests inject
# errors on purpose) off the console; DMREMAP_VM_CMDLINE appends kernel
# arguments, e.g. DMREMAP_VM_CMDLINE=loglevel=7 to see them.
# No tsc= option: tsc=nowatchdog (tried against a rare TCG oops, int3 in sched_clock_cpu on 7.2, when the
#   watchdog marks the emulated TSC unstable) let a vCPU's TSC jump go uncorrected: a trixie run saw
#   "soft lockup - CPU#1 stuck for 436180s" and a 60 s wait expire at once. tsc=unstable avoids both but
#   made clock reads 2.5x slower (HPET). The oops while booting is retried by run-e2e.sh.
cmdline="console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off rdinit=/init"
if [[ "$init" == systemd ]]; then cmdline+=" systemd.unit=dmremap-vm.target systemd.show_status=error"; fi
cmdline+="${DMREMAP_VM_CMDLINE:+ $DMREMAP_VM_CMDLINE}"
qemu=(
  qemu-system-x86_64
  -nodefaults -no-user-config -no-reboot
  -machine pc -accel tcg -cpu max -smp "$smp" -m "$mem"
  -display none -monitor none -serial stdio -nic none
  -kernel "$kdir/vmlinuz" -initrd "$initrd" -append "$cmdline"
  -fsdev "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap"
  -device "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"
  -fsdev "local,id=vmctl,path=$ctl,security_model=none"
  -device "virtio-9p-pci,fsdev=vmctl,mount_tag=vmctl"
)

if [[ -n "${DMREMAP_VM_VERBOSE:-}" ]]; then
  log "suite $suite, kernel $kver, ${mem} MiB, $smp CPUs, timeout ${timeout_s}s, cwd $cwd"
fi
t_boot=$(date +%s.%N)
set +e
# --foreground: QEMU keeps the terminal (if any) for the serial console.
# -k: if QEMU ignores SIGTERM, SIGKILL it 10 s later.
timeout --foreground -k 10 "$timeout_s" "${qemu[@]}"
qrc=$?
set -e
# QEMU puts a terminal on stdin into raw mode; if it was killed it could not
# restore it.
if [[ -t 0 ]]; then stty sane 2>/dev/null || true; fi
t_end=$(date +%s.%N)

if [[ -n "${DMREMAP_VM_VERBOSE:-}" ]]; then
  log "$(awk -v a="$t_start" -v b="$t_boot" -v c="$t_end" \
    'BEGIN{printf "prepare %.1fs, vm %.1fs, total %.1fs", b-a, c-b, c-a}')"
fi

if [[ $qrc -eq 124 || $qrc -eq 137 ]]; then
  log "TIMEOUT: the VM ran longer than ${timeout_s}s and was killed (--timeout/DMREMAP_VM_TIMEOUT)"
  exit 124
fi
if [[ ! -s "$ctl/status" ]]; then
  log "the VM ended without reporting an exit status (QEMU exit $qrc; kernel panic or harness failure - see console above)"
  exit 125
fi
status="$(cat "$ctl/status")"
[[ "$status" =~ ^[0-9]+$ ]] || { log "garbled exit status '$status'"; exit 125; }
exit "$status"
