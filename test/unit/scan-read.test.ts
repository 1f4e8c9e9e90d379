// The scanner's read as TypeScript sees it: the fake addon's scanRead (planned like native's: remapped blocks
// from their slots, MOVING and LOST skipped, injected read failures per piece, no user counters) and
// src/scan/scan-read.ts, which turns a result into the region record's reads.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DmrError } from '../../src/errors.js';
import { REMAP_FLAG_LOST, REMAP_FLAG_MOVING, type NativeScanReadResult, type ScanReadResult } from '../../src/native.js';
import fs from 'node:fs';
import path from 'node:path';
import { recordScanReads, SCAN_ALIGN_BYTES, scanOutcome, splitOutcome } from '../../src/scan/scan-read.js';
import { SCAN_CHUNK_BYTES } from '../../src/scan/scanner.js';
import { scanPieces } from '../../src/testing/scan-pieces.js';
import { ERROR_BIN, RegionRecord } from '../../src/scan/regions.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { fakeFor, makeWorld, REPO, type World } from './helpers.js';

/** A result that covers the whole range asked for. */
const full = (r: ScanReadResult): NativeScanReadResult => ({ ...r, coveredBytes: r.bytes, stopped: null, generation: 1 });

const BS = 4096;
const SPARE_DATA = 64 * BS;

let w: World;
let native: FakeNative;
let dev: FakeDevice;

function table(entries: Array<[block: number, slot: number, flags: number]>): void {
  dev.setRemapTable(
    BigUint64Array.from(entries.map((e) => BigInt(e[0]))),
    BigUint64Array.from(entries.map((e) => BigInt(e[1]))),
    Uint8Array.from(entries.map((e) => e[2])),
  );
}

beforeEach(async () => {
  w = makeWorld();
  native = fakeFor(w);
  dev = new native.Device({
    mainPath: w.main, sparePath: w.spare, queues: 1, depth: 4, blockSize: BS, sizeBytes: 1n << 20n, maxIoBytes: 1 << 16,
    discard: false, devId: -1, spareDataOffset: BigInt(SPARE_DATA), onEvent: () => undefined,
  }) as FakeDevice;
  await dev.start();
});

afterEach(async () => {
  await dev.stop();
  w.cleanup();
});

