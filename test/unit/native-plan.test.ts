// The native request planner's C++ unit tests (native/test/request_plan_test.cc), built by `npm run build`
// as a host executable (no kernel, no io_uring): they count in the unit run and fail it on any failed check.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { REMAP_FLAG_LOST, REMAP_FLAG_MOVING, REMAP_FLAG_REDIRECT, REMAP_FLAG_REMOVE } from '../../src/native.js';
import { FakeNative, type FakeDevice } from '../../src/testing/fake-native.js';

const exe = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'build', 'Release', 'request_plan_test');

describe('native request planner (C++ unit tests)', () => {
  it('passes every check of request_plan_test', () => {
    expect(fs.existsSync(exe), `${exe} is missing: run npm run build`).toBe(true);
    const r = spawnSync(exe, [], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/^request_plan_test: [1-9]\d* checks, 0 failed$/m);
  });
});

describe('remap entry flags: src/native.ts and native/ agree', () => {
  it('REMAP_FLAG_* are the values of kRemapLost, kRemapMoving, kRemapRedirect (remap_index.h) and kJsRemapRemove (addon.cc)', () => {
    const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'native');
    const header = fs.readFileSync(path.join(root, 'remap_index.h'), 'utf8');
    const shifted = (name: string): number => {
      const m = new RegExp(`constexpr uint32_t ${name} = 1u << (\\d+);`).exec(header);
      if (m === null) throw new Error(`${name} not found in remap_index.h`);
      return 1 << Number(m[1]);
    };
    expect([shifted('kRemapLost'), shifted('kRemapMoving'), shifted('kRemapRedirect')]).toEqual([REMAP_FLAG_LOST, REMAP_FLAG_MOVING, REMAP_FLAG_REDIRECT]);
    const addon = fs.readFileSync(path.join(root, 'addon.cc'), 'utf8');
    expect(Number(/constexpr uint32_t kJsRemapRemove = (0x[0-9a-f]+);/.exec(addon)?.[1])).toBe(REMAP_FLAG_REMOVE);
  });
});

describe('fake addon: lost_written slots', () => {
  it('reports the LOST blocks of a write with their slots, split where blocks or slots stop being consecutive', () => {
    const dir = fs.mkdtempSync(path.join('/tmp', 'dmr-fake-'));
    try {
      const native = new FakeNative({ devDir: dir });
      const dev = new native.Device({
        mainPath: '/dev/null', sparePath: '/dev/zero', queues: 1, depth: 1, blockSize: 4096, sizeBytes: 1048576n,
        maxIoBytes: 1 << 16, discard: false, devId: -1, onEvent: () => undefined,
      }) as FakeDevice;
      // 10-11 LOST at slots 3-4, 12 LOST at slot 9, 13 mapped (not LOST), 14 LOST at 10, 20 LOST outside.
      const e: Array<[number, number, number]> = [[10, 3, 1], [11, 4, 1], [12, 9, 1], [13, 50, 0], [14, 10, 1], [20, 11, 1]];
      dev.setRemapTable(BigUint64Array.from(e.map((x) => BigInt(x[0]))), BigUint64Array.from(e.map((x) => BigInt(x[1]))), Uint8Array.from(e.map((x) => x[2])));
      expect(dev.writtenRanges(9, 7)).toEqual([
        { block: 10, blocks: 2, slot: 3 },
        { block: 12, blocks: 1, slot: 9 },
        { block: 14, blocks: 1, slot: 10 },
      ]);
      expect(dev.writtenRanges(13, 1)).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('fake addon: startRead plans a read as request_plan.cc does', () => {
  it('a block flagged LOST and REDIRECT fails the read with EIO (native checks LOST before REDIRECT), it does not park', async () => {
    const dir = fs.mkdtempSync(path.join('/tmp', 'dmr-fake-'));
    try {
      const native = new FakeNative({ devDir: dir });
      const dev = new native.Device({
        mainPath: '/dev/null', sparePath: '/dev/zero', queues: 1, depth: 1, blockSize: 4096, sizeBytes: 1048576n,
        maxIoBytes: 1 << 16, discard: false, devId: -1, onEvent: () => undefined,
      }) as FakeDevice;
      // RemapMirror.publishedEntry publishes a committed-lost block that is also redirected as LOST | REDIRECT.
      dev.setRemapTable(BigUint64Array.of(10n), BigUint64Array.of(3n), Uint8Array.of(REMAP_FLAG_LOST | REMAP_FLAG_REDIRECT));
      const r = dev.startRead(10, 1);
      expect(r.parked).toBe(false);
      expect(await r.result).toEqual({ errno: 'EIO' });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
