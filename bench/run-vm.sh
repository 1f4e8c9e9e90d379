#!/usr/bin/env bash
# npm run bench: the fio benchmark in the VM (or directly on a host with ublk). Writes the JSON it prints
# to bench/results/<kernel>-<time>.json on the host, since the repo is read-only inside the VM.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
suite="${DMREMAP_VM_SUITE:-trixie}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if bash "$repo/test/vm/host-has-ublk.sh"; then
  node "$here/guest-bench.mjs" | tee "$out"
else
  bash "$repo/test/vm/run.sh" --suite "$suite" --timeout 1800 --env BENCH_ROUNDS --env BENCH_RUNTIME \
    --env BENCH_SIZE_MIB -- node "$here/guest-bench.mjs" | tee "$out"
fi
json="$(grep -a '^BENCH_JSON ' "$out" | tail -1 | sed 's/^BENCH_JSON //' | tr -d '\r')"
[[ -n "$json" ]] || { echo "bench: no result line in the output" >&2; exit 1; }
mkdir -p "$here/results"
file="$here/results/fio-$suite-$(date -u +%Y%m%dT%H%M%SZ).json"
printf '%s\n' "$json" >"$file"
echo "bench: wrote $file"
