#!/usr/bin/env bash
# Runs inside the VM (or on a host with ublk): a device created, written, read back and removed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cli=(node "$repo/bin/dmremap-ublk.js")
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "$*"; "$@"; }

cd /tmp
run truncate -s 256M /tmp/main.img
run truncate -s 32M /tmp/spare.img
step "losetup -f --show --direct-io=on /tmp/main.img"; main=$(losetup -f --show --direct-io=on /tmp/main.img); echo "$main"
step "losetup -f --show --direct-io=on /tmp/spare.img"; spare=$(losetup -f --show --direct-io=on /tmp/spare.img); echo "$spare"
step "dmremap-ublk add --main $main --spare $spare"; dev=$("${cli[@]}" add --main "$main" --spare "$spare"); echo "$dev"
run "${cli[@]}" list
run "${cli[@]}" status "$dev"
run dd if=/dev/urandom of=/tmp/pattern bs=1M count=16 status=none
run dd if=/tmp/pattern of="$dev" bs=1M seek=8 oflag=direct status=none
step "dd if=$dev bs=1M skip=8 count=16 iflag=direct | sha256sum  (and the pattern's)"
dd if="$dev" bs=1M skip=8 count=16 iflag=direct status=none | sha256sum
sha256sum </tmp/pattern
run "${cli[@]}" status "$dev"
run "${cli[@]}" del "$dev"
step "ls /dev/ublk*"; ls /dev/ublk* 
losetup -d "$main" "$spare"
