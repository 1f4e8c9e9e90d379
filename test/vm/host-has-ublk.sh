#!/usr/bin/env bash
# Exit 0 if this host can run ublk devices directly, else 1.
#
# True when /dev/ublk-control exists, or appears after `modprobe ublk_drv`
# (which needs root and a kernel that ships the module). The e2e suite uses
# this to decide between running directly on the host and booting the QEMU VM
# (test/vm/run.sh). Set DMREMAP_FORCE_VM=1 to always answer "no" (use the VM).
set -euo pipefail

[[ -z "${DMREMAP_FORCE_VM:-}" ]] || exit 1
[[ -c /dev/ublk-control ]] && exit 0

if command -v modprobe >/dev/null && [[ $(id -u) -eq 0 ]]; then
  modprobe ublk_drv >/dev/null 2>&1 || exit 1
  # With udev the node may appear a moment after the module loads.
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [[ -c /dev/ublk-control ]] && exit 0
    sleep 0.1
  done
fi
exit 1
