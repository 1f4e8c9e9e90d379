#!/usr/bin/env bash
# Runs INSIDE the test VM, after the initramfs has chroot'ed into the host's
# root (read-only 9p, with tmpfs on /tmp, /run, /root, /var/tmp). Started by
# the boot script that test/vm/run.sh writes; not meant to be run by hand.
#
# Usage: guest-init.sh <cwd> -- <command...>
#
# The VM kernel's modules are already visible at /lib/modules/<ver> (an
# overlay set up by the initramfs), so the host's kmod works as usual; tests
# can run plain `modprobe scsi_debug ...` / `modprobe null_blk ...`.
# 1. Loads what every test needs: ublk_drv, dm-mod, dm-flakey, loop, ext4,
#    sd_mod. scsi_debug and null_blk are NOT preloaded: tests load them with
#    their own parameters (medium_error_start=..., etc.) and a default-loaded
#    instance would have to be removed first.
# 2. Checks /dev/ublk-control and /dev/mapper/control exist, then runs the
#    command in <cwd>. Our exit status is the command's (125 = setup failed).
set -euo pipefail

cwd="$1"
shift
[[ "${1:-}" == -- ]] && shift

# DMREMAP_VM_KEEP_GOING=1: report setup failures but run the command anyway
# (to debug the VM itself from the command).
fail() {
  echo "guest-init: $*" >&2
  [[ -n "${DMREMAP_VM_KEEP_GOING:-}" ]] || exit 125
}

# modprobe treats built-in modules as success, so the list does not depend on
# how a given Debian kernel was configured.
preload=(ublk_drv dm_mod dm_flakey loop ext4 sd_mod)
# Extra modules may be requested from the host: DMREMAP_VM_MODULES="a b c".
read -r -a extra <<<"${DMREMAP_VM_MODULES:-}"
# In parallel: under TCG most of a module load is the kernel copying,
# hashing (signature check) and relocating it, and the VM has 2+ CPUs.
pids=()
for m in "${preload[@]}" "${extra[@]}"; do
  modprobe "$m" &
  pids+=("$!:$m")
done
for p in "${pids[@]}"; do
  wait "${p%%:*}" || fail "modprobe ${p#*:} failed"
done

# devtmpfs creates the nodes asynchronously to the module's init in theory;
# in practice they are there at once, but wait briefly rather than flake.
for node in /dev/ublk-control /dev/mapper/control /dev/loop-control; do
  for _ in $(seq 50); do
    [[ -e "$node" ]] && break
    sleep 0.1
  done
  [[ -e "$node" ]] || fail "$node did not appear"
done

# No udev in the VM: libdevmapper must create/remove /dev/mapper nodes itself
# and must not wait for udev cookies.
export DM_DISABLE_UDEV=1

# /var/log is the host's, read-only: detached daemons log to a tmpfs instead.
export DMREMAP_LOG_DIR="${DMREMAP_LOG_DIR:-/run/dmremap-ublk-log}"

if [[ -n "${DMREMAP_VM_VERBOSE:-}" ]]; then
  read -r up _ </proc/uptime
  echo "[vm] guest ready: kernel $(uname -r), uptime ${up}s" >&2
fi

cd "$cwd" || fail "cannot cd to $cwd"
exec "$@"
