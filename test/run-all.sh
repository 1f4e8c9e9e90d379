#!/usr/bin/env bash
# npm test: build, unit tests on this host, end-to-end tests against real kernels (in the VM where this
# host has no ublk). Ends with one line `total: N passed, N failed, N skipped`.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

npm run --silent build || { echo "total: 0 passed, 1 failed (build failed)"; exit 1; }
export DMREMAP_BUILT=1 # the unit tests' global setup need not build again

status=0
node node_modules/vitest/vitest.mjs run --config vitest.config.ts --reporter=default --reporter=json \
  --outputFile.json=/tmp/dmremap-unit-report.json || status=1
node test/report.mjs /tmp/dmremap-unit-report.json unit | tee -a "$log" || status=1

bash test/vm/run-e2e.sh 2>&1 | tee >(tr -d '\r' | grep -aoE 'e2e-[^:]*: [0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?' >>"$log") || status=1
sleep 0.2 # let the tee's process substitution flush

awk '{ for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^skipped/) s += $i } }
     END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
if grep -qE ' [1-9][0-9]* failed' "$log"; then status=1; fi
[[ $(grep -c 'e2e-' "$log") -ge 1 ]] || { echo "e2e: no result line"; status=1; }
exit "$status"
