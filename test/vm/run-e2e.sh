#!/usr/bin/env bash
# The end-to-end suite (test/e2e, vitest) against a real kernel. On a host with ublk it runs directly;
# elsewhere it runs inside the QEMU VM, once per kernel: Debian trixie (6.12) and sid (7.x).
# Each run ends with a line `e2e-<kernel>: N passed, N failed, N skipped`; after the trixie run, the systemd
# run (test/e2e-systemd/service.sh, in the VM booted with systemd as PID 1) ends with
# `e2e-systemd-<kernel>: N passed, N failed`. Exit: 0 only if all passed.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# Each kernel gets 3600 s: room for a machine running at half speed (the first kernel also runs the slow
# cases that are not kernel-specific: power cuts, spare safety, the supervisor's give-up; it took 1,544 s on
# a quiet host in December 2026, so half speed needs about 3,100 s).
suites="${DMREMAP_E2E_SUITES:-trixie sid}"
# DMREMAP_E2E_PRIMARY=1 marks the one run that also covers what is not kernel-specific (test/e2e/setup.ts,
# primaryKernelOnly): the first suite of the list, or the run on a host with ublk. Every DMREMAP_* reaches the guest.

# Runs vitest where the kernel is and prints the closing line; the report goes to /tmp (writable there).
inner="cd '$repo' && rm -f /tmp/dmremap-e2e-commands.ndjson && node node_modules/vitest/vitest.mjs run --config vitest.e2e.config.ts --configLoader runner \
--reporter=default --reporter=json --outputFile.json=/tmp/e2e-report.json; \
node test/report.mjs /tmp/e2e-report.json \"e2e-\$(uname -r)\"; rc=\$?; node test/vm/command-times.mjs; exit \$rc"

status=0
# vm_run NAME LINE STARTED -- RUN.SH-ARGS...: one VM run (test/vm/run.sh), its console in $out; LINE matches the
# start of the guest's closing line (`e2e-6.12...: N passed`), NAME stands for it when it is missing. A guest kernel
# that oopses while booting under TCG (seen: int3 in sched_clock_cpu, 7.2, at 2 s) never reaches the tests:
# it is booted once more; a run whose tests started (its console shows STARTED) is never repeated. A run
# that failed, or that died before printing its closing line, fails the whole (and adds a failure to the count).
vm_run() {
  local name="$1" line="$2" started="$3" rc attempt
  shift 4
  for attempt in 1 2; do
    bash "$here/run.sh" "$@" | tee "$out"
    rc=${PIPESTATUS[0]}
    if [[ $attempt -eq 1 && $rc -ne 0 ]] && ! tr -d '\r' <"$out" | grep -qaF -- "$started" && tr -d '\r' <"$out" | grep -qaE 'Oops|Kernel panic'; then
      echo "=== the kernel failed while booting; booting it again ==="
      continue
    fi
    # TCG running the int3 of sched_clock's live patch as code (7.2, once at 83 s under fio): the emulator's
    # fault, not the tests'; the whole run is repeated once.
    if [[ $attempt -eq 1 && $rc -ne 0 ]] && tr -d '\r' <"$out" | grep -qa 'Oops: int3' && tr -d '\r' <"$out" | grep -qaE 'RIP: [0-9a-f]+:sched_clock'; then
      echo "=== the kernel hit TCG's int3 fault in sched_clock; running the suite again ==="
      continue
    fi
    break
  done
  [[ $rc -eq 0 ]] || status=1
  # (The line may follow terminal escape codes on the console.)
  if ! tr -d '\r' <"$out" | grep -qaE "$line: [0-9]+ passed"; then
    echo "$name: 0 passed, 1 failed (the VM run ended with status $rc before reporting)"
  elif [[ $rc -ne 0 ]] && ! tr -d '\r' <"$out" | grep -qaE "$line: [0-9]+ passed, [1-9][0-9]* failed"; then
    echo "$name: 0 passed, 1 failed (the VM run ended with status $rc after a closing line without failures)"
  fi
}

if bash "$here/host-has-ublk.sh"; then
  DMREMAP_E2E_PRIMARY=1 bash -c "$inner" || status=1
  # systemd as PID 1 with udev needs the VM; on a host with ublk the suite runs without one.
  echo "e2e-systemd: skipped (the host has ublk, so the suite ran without the VM; the systemd run needs it:"
  echo "  bash test/vm/run.sh --init systemd --suite trixie --timeout 900 -- bash $repo/test/e2e-systemd/service.sh)"
else
  out="$(mktemp)"
  trap 'rm -f "$out"' EXIT
  primary=1
  # A partial systemd run (its steps chosen by hand) must not pass for the whole one here.
  if [[ -n "${DMREMAP_E2E_SYSTEMD_STEPS:-}" ]]; then
    echo "run-e2e.sh: DMREMAP_E2E_SYSTEMD_STEPS is ignored here (it is for running test/e2e-systemd/service.sh by hand)"
    unset DMREMAP_E2E_SYSTEMD_STEPS
  fi
  for suite in $suites; do
    export DMREMAP_E2E_PRIMARY=$primary
    primary=0
    echo "=== e2e on Debian $suite kernel (QEMU TCG) ==="
    vm_run "e2e-$suite" "e2e-[0-9][^:]*" RUN -- --suite "$suite" --timeout "${DMREMAP_E2E_TIMEOUT:-3600}" -- bash -c "$inner"
    # The systemd units, the udev rule and install.sh under systemd as PID 1 (test/e2e-systemd/service.sh):
    # one boot of the trixie kernel, nothing kernel-specific, so only with trixie in the list. It took 160 s
    # (whole VM run) to 310 s with other VMs on the host (load 5 on 2 cores); 900 s leaves room for half speed.
    if [[ "$suite" == trixie ]]; then
      echo "=== systemd units on Debian $suite kernel (QEMU TCG, systemd as PID 1) ==="
      vm_run "e2e-systemd-$suite" "e2e-systemd-[^:]*" "---- install" -- --init systemd --suite "$suite" --timeout "${DMREMAP_E2E_SYSTEMD_TIMEOUT:-900}" -- \
        bash "$repo/test/e2e-systemd/service.sh"
    fi
  done
  if [[ " $suites " != *" trixie "* ]]; then
    echo "e2e-systemd: skipped (it runs after the trixie suite, which DMREMAP_E2E_SUITES=\"$suites\" leaves out)"
  fi
fi
exit "$status"