describe('fake scanRead', () => {
  it('reads unmapped runs from main and remapped runs from their slots, skips MOVING and LOST, and counts no user I/O', async () => {
    // 3 → slot 2, 4 → slot 3 (one spare run), 6 → slot 9, 7 MOVING at slot 4, 8 LOST at slot 5.
    table([[3, 2, 0], [4, 3, 0], [6, 9, 0], [7, 4, REMAP_FLAG_MOVING], [8, 5, REMAP_FLAG_LOST]]);
    // A failure on main's block 1 fails the first piece; one on the spare's slot 9 fails block 6's piece.
    native.cfg.failReads.push({ device: 'main', offset: BS, bytes: BS, code: 'EIO' });
    native.cfg.failReads.push({ device: 'spare', offset: SPARE_DATA + 9 * BS, bytes: BS, code: 'ENODATA' });
    const before = JSON.stringify(dev.stats());
    const r = await dev.scanRead(0n, 12 * BS);
    const brief = r.segments.map((s) => [s.device, s.block, s.blocks, s.skipped, s.errno]);
    expect(brief).toEqual([
      ['main', 0, 3, null, 5],
      ['spare', 3, 2, null, 0],
      ['main', 5, 1, null, 0],
      ['spare', 6, 1, null, 61],
      ['spare', 7, 1, 'moving', 0],
      ['spare', 8, 1, 'lost', 0],
      ['main', 9, 3, null, 0],
    ]);
    expect(JSON.stringify(dev.stats())).toBe(before);
  });

  it('narrow: one piece per block, so a failure names exactly its block', async () => {
    native.cfg.failReads.push({ device: 'main', offset: 2 * BS, bytes: BS, code: 'EIO' });
    const r = await dev.scanRead(BigInt(BS), 3 * BS, true);
    expect(r.segments.map((s) => [s.block, s.blocks, s.errno])).toEqual([[1, 1, 0], [2, 1, 5], [3, 1, 0]]);
  });

  it('refuses a range that is not whole blocks inside the device, and a stopped device', async () => {
    await expect(dev.scanRead(512n, BS)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(dev.scanRead(0n, (1 << 20) + BS)).rejects.toMatchObject({ code: 'EINVAL' });
    await dev.stop();
    await expect(dev.scanRead(0n, BS)).rejects.toMatchObject({ code: 'ENODEV' });
  });
});

describe('scanOutcome', () => {
  it('turns read pieces into region reads (failed ones in the error bin), lists skips and failures', async () => {
    table([[200, 0, 0], [201, 1, REMAP_FLAG_MOVING]]);
    native.cfg.failReads.push({ device: 'main', offset: 10 * BS, bytes: BS, code: 'EIO' });
    const r = await dev.scanRead(0n, 1 << 20, true);
    const o = scanOutcome(r, BS);
    expect(o.reads).toHaveLength(255);
    expect(o.skipped).toEqual([{ offset: 201 * BS, length: BS, reason: 'moving' }]);
    expect(o.failed).toEqual([{ offset: 10 * BS, length: BS, device: 'main', errno: 5 }]);
    expect(o.reads[10]).toMatchObject({ offset: 10 * BS, length: BS, failed: true });
    const rec = RegionRecord.forDevice(1 << 20);
    recordScanReads(rec, o);
    const bins = rec.region(0).bins;
    expect(bins[ERROR_BIN]).toBe(1);
    expect(bins.reduce((a, b) => a + b, 0)).toBe(255);
  });

  it('keeps the latency in ms', () => {
    const r = full({ offset: 8192n, bytes: 8192, segments: [{ device: 'main', block: 2, blocks: 2, skipped: null, latencyUs: 25_000, errno: 0 }] });
    expect(scanOutcome(r, BS).reads).toEqual([{ offset: 8192, length: 8192, latencyMs: 25, failed: false }]);
  });

  it('refuses pieces that leave a gap, overlap or fall short of the range (E_INTERNAL)', () => {
    const seg = (block: number, blocks: number) => ({ device: 'main' as const, block, blocks, skipped: null, latencyUs: 1, errno: 0 });
    const bad: NativeScanReadResult[] = [
      full({ offset: 0n, bytes: 3 * BS, segments: [seg(0, 1), seg(2, 1)] }),
      full({ offset: 0n, bytes: 3 * BS, segments: [seg(0, 2), seg(1, 2)] }),
      full({ offset: 0n, bytes: 3 * BS, segments: [seg(0, 2)] }),
      full({ offset: BigInt(BS), bytes: BS, segments: [seg(0, 1)] }),
      full({ offset: 0n, bytes: BS, segments: [seg(0, 1), seg(1, 0)] }),
      // Stopped early: the pieces must cover coveredBytes exactly, a whole number of blocks > 0, with a reason.
      { ...full({ offset: 0n, bytes: 3 * BS, segments: [seg(0, 2)] }), coveredBytes: BS, stopped: 'failures' },
      { ...full({ offset: 0n, bytes: 3 * BS, segments: [] }), coveredBytes: 0, stopped: 'failures' },
      { ...full({ offset: 0n, bytes: 3 * BS, segments: [seg(0, 1)] }), coveredBytes: BS + 1, stopped: 'failures' },
      { ...full({ offset: 0n, bytes: 3 * BS, segments: [seg(0, 2)] }), coveredBytes: 2 * BS, stopped: null },
      { ...full({ offset: 0n, bytes: 3 * BS, segments: [seg(0, 3)] }), stopped: 'narrow_cap' },
      { ...full({ offset: 0n, bytes: 3 * BS, segments: [seg(0, 4)] }), coveredBytes: 4 * BS },
    ];
    for (const r of bad) {
      expect(() => scanOutcome(r, BS)).toThrow(DmrError);
      expect(() => scanOutcome(r, BS)).toThrow(/scan read/);
    }
    expect(scanOutcome(full({ offset: 0n, bytes: 3 * BS, segments: [seg(0, 1), seg(1, 2)] }), BS).reads).toHaveLength(2);
  });

  it('a call native stopped early covers what it says it covered, and keeps the table generation', () => {
    const seg = (block: number, blocks: number, errno = 0) => ({ device: 'main' as const, block, blocks, skipped: null, latencyUs: 1, errno });
    const r: NativeScanReadResult = { offset: 0n, bytes: 8 * BS, segments: [seg(0, 1, 5), seg(1, 1, 5)], coveredBytes: 2 * BS, stopped: 'failures', generation: 7 };
    const o = scanOutcome(r, BS);
    expect(o.coveredBytes).toBe(2 * BS);
    expect(o.generation).toBe(7);
    expect(o.failed.map((f) => f.offset)).toEqual([0, BS]);
  });

  it('splitOutcome cuts a run at 1 MiB chunks (one outcome per chunk touched, its reads, skips and failures) and refuses a piece across a boundary', () => {
    const MIB = 1 << 20;
    const rd = (offset: number, length: number, failed = false) => ({ offset, length, latencyMs: 1, failed });
    const start = MIB + 8 * BS;
    const covered = 2 * MIB + BS - 8 * BS;
    const o = {
      reads: [rd(start, MIB / 2 - 8 * BS), rd(MIB + MIB / 2, MIB / 2), rd(3 * MIB, BS, true)],
      skipped: [{ offset: 2 * MIB, length: MIB, reason: 'moving' as const }],
      failed: [{ offset: 3 * MIB, length: BS, device: 'main' as const, errno: 5 }],
      coveredBytes: covered,
      generation: 4,
    };
    const parts = splitOutcome(o, start, MIB);
    expect(parts.map((p) => [p.offset, p.coveredBytes, p.reads.length, p.skipped.length, p.failed.length, p.generation])).toEqual([
      [start, MIB - 8 * BS, 2, 0, 0, 4],
      [2 * MIB, MIB, 0, 1, 0, 4],
      [3 * MIB, BS, 1, 0, 1, 4],
    ]);
    expect(() => splitOutcome({ ...o, reads: [rd(MIB - BS, 2 * BS)], skipped: [], failed: [], coveredBytes: 2 * MIB }, 0, MIB)).toThrow(/not inside one/);
    expect(() => splitOutcome({ ...o, reads: [], skipped: [{ offset: 4 * MIB, length: BS, reason: 'lost' }], failed: [], coveredBytes: 2 * MIB }, 0, MIB)).toThrow(DmrError);
    expect(SCAN_ALIGN_BYTES).toBe(MIB);
  });

  it('native splits scan pieces at the chunk boundaries of the scanner: kScanAlignBytes is SCAN_CHUNK_BYTES', () => {
    const h = fs.readFileSync(path.join(REPO, 'native/scan_reader.h'), 'utf8');
    const m = /constexpr uint32_t kScanAlignBytes = 1u << (\d+);/.exec(h);
    expect(m).not.toBeNull();
    expect(2 ** Number(m?.[1])).toBe(SCAN_CHUNK_BYTES);
    expect(SCAN_ALIGN_BYTES).toBe(SCAN_CHUNK_BYTES);
  });

  it('the fakes plan like native: no wide piece across a 1 MiB boundary, none longer than max-io', () => {
    const perMib = (1 << 20) / BS;
    expect(scanPieces(perMib - 2, perMib + 2, BS)).toEqual([{ block: perMib - 2, blocks: 2 }, { block: perMib, blocks: 2 }]);
    expect(scanPieces(0, perMib + 1, BS, 100).map((p) => p.blocks)).toEqual([100, 100, 56, 1]);
  });
});
