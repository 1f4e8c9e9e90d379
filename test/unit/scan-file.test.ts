// The scan file in the state dir (src/scan/scan-file.ts) and the atomic replace it uses (src/atomic-file.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { writeFileAtomic } from '../../src/atomic-file.js';
import { DmrError } from '../../src/errors.js';
import { advancePass, newCursor, startPass } from '../../src/scan/cursor.js';
import { ScanRecordError, type ScanRecordProblem } from '../../src/scan/record-frame.js';
import { RegionRecord } from '../../src/scan/regions.js';
import { decodeScanFile, encodeScanFile, loadScan, MAX_SCAN_FILE_BYTES, saveScan, scanFilePath, type SavedScan } from '../../src/scan/scan-file.js';

const MIB = 1024 * 1024;
const PAIR = '0b7e6c3a-5d1f-4e2a-9c8b-7a6f5e4d3c2b';
const OTHER = '11111111-2222-4333-8444-555555555555';
const T0 = Date.UTC(2026, 11, 1);

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-scan-file-'));
});
afterEach(() => {
  vi.restoreAllMocks();
  fs.rmSync(dir, { recursive: true, force: true });
});

function sample(deviceBytes = 64 * MIB): SavedScan {
  const cursor = advancePass(startPass(newCursor(deviceBytes), T0), 20 * MIB, T0 + 4000, { errors: 1, slow: 2 });
  const regions = RegionRecord.forDevice(deviceBytes);
  for (let g = 0; g < 20; g++) regions.addRead({ offset: g * MIB, length: MIB, latencyMs: g === 7 ? 800 : 2, failed: g === 3 });
  regions.noteBlock(3 * MIB + 4096, 'pending');
  return { cursor, regions };
}

function problemOf(f: () => unknown): ScanRecordProblem | 'none' {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ScanRecordError);
    return (e as ScanRecordError).problem;
  }
  return 'none';
}

