// The per-region record of a scan (src/scan/regions.ts) and its persisted form (region-codec.ts).
import { describe, expect, it } from 'vitest';
import { DmrError } from '../../src/errors.js';
import { crc32c } from '../../src/remap/crc32c.js';
import { decodeRegions, encodeRegions, MAX_REGIONS_RECORD_BYTES } from '../../src/scan/region-codec.js';
import { ScanRecordError, type ScanRecordProblem } from '../../src/scan/record-frame.js';
import { ERROR_BIN, FIELDS_PER_REGION, latencyBin, MAX_REGIONS, MIB, RegionRecord, regionBytesFor } from '../../src/scan/regions.js';

const GIB = 1024 * MIB;
const TIB = 1024 * GIB;

function problemOf(f: () => unknown): ScanRecordProblem | 'none' {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ScanRecordError);
    expect((e as ScanRecordError).code).toBe('E_SCAN_RECORD');
    return (e as ScanRecordError).problem;
  }
  return 'none';
}

function reseal(buf: Buffer): Buffer {
  const b = Buffer.from(buf);
  b.writeUInt32LE(crc32c(b, 0, b.length - 4), b.length - 4);
  return b;
}

describe('region rule', () => {
  it('uses 1 MiB regions up to 4 GiB, then whole MiB with at most 4096 regions', () => {
    const cases: [number, number, number][] = [
      // device, region size, count
      [512, MIB, 1],
      [10 * MIB, MIB, 10],
      [10 * MIB + 4096, MIB, 11],
      [4 * GIB, MIB, 4096],
      [4 * GIB + 512, 2 * MIB, 2049],
      [100 * GIB, 25 * MIB, 4096],
      [TIB, 256 * MIB, 4096],
      [3 * TIB + 4096, 769 * MIB, 4091],
    ];
    for (const [dev, size, count] of cases) {
      const r = RegionRecord.forDevice(dev);
      expect([regionBytesFor(dev), r.count], `device ${dev}`).toEqual([size, count]);
    }
    // Never more than 4096 regions, up to the largest size a number holds exactly.
    for (let dev = MIB; dev < Number.MAX_SAFE_INTEGER / 3; dev = dev * 3 + 4096) {
      const size = regionBytesFor(dev);
      expect(Math.ceil(dev / size)).toBeLessThanOrEqual(MAX_REGIONS);
      expect(size % MIB).toBe(0);
    }
    expect(() => regionBytesFor(0)).toThrow(DmrError);
  });

  it('bins latencies as MHDD/Victoria do, and errors apart', () => {
    const at = [0, 4.99, 5, 19, 20, 49.9, 50, 149, 150, 499.9, 500, 30_000];
    expect(at.map((ms) => latencyBin(ms, false))).toEqual([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    expect(latencyBin(1, true)).toBe(ERROR_BIN);
  });
});

describe('region record', () => {
  it('counts a read in the bin of its latency in its region', () => {
    const r = RegionRecord.forDevice(16 * MIB);
    r.addRead({ offset: 3 * MIB, length: MIB, latencyMs: 2, failed: false });
    r.addRead({ offset: 3 * MIB + 4096, length: 4096, latencyMs: 700, failed: false });
    r.addRead({ offset: 5 * MIB, length: 4096, latencyMs: 12, failed: true });
    expect(r.region(3)).toEqual({
      index: 3,
      start: 3 * MIB,
      end: 4 * MIB,
      bins: [1, 0, 0, 0, 0, 1, 0],
      remapped: 0,
      pending: 0,
      relocated: 0,
      worstBin: 5,
    });
    expect(r.region(5).bins).toEqual([0, 0, 0, 0, 0, 0, 1]);
    expect(r.region(5).worstBin).toBe(ERROR_BIN);
    expect(r.region(4).worstBin).toBeNull();
    expect(r.totals().bins).toEqual([1, 0, 0, 0, 0, 1, 1]);
  });

  it('counts a read spanning two (or more) regions in each', () => {
    const r = RegionRecord.forDevice(16 * MIB);
    r.addRead({ offset: 2 * MIB - 4096, length: 8192, latencyMs: 30, failed: false });
    expect([r.region(1).bins[2], r.region(2).bins[2], r.region(3).bins[2]]).toEqual([1, 1, 0]);
    r.addRead({ offset: 6 * MIB - 512, length: 2 * MIB + 1024, latencyMs: 1, failed: false });
    expect([5, 6, 7, 8, 9].map((g) => r.region(g).bins[0])).toEqual([1, 1, 1, 1, 0]);
    // The read ending exactly at a boundary stays in its region.
    r.addRead({ offset: 10 * MIB, length: MIB, latencyMs: 1, failed: false });
    expect([r.region(10).bins[0], r.region(11).bins[0]]).toEqual([1, 0]);
  });

  it('has a short last region, and refuses reads outside the device', () => {
    const r = RegionRecord.forDevice(2 * MIB + 4096);
    expect(r.region(2)).toMatchObject({ start: 2 * MIB, end: 2 * MIB + 4096 });
    r.addRead({ offset: 2 * MIB, length: 4096, latencyMs: 1, failed: false });
    expect(() => r.addRead({ offset: 2 * MIB, length: 8192, latencyMs: 1, failed: false })).toThrow(/outside the device/);
    expect(() => r.addRead({ offset: -1, length: 1, latencyMs: 1, failed: false })).toThrow(DmrError);
    expect(() => r.addRead({ offset: 0, length: 0, latencyMs: 1, failed: false })).toThrow(/length/);
    expect(() => r.addRead({ offset: 0, length: 1, latencyMs: Number.NaN, failed: false })).toThrow(/latency/);
    expect(() => r.region(3)).toThrow(DmrError);
  });

  it('counts remapped, pending and relocated blocks, never below zero, and clears reads and blocks apart', () => {
    const r = RegionRecord.forDevice(8 * MIB);
    r.noteBlock(4096, 'remapped');
    r.noteBlock(MIB + 512, 'pending', 3);
    r.noteBlock(MIB, 'pending', -1);
    r.noteBlock(7 * MIB, 'relocated');
    r.noteBlock(7 * MIB, 'relocated', -5);
    r.addRead({ offset: MIB, length: 4096, latencyMs: 60, failed: false });
    expect([r.region(0).remapped, r.region(1).pending, r.region(7).relocated]).toEqual([1, 2, 0]);
    r.clearReads();
    expect(r.region(1)).toMatchObject({ bins: [0, 0, 0, 0, 0, 0, 0], pending: 2, worstBin: null });
    r.addRead({ offset: MIB, length: 4096, latencyMs: 60, failed: false });
    r.clearBlocks();
    expect(r.region(1)).toMatchObject({ bins: [0, 0, 0, 1, 0, 0, 0], pending: 0 });
    expect(r.totals()).toEqual({ bins: [0, 0, 0, 1, 0, 0, 0], remapped: 0, pending: 0, relocated: 0 });
  });

  it('saturates a count at 2^32 - 1 instead of wrapping', () => {
    const r = RegionRecord.forDevice(MIB);
    r.fields[0] = 0xffffffff - 1;
    r.addRead({ offset: 0, length: 512, latencyMs: 1, failed: false });
    r.addRead({ offset: 0, length: 512, latencyMs: 1, failed: false });
    expect(r.region(0).bins[0]).toBe(0xffffffff);
  });
});

describe('region record encoding', () => {
  function sample(): RegionRecord {
    const r = RegionRecord.forDevice(64 * MIB + 4096);
    for (let g = 0; g < 64; g++) r.addRead({ offset: g * MIB, length: MIB, latencyMs: g % 7 === 0 ? 600 : 3, failed: g === 13 });
    r.noteBlock(13 * MIB, 'pending', 2);
    r.noteBlock(20 * MIB, 'remapped', 300);
    r.noteBlock(64 * MIB, 'relocated');
    r.fields[5] = 0xffffffff;
    return r;
  }

  it('round-trips', () => {
    const r = sample();
    const back = decodeRegions(encodeRegions(r));
    expect([back.deviceBytes, back.regionBytes, back.count]).toEqual([r.deviceBytes, r.regionBytes, r.count]);
    expect(Array.from(back.fields)).toEqual(Array.from(r.fields));
    expect(back.region(13)).toEqual(r.region(13));
  });

  it('gives a short, corrupt or other-version record a typed error', () => {
    const b = encodeRegions(sample());
    for (const n of [0, 1, 15, 19, 20, 40, b.length - 1]) expect(problemOf(() => decodeRegions(b.subarray(0, n)))).toBe('short');
    for (let i = 0; i < b.length; i += 7) {
      const c = Buffer.from(b);
      c[i] = (c[i] as number) ^ 0x10;
      expect(problemOf(() => decodeRegions(c)), `byte ${i}`).not.toBe('none');
    }
    const flipped = Buffer.from(b);
    flipped[40] = (flipped[40] as number) ^ 1;
    expect(problemOf(() => decodeRegions(flipped))).toBe('checksum');
    const v2 = Buffer.from(b);
    v2.writeUInt32LE(2, 8);
    expect(problemOf(() => decodeRegions(reseal(v2)))).toBe('version');
  });

  it('refuses a well-sealed record that breaks the rules', () => {
    const b = encodeRegions(sample());
    const edit = (f: (p: Buffer) => void): Buffer => {
      const c = Buffer.from(b);
      f(c.subarray(16, c.length - 4));
      return reseal(c);
    };
    // Another region size, count or field count than the rule gives.
    expect(problemOf(() => decodeRegions(edit((p) => p.writeBigUInt64LE(2n * BigInt(MIB), 8))))).toBe('invalid');
    expect(problemOf(() => decodeRegions(edit((p) => p.writeUInt32LE(64, 16))))).toBe('invalid');
    expect(problemOf(() => decodeRegions(edit((p) => p.writeUInt32LE(11, 20))))).toBe('invalid');
    expect(problemOf(() => decodeRegions(edit((p) => p.writeBigUInt64LE(0n, 0))))).toBe('invalid');
    // A varint running over 5 bytes; trailing bytes; a payload cut inside the values.
    expect(problemOf(() => decodeRegions(edit((p) => p.fill(0xff, 24, 30))))).toBe('invalid');
    const header = b.subarray(16, 16 + 24);
    const frame = (payload: Buffer): Buffer => {
      const out = Buffer.alloc(16 + payload.length + 4);
      b.copy(out, 0, 0, 16);
      out.writeUInt32LE(payload.length, 12);
      payload.copy(out, 16);
      return reseal(out);
    };
    const values = b.subarray(16 + 24, b.length - 4);
    expect(problemOf(() => decodeRegions(frame(Buffer.concat([header, values, Buffer.from([0])]))))).toBe('invalid');
    expect(problemOf(() => decodeRegions(frame(Buffer.concat([header, values.subarray(0, values.length - 1)]))))).toBe('invalid');
    expect(problemOf(() => decodeRegions(frame(Buffer.concat([header, values]))))).toBe('none');
  });

  it('stays bounded for a 1 TiB device: 4096 regions, 160 KiB of counts, a 45 KiB record after a pass', () => {
    const r = RegionRecord.forDevice(TIB);
    expect(r.count).toBe(4096);
    expect(r.fields.byteLength).toBe(4096 * FIELDS_PER_REGION * 4);
    // A whole pass in 1 MiB reads: 256 per region, each in the <5 ms bin.
    for (let off = 0; off < TIB; off += MIB) r.addRead({ offset: off, length: MIB, latencyMs: 1, failed: false });
    r.addRead({ offset: 17 * GIB, length: 4096, latencyMs: 900, failed: true });
    const b = encodeRegions(r);
    // 256 takes 2 bytes as a varint, the 9 other fields 1 each; one region has one more non-zero field (1 byte).
    expect(b.length).toBe(16 + 24 + 4096 * 11 + 4);
    expect(b.length).toBeLessThanOrEqual(MAX_REGIONS_RECORD_BYTES);
    const back = decodeRegions(b);
    expect(back.region(68).bins).toEqual([256, 0, 0, 0, 0, 0, 1]);
    expect(back.totals().bins[0]).toBe(TIB / MIB);
    // The worst case of any device: every field at 2^32 - 1 fills the bound exactly.
    r.fields.fill(0xffffffff);
    expect(encodeRegions(r).length).toBe(MAX_REGIONS_RECORD_BYTES);
    expect(MAX_REGIONS_RECORD_BYTES).toBeLessThan(201 * 1024);
  });
});
