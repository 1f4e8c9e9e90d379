// Fuzzed metadata: random bit flips, overwritten and zeroed ranges, a shrunken device, and records or table
// copies with valid checksums but random fields. Opening the spare either succeeds with a state equal to one
// the store committed (a prefix of its history), or fails with the project's typed error: never a
// RangeError, TypeError or anything else.
import { describe, expect, it } from 'vitest';
import { DmrError } from '../../src/errors.js';
import { crc32c } from '../../src/remap/crc32c.js';
import { seededRandom } from '../../src/testing/seeded-random.js';
import {
  decodeJournalRecord,
  decodeSuperblock,
  decodeTableCopy,
  JOURNAL_MAGIC,
  JR,
  TABLE_MAGIC,
  TB,
} from '../../src/remap/format.js';
import { computeGeometry, JOURNAL_RECORD_SIZE, metaLenFor, type Geometry } from '../../src/remap/geometry.js';
import { MemSpareIo } from '../../src/remap/mem-io.js';
import type { RemapOp } from '../../src/remap/state.js';
import { RemapStore, type OpenOptions, type OpenResult } from '../../src/remap/store.js';

const SLOTS = 64;
const J = 8;
const SPARE = metaLenFor(SLOTS, J) + SLOTS * 512;
const MAIN = { size: 1n << 30n, fingerprint: Buffer.alloc(32, 0x3c) };
const opts = (): OpenOptions => {
  let t = 1_764_000_000_000;
  return { main: MAIN, blockSize: 512, journalRecords: J, now: () => t++ };
};
const snap = (r: OpenResult): string =>
  JSON.stringify({ t: r.table.toJSON(), retired: r.allocator.retiredSlots(), c: r.store.counters() });

const rng = seededRandom;

const TYPED = new Set(['E_SPARE_METADATA', 'E_SPARE_FOREIGN', 'E_BLOCK_SIZE', 'E_SPARE_TOO_SMALL', 'E_SPARE_IO']);

/** A spare with a history: random ops over several compactions. Returns the image and every committed state. */
async function history(seed: number): Promise<{ io: MemSpareIo; prefixes: Set<string>; g: Geometry; uuid: Buffer }> {
  const rand = rng(seed);
  const io = new MemSpareIo(SPARE);
  const r = await RemapStore.open(io, opts());
  const prefixes = new Set([snap(r)]);
  for (let k = 0; k < 30; k++) {
    const blocks = [...r.table.entries()].map(([b]) => b);
    const pick = (): number => blocks[Math.floor(rand() * blocks.length)] as number;
    const ops: RemapOp[] = [];
    const n = 1 + Math.floor(rand() * 3);
    for (let i = 0; i < n; i++) {
      const x = rand();
      if (blocks.length === 0 || x < 0.5) ops.push({ op: 'remap', block: Math.floor(rand() * 2_000_000), origin: rand() < 0.5 ? 'auto' : 'manual', lost: rand() < 0.2 });
      else if (x < 0.6) ops.push({ op: 'unremap', block: pick() });
      else if (x < 0.7) ops.push({ op: 'lost', block: pick() });
      else if (x < 0.8) ops.push({ op: 'errors', block: pick(), errorCount: Math.floor(rand() * 100) });
      else if (x < 0.9) ops.push({ op: 'move', block: pick() });
      else ops.push({ op: 'retire', slot: r.allocator.peek() });
    }
    r.store.setCounters({ readErrors: k, writeErrors: 2 * k });
    prefixes.add(snap(r)); // error totals are persisted by the next commit or compaction, whichever comes first
    try {
      await r.store.commitBatch(ops);
    } catch (e) {
      if (!(e instanceof DmrError) || e.code !== 'E_REMAP_STATE') throw e; // e.g. the same block twice
    }
    prefixes.add(snap(r));
  }
  return { io, prefixes, g: r.store.geometry, uuid: r.store.uuid };
}

