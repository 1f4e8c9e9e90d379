#!/usr/bin/env bash
# Runs a guest benchmark (default bench/guest-bench.mjs) in the VM, or directly on a host with ublk, and
# writes the JSON it prints to bench/results/<name>-<suite>-<time>.json on the host (the repo is read-only
# inside the VM). Usage: bench/run-vm.sh [guest-script.mjs]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
script="${1:-guest-bench.mjs}"
name="$(basename "$script" .mjs)"
name="${name#guest-}"
suite="${DMREMAP_VM_SUITE:-trixie}"
# The backing files live in the guest's /tmp, a tmpfs of half its memory: 8 GiB of guest memory leaves room
# for the sparse 8 GiB main the remap benchmark writes into.
export DMREMAP_VM_MEM="${DMREMAP_VM_MEM:-8192}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if bash "$repo/test/vm/host-has-ublk.sh"; then
  node "$here/$script" | tee "$out"
else
  bash "$repo/test/vm/run.sh" --suite "$suite" --timeout 1800 --env BENCH_ROUNDS --env BENCH_RUNTIME --env BENCH_SPACING \
    --env BENCH_SIZE_MIB --env BENCH_PHASE --env BENCH_PART_MIB --env BENCH_REMAP_CASES -- node "$here/$script" | tee "$out"
fi
json="$(grep -a '^BENCH_JSON ' "$out" | tail -1 | sed 's/^BENCH_JSON //' | tr -d '\r')"
[[ -n "$json" ]] || { echo "bench: no result line in the output" >&2; exit 1; }
mkdir -p "$here/results"
file="$here/results/$name-$suite-$(date -u +%Y%m%dT%H%M%SZ).json"
printf '%s\n' "$json" >"$file"
echo "bench: wrote $file"
