#!/usr/bin/env bash
# A refused `add` timed with two builds, interleaved so that both see the same load (the TCG VM is noisy):
#   test/vm/run.sh -- bash test/vm/timing/ab.sh BEFORE_DIR [ROUNDS]
# BEFORE_DIR holds another build (bin/, dist/, package.json; build/ and node_modules/ linked to this tree's).
set -u
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
before="$(cd "$1" && pwd)"
rounds="${2:-5}"
d="$(mktemp -d /tmp/ab.XXXXXX)"
truncate -s 64M "$d/main.img"; truncate -s 32M "$d/spare.img"
main="$(losetup -f --show --direct-io=on "$d/main.img")"
spare="$(losetup -f --show --direct-io=on "$d/spare.img")"
mkfs.ext4 -q -F -L backup "$spare"
t() {
  local label="$1"; shift
  local s=$EPOCHREALTIME
  "$@" >"$d/out" 2>"$d/err"
  local rc=$? e=$EPOCHREALTIME
  printf '%-22s %8.3f s  rc=%s  %s\n' "$label" "$(awk -v a="$s" -v b="$e" 'BEGIN{print b-a}')" "$rc" "$(head -c 120 "$d/err")"
}
for i in $(seq "$rounds"); do
  for which in before after; do
    dir="$repo"; [[ $which == before ]] && dir="$before"
    t "$which detached" node "$dir/bin/dmremap-ublk.js" add --main "$main" --spare "$spare" --json
    t "$which --foreground" node "$dir/bin/dmremap-ublk.js" add --main "$main" --spare "$spare" --json --foreground
  done
  t "node -e 0" node -e 0
done
losetup -d "$main" "$spare"
rm -rf "$d"
