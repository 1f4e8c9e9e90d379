// Every e2e file starts here: the suite needs root and ublk, and fails loudly (never skips) without them.
import fs from 'node:fs';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { armHungTaskDetector, kernelTrouble, Scratch, ublkNodes } from './helpers.js';

export function requireUblkHost(): void {
  expect(process.getuid?.(), 'the e2e suite must run as root').toBe(0);
  expect(fs.existsSync('/dev/ublk-control'), '/dev/ublk-control is missing (modprobe ublk_drv, or run in the VM)').toBe(true);
  expect(ublkNodes(), 'ublk devices left over from before the suite').toEqual([]);
  armHungTaskDetector();
}

/** After each test: no device nodes left, and the kernel reported no hung task or bug. */
export function expectCleanKernel(): void {
  expect(ublkNodes()).toEqual([]);
  expect(kernelTrouble()).toEqual([]);
}

/**
 * The hooks most e2e files share: the suite needs a ublk host; each test gets a fresh Scratch, cleaned up
 * after it (`first` runs before that, e.g. to stop a native device that holds the scratch's loop
 * devices), and the kernel is then checked clean. The object returned stands for the current test's
 * Scratch (it forwards to it), so a file declares it once at the top.
 */
export function scratchPerTest(first?: () => Promise<void> | void): Scratch {
  let current: Scratch | null = null;
  beforeAll(requireUblkHost);
  beforeEach(() => {
    current = new Scratch();
  });
  afterEach(async () => {
    await first?.();
    await current?.cleanup();
    current = null;
    expectCleanKernel();
  });
  return new Proxy({} as Scratch, {
    get(_target, key) {
      if (current === null) throw new Error('the scratch exists only while a test runs');
      const v: unknown = Reflect.get(current, key);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(current) : v;
    },
  });
}

/** True in the one e2e run that covers what no kernel changes (test/vm/run-e2e.sh sets DMREMAP_E2E_PRIMARY=1 for it). */
export const onPrimaryKernel = process.env.DMREMAP_E2E_PRIMARY === '1';

/**
 * A describe block that runs in the primary run only (skipped, and counted so, on the other kernels). What
 * belongs here: cases whose outcome depends on userspace alone (blkid and sfdisk output, CLI messages, the
 * registry, option parsing) and would only repeat on a second kernel. What does not: anything that goes
 * through ublk, io_uring, device-mapper, the block layer's O_EXCL or error reporting; those run on every kernel,
 * except a slow soak-like case whose kernel path another case exercises on every kernel (it says which).
 * To run such a file by hand, set DMREMAP_E2E_PRIMARY=1 (test/vm/run.sh passes every DMREMAP_* to the guest).
 */
export const primaryKernelOnly = describe.runIf(onPrimaryKernel);

/** One test that runs in the primary run only: the same rule as primaryKernelOnly, for a case inside a block that runs everywhere. */
export const itPrimary = it.runIf(onPrimaryKernel);