describe('fuzzed metadata', () => {
  it('a corrupted image loads a committed prefix or fails with a typed error', async () => {
    const ITER = 3000;
    const seeds = [1, 2, 3];
    const outcomes: Record<string, number> = {};
    const bump = (k: string): void => void (outcomes[k] = (outcomes[k] ?? 0) + 1);
    for (const seed of seeds) {
      const { io: base, prefixes, g, uuid } = await history(seed);
      const metaLen = g.metaLen;
      const rand = rng(seed * 7919);
      const structures: Array<[number, number]> = [
        [0, 8192],
        [g.tableOffsets[0], 1024],
        [g.tableOffsets[1], 1024],
        [g.journalOffsets[0], J * JOURNAL_RECORD_SIZE],
        [g.journalOffsets[1], J * JOURNAL_RECORD_SIZE],
      ];
      for (let it = 0; it < ITER / seeds.length; it++) {
        let io = base.clone();
        const kind = Math.floor(rand() * 7);
        let forged = false;
        const [sOff, sLen] = structures[Math.floor(rand() * structures.length)] as [number, number];
        const at = (): number => sOff + Math.floor(rand() * sLen);
        if (kind === 0) {
          // A few random bit flips anywhere in the metadata area.
          for (let n = 1 + Math.floor(rand() * 4); n > 0; n--) io.flipBit(Math.floor(rand() * metaLen), Math.floor(rand() * 8));
        } else if (kind === 1) {
          // Flips concentrated in one structure (headers are where the parsing decisions are).
          for (let n = 1 + Math.floor(rand() * 8); n > 0; n--) io.flipBit(sOff + Math.floor(rand() * Math.min(sLen, 256)), Math.floor(rand() * 8));
        } else if (kind === 2) {
          // A truncated structure: zeros from a random point to its end (a torn or lost write).
          const o = at();
          io.poke(o, Buffer.alloc(sOff + sLen - o));
        } else if (kind === 3) {
          // Random bytes over a random range.
          const o = at();
          const len = Math.min(1 + Math.floor(rand() * 64), sOff + sLen - o);
          io.poke(o, Buffer.from(Array.from({ length: len }, () => Math.floor(rand() * 256))));
        } else if (kind === 6) {
          // The same kind of damage to both copies of the superblock or of the table.
          const [a, b] = rand() < 0.5 ? [0, 4096] : [g.tableOffsets[0], g.tableOffsets[1]];
          const o = Math.floor(rand() * 200);
          io.flipBit(a + o, Math.floor(rand() * 8));
          io.flipBit(b + Math.floor(rand() * 200), Math.floor(rand() * 8));
        } else if (kind === 4) {
          // The device is shorter than the image (truncated file or a smaller device).
          const keep = Math.floor(rand() * SPARE);
          const small = new MemSpareIo(keep);
          small.poke(0, io.peek(0, keep));
          io = small;
        } else {
          // Valid magic, pair UUID and checksum around random fields: exercises every check after the CRC.
          forged = true;
          const useTable = rand() < 0.5;
          const copy = rand() < 0.5 ? 0 : 1;
          const off = useTable
            ? g.tableOffsets[copy]
            : g.journalOffsets[copy] + Math.floor(rand() * J) * JOURNAL_RECORD_SIZE;
          const b = io.peek(off, 4096);
          for (let n = 1 + Math.floor(rand() * 12); n > 0; n--) b[Math.floor(rand() * 160)] = Math.floor(rand() * 256);
          if (rand() < 0.3) b.writeUInt32LE(Math.floor(rand() * 4), (useTable ? TB.entryCount : JR.opCount) + 0);
          if (useTable) {
            TABLE_MAGIC.copy(b, 0);
            uuid.copy(b, TB.uuid);
            b.writeUInt32LE(1, TB.version);
            const n = Math.min(b.readUInt32LE(TB.entryCount), 100);
            const r = Math.min(b.readUInt32LE(TB.retiredCount), 100);
            const end = Math.min(4096, TB.body + n * 24 + r * 8);
            if (b.readUInt32LE(TB.entryCount + 4) === 0 && b.readUInt32LE(TB.retiredCount + 4) === 0) {
              b.writeUInt32LE(crc32c(b, TB.body, end, crc32c(b, 0, TB.crc)), TB.crc);
            }
          } else {
            JOURNAL_MAGIC.copy(b, 0);
            uuid.copy(b, JR.uuid);
            const ops = Math.min(b.readUInt16LE(JR.opCount), 123);
            b.writeUInt32LE(crc32c(b, JR.ops, JR.ops + ops * 32, crc32c(b, 0, JR.crc)), JR.crc);
          }
          io.poke(off, b);
        }
        try {
          const r = await RemapStore.open(io, opts());
          const s = snap(r);
          if (!forged && !prefixes.has(s)) {
            if (process.env.FUZZ_DEBUG) {
              const ref = await RemapStore.open(base.clone(), opts());
              console.log(JSON.stringify(r.report), ref.report, [...prefixes].map((p) => p.slice(-90)), s.slice(-90), ref.store.generation, r.store.generation);
            }
            throw new Error(`kind ${kind}: loaded a state that was never committed: ${s}`);
          }
          // Whatever was repaired, opening again gives the same state and needs no more repairs.
          const again = await RemapStore.open(io, opts());
          expect(snap(again)).toBe(s);
          expect(again.report.repairs).toEqual([]);
          bump(r.report.formatted ? 'formatted' : r.report.repairs.length > 0 ? 'repaired' : 'loaded');
        } catch (e) {
          if (!(e instanceof DmrError) || !TYPED.has(e.code)) {
            throw new Error(`kind ${kind}, seed ${seed}, iteration ${it}: untyped failure ${String(e)}`, { cause: e });
          }
          bump(e.code);
        }
      }
    }
    console.log('fuzz outcomes:', JSON.stringify(outcomes));
    expect(Object.values(outcomes).reduce((a, b) => a + b, 0)).toBe(ITER);
    expect(outcomes.repaired ?? 0).toBeGreaterThan(0);
    expect(outcomes.E_SPARE_METADATA ?? 0).toBeGreaterThan(0);
  }, 300_000);

  it('decoders never throw on random input of any length', () => {
    const rand = rng(99);
    const g = computeGeometry({ spareOffset: 0, spareSize: SPARE, blockSize: 512, journalRecords: J });
    const uuid = Buffer.alloc(16, 1);
    for (let i = 0; i < 5000; i++) {
      const len = Math.floor(rand() * 5000);
      const b = Buffer.from(Array.from({ length: len }, () => Math.floor(rand() * 256)));
      if (len >= 8 && rand() < 0.5) (i % 2 ? JOURNAL_MAGIC : TABLE_MAGIC).copy(b, 0);
      expect(decodeTableCopy(b, { uuid, geometry: g, mainBlocks: 1000 }).ok).toBe(false);
      expect(decodeJournalRecord(b, Math.floor(rand() * 10), uuid).ok).toBe(false);
      try {
        expect(decodeSuperblock(b).ok).toBe(false);
      } catch (e) {
        expect(e).toBeInstanceOf(DmrError); // only a valid superblock of another version throws
      }
    }
  });
});
