#!/usr/bin/env bash
# npm run demo: boots the VM (or uses this host where it has ublk) and shows a device's life.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if bash "$here/host-has-ublk.sh"; then
  exec bash "$here/demo-guest.sh"
fi
exec bash "$here/run.sh" --suite "${DMREMAP_VM_SUITE:-trixie}" -- bash "$here/demo-guest.sh"