describe('scan file', () => {
  it('saves and loads the cursor and the region record together', () => {
    const state = path.join(dir, 'state');
    const s = sample();
    saveScan(state, PAIR, s);
    const file = scanFilePath(state, PAIR);
    expect(file).toBe(path.join(state, `${PAIR}.scan`));
    expect(fs.statSync(state).mode & 0o777).toBe(0o700);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const back = loadScan(state, PAIR, 64 * MIB);
    expect(back?.cursor).toEqual(s.cursor);
    expect(Array.from(back?.regions.fields ?? [])).toEqual(Array.from(s.regions.fields));
    // Saving again replaces it, leaving no temporary file.
    const later = { ...s, cursor: advancePass(s.cursor, 30 * MIB, T0 + 9000) };
    saveScan(state, PAIR, later);
    expect(loadScan(state, PAIR, 64 * MIB)?.cursor.position).toBe(30 * MIB);
    expect(fs.readdirSync(state)).toEqual([`${PAIR}.scan`]);
  });

  it('has none for a device never scanned', () => {
    expect(loadScan(dir, PAIR, 64 * MIB)).toBeNull();
    expect(loadScan(path.join(dir, 'missing'), PAIR, 64 * MIB)).toBeNull();
  });

  it('refuses the file of another pair, or of a device that changed size', () => {
    saveScan(dir, OTHER, sample());
    fs.renameSync(scanFilePath(dir, OTHER), scanFilePath(dir, PAIR));
    expect(problemOf(() => loadScan(dir, PAIR, 64 * MIB))).toBe('device');
    saveScan(dir, PAIR, sample());
    expect(problemOf(() => loadScan(dir, PAIR, 64 * MIB + 4096))).toBe('device');
    expect(problemOf(() => loadScan(dir, PAIR, 64 * MIB))).toBe('none');
  });

  it('refuses a corrupt, truncated or oversized file with a typed error', () => {
    saveScan(dir, PAIR, sample());
    const file = scanFilePath(dir, PAIR);
    const good = fs.readFileSync(file);
    const bad = Buffer.from(good);
    bad[good.length - 40] = (bad[good.length - 40] as number) ^ 4;
    fs.writeFileSync(file, bad);
    expect(problemOf(() => loadScan(dir, PAIR, 64 * MIB))).toBe('checksum');
    fs.writeFileSync(file, good.subarray(0, 100));
    expect(problemOf(() => loadScan(dir, PAIR, 64 * MIB))).toBe('short');
    fs.writeFileSync(file, Buffer.alloc(MAX_SCAN_FILE_BYTES + 1));
    expect(problemOf(() => loadScan(dir, PAIR, 64 * MIB))).toBe('invalid');
    fs.writeFileSync(file, Buffer.alloc(0));
    expect(problemOf(() => loadScan(dir, PAIR, 64 * MIB))).toBe('short');
    for (let i = 0; i < good.length; i += 13) {
      const c = Buffer.from(good);
      c[i] = (c[i] as number) ^ 0x41;
      expect(problemOf(() => decodeScanFile(c, PAIR, 64 * MIB)), `byte ${i}`).not.toBe('none');
    }
  });

  it('the largest possible scan file fits its bound', () => {
    const s = sample(8 * 1024 ** 4);
    s.regions.fields.fill(0xffffffff);
    expect(encodeScanFile(PAIR, s).length).toBe(MAX_SCAN_FILE_BYTES);
  });

  it('refuses to save a cursor and regions of different devices, or under a pair id that is not a UUID', () => {
    const s = sample();
    expect(() => encodeScanFile(PAIR, { cursor: s.cursor, regions: RegionRecord.forDevice(32 * MIB) })).toThrow(DmrError);
    expect(() => saveScan(dir, '../etc/passwd', s)).toThrow(/not a UUID/);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('fails with E_STATE when the state dir cannot be made', () => {
    const blocker = path.join(dir, 'file');
    fs.writeFileSync(blocker, 'x');
    expect(() => saveScan(path.join(blocker, 'state'), PAIR, sample())).toThrow(expect.objectContaining({ code: 'E_STATE' }));
  });
});

describe('writeFileAtomic', () => {
  it('writes, fsyncs the file, renames it over the old one, then fsyncs the directory', () => {
    const file = path.join(dir, 'f');
    fs.writeFileSync(file, 'old');
    const order: string[] = [];
    const fsync = fs.fsyncSync;
    const rename = fs.renameSync;
    vi.spyOn(fs, 'fsyncSync').mockImplementation((fd) => {
      order.push(fs.fstatSync(fd).isDirectory() ? 'fsync dir' : 'fsync file');
      fsync(fd);
    });
    vi.spyOn(fs, 'renameSync').mockImplementation((a, b) => {
      order.push(`rename ${path.basename(String(b))}`);
      rename(a, b);
    });
    writeFileAtomic(file, Buffer.from('new'), { errorCode: 'E_STATE', mode: 0o640 });
    expect(order).toEqual(['fsync file', 'rename f', 'fsync dir']);
    expect(fs.readFileSync(file, 'utf8')).toBe('new');
    expect(fs.statSync(file).mode & 0o777).toBe(0o640);
    expect(fs.readdirSync(dir)).toEqual(['f']);
  });

  it('leaves the old file and no temporary file when the write fails', () => {
    const file = path.join(dir, 'f');
    fs.writeFileSync(file, 'old');
    vi.spyOn(fs, 'fsyncSync').mockImplementation(() => {
      throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    });
    let err: unknown;
    try {
      writeFileAtomic(file, 'new', { errorCode: 'E_STATE' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DmrError);
    expect((err as DmrError).code).toBe('E_STATE');
    expect((err as DmrError).message).toBe(`cannot write ${file} (EIO)`);
    expect(fs.readFileSync(file, 'utf8')).toBe('old');
    expect(fs.readdirSync(dir)).toEqual(['f']);
  });

  it('fails, leaving no temporary file, when the target cannot be replaced', () => {
    const target = path.join(dir, 'd');
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, 'x'), 'keep');
    expect(() => writeFileAtomic(target, 'new', { errorCode: 'E_STATE' })).toThrow(DmrError);
    expect(fs.readdirSync(dir)).toEqual(['d']);
    expect(fs.readFileSync(path.join(target, 'x'), 'utf8')).toBe('keep');
  });
});
