// The dm-log-writes replay tool (test/e2e/tools/log-writes.mjs) against logs built here byte by byte as the
// kernel lays them out: super block, entries with their data, flushes, FUA writes, discards and marks.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  FLAG_DISCARD,
  FLAG_FLUSH,
  FLAG_FUA,
  FLAG_MARK,
  LOG_MAGIC,
  LogFormatError,
  Replayer,
  bufferSource,
  bufferTarget,
  parseLog,
  syncPoints,
} from '../e2e/tools/log-writes.mjs';

const TOOL = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../e2e/tools/log-writes.mjs');

interface Ent {
  sector: number;
  flags?: number;
  data?: Buffer;
  /** sectors of a discard */
  discard?: number;
  mark?: string;
}

/** A log as dm-log-writes writes it, for a data device with `ss`-byte sectors. */
function buildLog(entries: Ent[], ss = 512, opts: { magic?: bigint; version?: bigint; count?: number } = {}): Buffer {
  const parts: Buffer[] = [];
  const sb = Buffer.alloc(ss);
  sb.writeBigUInt64LE(opts.magic ?? LOG_MAGIC, 0);
  sb.writeBigUInt64LE(opts.version ?? 1n, 8);
  sb.writeBigUInt64LE(BigInt(opts.count ?? entries.length), 16);
  sb.writeUInt32LE(ss, 24);
  parts.push(sb);
  for (const e of entries) {
    const h = Buffer.alloc(ss);
    let flags = e.flags ?? 0;
    let nr = 0;
    let dataLen = 0;
    if (e.mark !== undefined) {
      flags |= FLAG_MARK;
      dataLen = e.mark.length;
      h.write(e.mark, 32, 'latin1');
    } else if (e.discard !== undefined) {
      flags |= FLAG_DISCARD;
      nr = e.discard;
    } else if (e.data !== undefined) {
      nr = e.data.length / ss;
    }
    h.writeBigUInt64LE(BigInt(e.sector), 0);
    h.writeBigUInt64LE(BigInt(nr), 8);
    h.writeBigUInt64LE(BigInt(flags), 16);
    h.writeBigUInt64LE(BigInt(dataLen), 24);
    parts.push(h);
    if (e.data !== undefined) parts.push(e.data);
  }
  return Buffer.concat(parts);
}

const fill = (n: number, byte: number) => Buffer.alloc(n, byte);

// Writes a(2 sectors at 4), flush, mark, FUA write b at 1, discard 4..5, flush, write c at 7.
const SAMPLE: Ent[] = [
  { sector: 4, data: fill(1024, 0xaa) },
  { sector: 0, flags: FLAG_FLUSH },
  { sector: 0, mark: 'step-1' },
  { sector: 1, data: fill(512, 0xbb), flags: FLAG_FUA },
  { sector: 4, discard: 1 },
  { sector: 0, flags: FLAG_FLUSH },
  { sector: 7, data: fill(512, 0xcc) },
];

