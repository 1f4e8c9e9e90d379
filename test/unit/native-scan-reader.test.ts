// The scanner's native planning and reads (native/test/scan_reader_test.cc), built by `npm run build` as a
// host executable (regular files, no kernel): they count in the unit run and fail it on any failed check.
// Then the addon's scanRead arguments and "not running" answers on a real native Device that is never
// started (no ublk needed), and the fake addon's scanRead bounds, which mirror native's.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadNative, type NativeDevice } from '../../src/native.js';
import { FAKE_SCAN_MAX_FAILURES, FAKE_SCAN_NARROW_MAX_BYTES, type FakeDevice, type FakeNative } from '../../src/testing/fake-native.js';
import { fakeFor, makeWorld, type World } from './helpers.js';

const exe = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'build', 'Release', 'scan_reader_test');

describe('native scan reader (C++ unit tests)', () => {
  it('passes every check of scan_reader_test', () => {
    expect(fs.existsSync(exe), `${exe} is missing: run npm run build`).toBe(true);
    const r = spawnSync(exe, [], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/^scan_reader_test: [1-9]\d* checks, 0 failed$/m);
  });
});

describe('native scanRead arguments and a device not running', () => {
  let dev: NativeDevice;
  beforeEach(() => {
    dev = new (loadNative().Device)({
      mainPath: '/dev/null', sparePath: '/dev/null', queues: 1, depth: 1, blockSize: 4096, sizeBytes: 1n << 20n,
      maxIoBytes: 1 << 16, discard: false, devId: -1, onEvent: () => undefined,
    });
  });

  it('refuses bytes that are not a whole number from 512 to 16 MiB with a RangeError (never wrapped to 32 bits)', () => {
    for (const bytes of [2 ** 32 + 4096, 4096.5, 0, 256, (16 << 20) + 512, -4096, Number.NaN]) {
      expect(() => dev.scanRead(0n, bytes), String(bytes)).toThrow(RangeError);
    }
  });

  it('rejects with ENODEV before start and after stop', async () => {
    await expect(dev.scanRead(0n, 4096)).rejects.toMatchObject({ code: 'ENODEV' });
    await dev.stop();
    await expect(dev.scanRead(0n, 4096, true)).rejects.toMatchObject({ code: 'ENODEV' });
  });

  it('counts table generations: 1, then one more per publish', () => {
    expect(dev.tableGeneration()).toBe(1);
    dev.setRemapTable(BigUint64Array.of(3n), BigUint64Array.of(0n), Uint8Array.of(0));
    expect(dev.tableGeneration()).toBe(2);
    dev.updateRemapTable(BigUint64Array.of(3n), BigUint64Array.of(0n), Uint8Array.of(0x80));
    expect(dev.tableGeneration()).toBe(3);
  });
});

describe('fake scanRead bounds (as native)', () => {
  const BS = 512;
  let w: World;
  let native: FakeNative;
  let dev: FakeDevice;
  beforeEach(async () => {
    w = makeWorld();
    native = fakeFor(w);
    dev = new native.Device({
      mainPath: w.main, sparePath: w.spare, queues: 1, depth: 4, blockSize: BS, sizeBytes: 4n << 20n, maxIoBytes: 1 << 16,
      discard: false, devId: -1, onEvent: () => undefined,
    }) as FakeDevice;
    await dev.start();
  });
  afterEach(async () => {
    await dev.stop();
    w.cleanup();
  });

  it('cuts pieces at 1 MiB boundaries whatever maxIoBytes is, covers the range and names the table generation', async () => {
    const r = await dev.scanRead(BigInt((1 << 20) - (1 << 16)), 3 << 16);
    expect(r.segments.map((s) => [s.block, s.blocks])).toEqual([[1920, 128], [2048, 256]]);
    expect([r.coveredBytes, r.stopped, r.generation]).toEqual([3 << 16, null, 1]);
  });

  it('stops a narrow call at the cap, and any call after the failure budget, saying where', async () => {
    const narrow = await dev.scanRead(0n, 2 * FAKE_SCAN_NARROW_MAX_BYTES, true);
    expect([narrow.segments.length, narrow.coveredBytes, narrow.stopped]).toEqual([FAKE_SCAN_NARROW_MAX_BYTES / BS, FAKE_SCAN_NARROW_MAX_BYTES, 'narrow_cap']);
    dev.setRemapTable(new BigUint64Array(0), new BigUint64Array(0), new Uint8Array(0));
    // 64 failing blocks from block 8.
    native.cfg.failReads.push({ device: 'main', offset: 8 * BS, bytes: 64 * BS, code: 'EIO' });
    const r = await dev.scanRead(0n, 80 * BS, true);
    expect(r.segments.map((s) => s.errno)).toEqual([...Array<number>(8).fill(0), ...Array<number>(FAKE_SCAN_MAX_FAILURES).fill(5)]);
    expect([r.coveredBytes, r.stopped, r.generation]).toEqual([(8 + FAKE_SCAN_MAX_FAILURES) * BS, 'failures', 2]);
  });
});
