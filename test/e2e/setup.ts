// Every e2e file starts here: the suite needs root and ublk, and fails loudly (never skips) without them.
import fs from 'node:fs';
import { expect } from 'vitest';
import { armHungTaskDetector, kernelTrouble, ublkNodes } from './helpers.js';

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