describe('dm-log-writes log parser', () => {
  it('lists every entry with its sector, length, flags and mark name, and the FLUSH / FUA / MARK indexes', () => {
    const log = parseLog(bufferSource(buildLog(SAMPLE)));
    expect(log.sectorSize).toBe(512);
    expect(log.entries.map((e) => [e.index, e.sector, e.nrSectors, e.flags, e.mark])).toEqual([
      [0, 4, 2, 0, null],
      [1, 0, 0, FLAG_FLUSH, null],
      [2, 0, 0, FLAG_MARK, 'step-1'],
      [3, 1, 1, FLAG_FUA, null],
      [4, 4, 1, FLAG_DISCARD, null],
      [5, 0, 0, FLAG_FLUSH, null],
      [6, 7, 1, 0, null],
    ]);
    expect(syncPoints(log)).toEqual({ flush: [1, 5], fua: [3], marks: [{ index: 2, name: 'step-1' }] });
  });

  it('replays entries 0..N onto a target, forwards only, each point as a power cut there leaves it', () => {
    const raw = buildLog(SAMPLE);
    const log = parseLog(bufferSource(raw));
    const img = Buffer.alloc(8 * 512, 0x11);
    const r = new Replayer(bufferSource(raw), log, bufferTarget(img));
    r.through(-1);
    expect(img.equals(Buffer.alloc(8 * 512, 0x11))).toBe(true);
    r.through(2);
    expect(img.subarray(4 * 512, 6 * 512).equals(fill(1024, 0xaa))).toBe(true);
    expect(img.subarray(512, 1024).equals(fill(512, 0x11))).toBe(true);
    r.through(4);
    expect(img.subarray(512, 1024).equals(fill(512, 0xbb))).toBe(true);
    expect(img.subarray(4 * 512, 5 * 512).equals(fill(512, 0))).toBe(true); // discarded: zeros
    expect(img.subarray(5 * 512, 6 * 512).equals(fill(512, 0xaa))).toBe(true);
    r.through(6);
    expect(img.subarray(7 * 512).equals(fill(512, 0xcc))).toBe(true);
    expect(() => r.through(3)).toThrow(/cannot replay back to entry 3/);
    expect(() => r.through(7)).toThrow(/entry 7 is not in the log/);
  });

  it('uses the sector size the super block gives (4096): sectors, lengths and log offsets in those units', () => {
    const raw = buildLog([{ sector: 2, data: fill(8192, 0x5a) }, { sector: 0, flags: FLAG_FLUSH }, { sector: 0, mark: 'x' }], 4096);
    const log = parseLog(bufferSource(raw));
    expect(log.entries.map((e) => [e.sector, e.nrSectors, e.logOffset])).toEqual([
      [2, 2, 2 * 4096], // its data follows its header (after the super block)
      [0, 0, 5 * 4096], // where data would follow: after entry 0's header and 2 data blocks, and its own header
      [0, 0, 6 * 4096],
    ]);
    const img = Buffer.alloc(4 * 4096);
    new Replayer(bufferSource(raw), log, bufferTarget(img)).through(2);
    expect(img.subarray(8192).equals(fill(8192, 0x5a))).toBe(true);
    expect(img.subarray(0, 8192).equals(fill(8192, 0))).toBe(true);
  });

  it('reads only the entries the super block counts (later ones were not logged when it was written)', () => {
    const log = parseLog(bufferSource(buildLog(SAMPLE, 512, { count: 3 })));
    expect(log.entries.length).toBe(3);
  });

  it('refuses a bad log with one line naming the problem (typed E_LOG_FORMAT)', () => {
    const bad = (raw: Buffer) => {
      try {
        parseLog(bufferSource(raw));
      } catch (e) {
        expect(e).toBeInstanceOf(LogFormatError);
        expect((e as LogFormatError).code).toBe('E_LOG_FORMAT');
        expect((e as Error).message).not.toContain('\n');
        return (e as Error).message;
      }
      throw new Error('parsed');
    };
    expect(bad(Buffer.alloc(10))).toMatch(/shorter than its super block/);
    expect(bad(buildLog(SAMPLE, 512, { magic: 0x1234n }))).toMatch(/not a dm-log-writes log: magic 0x1234/);
    expect(bad(buildLog(SAMPLE, 512, { version: 2n }))).toMatch(/version 2 is not supported/);
    const odd = buildLog(SAMPLE);
    odd.writeUInt32LE(1000, 24);
    expect(bad(odd)).toMatch(/sector size 1000/);
    expect(bad(buildLog(SAMPLE, 512, { count: 9 }))).toMatch(/log ends inside entry 7 of 9/);
    const full = buildLog(SAMPLE);
    expect(bad(full.subarray(0, full.length - 100))).toMatch(/log ends inside the data of entry 6 of 7/);
    const flags = buildLog(SAMPLE);
    flags.writeBigUInt64LE(0x40n, 512 + 16); // entry 0's flags
    expect(bad(flags)).toMatch(/entry 0: unknown flags 0x40/);
    const mark = buildLog(SAMPLE);
    mark.writeBigUInt64LE(600n, 512 * 5 + 24); // entry 2 (the mark) sits after the super, entry 0 (3 blocks) and entry 1
    expect(bad(mark)).toMatch(/entry 2: mark name length 600/);
  });
});

describe('log-writes.mjs as a command', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logwrites-'));
  const run = (...args: string[]) => spawnSync(process.execPath, [TOOL, ...args], { encoding: 'utf8' });

  it('prints the entry count and the FLUSH / FUA / MARK indexes, and replays through an entry onto a file', () => {
    const log = path.join(dir, 'log');
    fs.writeFileSync(log, buildLog(SAMPLE));
    const l = run(log);
    expect(l.stderr).toBe('');
    expect(l.status).toBe(0);
    expect(l.stdout).toBe('entries 7 sectorsize 512\nflush 1 5\nfua 3\nmark 2 step-1\n');
    expect(run(log, '--list').stdout.split('\n')[4]).toBe('3 FUA sector 1 count 1');
    const target = path.join(dir, 'target');
    fs.writeFileSync(target, Buffer.alloc(8 * 512, 0x11));
    const r = run(log, '--replay-through', '3', '--target', target);
    expect(r.status).toBe(0);
    const img = fs.readFileSync(target);
    expect(img.subarray(512, 1024).equals(fill(512, 0xbb))).toBe(true);
    expect(img.subarray(4 * 512, 6 * 512).equals(fill(1024, 0xaa))).toBe(true);
    expect(img.subarray(7 * 512).equals(fill(512, 0x11))).toBe(true);
  });

  it('a bad log: one line on stderr, exit 1; bad arguments: exit 2', () => {
    const log = path.join(dir, 'bad');
    fs.writeFileSync(log, buildLog(SAMPLE, 512, { magic: 7n }));
    const r = run(log);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`log-writes: ${log}: not a dm-log-writes log: magic 0x7, expected 0x6a736677736872\n`);
    expect(run(log, '--replay-through', 'x', '--target', log).status).toBe(2);
    expect(run(log, '--replay-through', '1').status).toBe(2);
    expect(run().status).toBe(2);
  });
});
