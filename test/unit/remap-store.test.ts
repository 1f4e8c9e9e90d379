// RemapStore on a simulated disk: format, round-trips, journal replay, crash at every I/O of commit and
// compaction, A/B and superblock repair, refusal of another main's spare, capacity errors, a 1M-entry table.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { DmrError } from '../../src/errors.js';
import {
  decodeJournalRecord,
  decodeSuperblock,
  decodeTableCopy,
  encodeJournalRecord,
  encodeSuperblock,
  encodeTableCopy,
  ENTRY,
  MAX_OPS_PER_RECORD,
  TB,
} from '../../src/remap/format.js';
import { computeGeometry, ENTRY_SIZE, JOURNAL_RECORD_SIZE, metaLenFor } from '../../src/remap/geometry.js';
import { FileSpareIo } from '../../src/remap/io.js';
import { MemSpareIo } from '../../src/remap/mem-io.js';
import { RemapState, type RemapOp } from '../../src/remap/state.js';
import { RemapStore, type OpenOptions, type OpenResult } from '../../src/remap/store.js';
import { RemapTable } from '../../src/remap/table.js';

const T0 = 1_764_000_000_000;
const FP = Buffer.alloc(32, 0xa1);
const MAIN = { size: 1n << 30n, fingerprint: FP }; // 2M blocks of 512
const J = 4; // journal records per journal: small, so compaction happens often
const SLOTS = 64;
const SPARE = metaLenFor(SLOTS, J) + SLOTS * 512;

function opts(extra: Partial<OpenOptions> = {}): OpenOptions {
  let t = T0;
  return { main: MAIN, blockSize: 512, journalRecords: J, now: () => t++, ...extra };
}

const snap = (r: { table: OpenResult['table']; allocator: OpenResult['allocator']; store: RemapStore }): string =>
  JSON.stringify({ t: r.table.toJSON(), retired: r.allocator.retiredSlots(), c: r.store.counters() });

async function code(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    if (!(e instanceof DmrError)) throw e;
    return e.code;
  }
  throw new Error('did not throw');
}

/** Every durable byte of the metadata area and the superblocks, for "unchanged" checks. */
const image = (io: MemSpareIo, len = SPARE): Buffer => io.peek(0, len);

// A fixed workload of commits: remaps (manual, auto, lost), state changes, a move, a retire, unremaps,
// counters, and a batch. With J = 4 it goes through several compactions.
const WORKLOAD: Array<RemapOp[]> = [
  [{ op: 'remap', block: 100, origin: 'manual' }],
  // 40 remaps in one record: the table copy grows past 1 KiB, so torn compactions really tear it.
  Array.from({ length: 40 }, (_, i): RemapOp => ({ op: 'remap', block: 50_000 + 3 * i, origin: 'auto', lost: i % 5 === 0 })),
  [{ op: 'remap', block: 7, origin: 'auto', lost: true, errorCount: 1 }],
  [{ op: 'remap', block: 2_000_000, origin: 'auto' }],
  [{ op: 'mapped', block: 7 }],
  [{ op: 'errors', block: 100, errorCount: 3 }],
  [
    { op: 'remap', block: 5, origin: 'manual' },
    { op: 'remap', block: 6, origin: 'manual' },
    { op: 'remap', block: 8, origin: 'auto', lost: true },
  ],
  [{ op: 'unremap', block: 5 }],
  [{ op: 'move', block: 100 }],
  [{ op: 'retire', slot: 0 }],
  [{ op: 'lost', block: 6 }],
  [],
  [{ op: 'remap', block: 9, origin: 'manual' }],
  [{ op: 'unremap', block: 2_000_000 }],
  [{ op: 'remap', block: 1, origin: 'auto' }],
];

/** Runs the workload on `io` (formatting it first); returns the snapshot after each completed commit. */
async function runWorkload(io: MemSpareIo, onStep?: (k: number) => void): Promise<string[]> {
  const r = await RemapStore.open(io, opts());
  const snaps = [snap(r)];
  for (let k = 0; k < WORKLOAD.length; k++) {
    onStep?.(k);
    if (k === 10) r.store.setCounters({ readErrors: 4, writeErrors: 2 });
    await r.store.commitBatch(WORKLOAD[k] as RemapOp[]);
    snaps.push(snap(r));
  }
  return snaps;
}

describe('format and round-trip', () => {
  it('formats a fresh spare, and opens it again without repairs', async () => {
    const io = new MemSpareIo(SPARE);
    const a = await RemapStore.open(io, opts());
    expect(a.report.formatted).toBe(true);
    expect(a.report.formatReason).toBe('fresh');
    expect(a.allocator.slotCount).toBe(SLOTS);
    expect(io.unflushed).toBe(0);
    const b = await RemapStore.open(io, opts());
    expect(b.report).toMatchObject({ formatted: false, repairs: [], replayedRecords: 0 });
    expect(b.store.pairId).toBe(a.store.pairId);
    expect(b.table.size).toBe(0);
  });

  it('gives back every op, counter and retired slot after reopen, before and after compactions', async () => {
    const io = new MemSpareIo(SPARE);
    const snaps = await runWorkload(io);
    const last = snaps[snaps.length - 1] as string;
    const r = await RemapStore.open(io, opts());
    expect(snap(r)).toBe(last);
    expect(r.report.repairs).toEqual([]);
    expect(r.store.counters()).toEqual({ manualRemaps: 4, autoRemaps: 44, unremaps: 2, readErrors: 4, writeErrors: 2, scanRemaps: 0 });
    expect(r.allocator.retiredSlots()).toEqual([0]);
    expect(r.table.get(6)?.state).toBe('lost');
    expect(r.store.generation).toBeGreaterThan(3); // several compactions happened
    await r.store.compact();
    expect(snap(await RemapStore.open(io, opts()))).toBe(last);
  });

  it('encodes and decodes each structure exactly', () => {
    const g = computeGeometry({ spareOffset: 8192, spareSize: 1 << 20, blockSize: 4096, journalRecords: 16 });
    const uuid = Buffer.alloc(16, 9);
    const sb = { uuid, mainSize: 123456789n * 4096n, fingerprint: FP, geometry: g, formatTime: T0 };
    const d = decodeSuperblock(encodeSuperblock(sb));
    expect(d).toEqual({ ok: true, value: sb });

    const s = new RemapState(g, 1000);
    s.apply(s.resolve({ op: 'remap', block: 999, origin: 'auto', lost: true, errorCount: 70000 }, T0));
    s.apply(s.resolve({ op: 'remap', block: 3, origin: 'manual' }, 2 ** 48 - 1));
    s.apply(s.resolve({ op: 'retire', slot: 5 }, T0));
    s.counters = { manualRemaps: 2 ** 53 - 1, autoRemaps: 1, unremaps: 2, readErrors: 3, writeErrors: 4, scanRemaps: 5 };
    const { buf, crc } = encodeTableCopy(s, uuid, 7, 42);
    const area = Buffer.alloc(g.tableCopyLen);
    buf.copy(area);
    const t = decodeTableCopy(area, { uuid, geometry: g, mainBlocks: 1000 });
    if (!t.ok) throw new Error(t.why);
    expect(t.value).toMatchObject({ generation: 7, journalStartSeq: 42, crc });
    expect(t.value.state.table.toJSON()).toEqual(s.table.toJSON());
    expect(t.value.state.table.get(999)?.errorCount).toBe(0xffff);
    expect(t.value.state.allocator.retiredSlots()).toEqual([5]);
    expect(t.value.state.allocator.free).toBe(s.allocator.free);
    expect(t.value.state.counters).toEqual(s.counters);
    expect(decodeTableCopy(area, { uuid: Buffer.alloc(16), geometry: g, mainBlocks: 1000 }).ok).toBe(false);
    expect(decodeTableCopy(area, { uuid, geometry: g, mainBlocks: 999 }).ok).toBe(false); // block 999 out of range

    const ops = Array.from({ length: MAX_OPS_PER_RECORD }, (_, i) =>
      s.resolve({ op: 'remap', block: i, slot: i, origin: i % 2 ? 'auto' : 'manual', lost: i % 3 === 0, errorCount: i }, T0 + i),
    );
    const rb = Buffer.alloc(JOURNAL_RECORD_SIZE);
    const rec = { generation: 3, seq: 2 ** 40, prevCrc: 0xdeadbeef, counters: s.counters, ops };
    const rcrc = encodeJournalRecord(uuid, rec, rb);
    expect(decodeJournalRecord(rb, 0, uuid)).toEqual({ ok: true, value: { ...rec, crc: rcrc } });
    expect(() => encodeJournalRecord(uuid, { ...rec, ops: [...ops, ops[0]!] })).toThrow(DmrError);
  });

  it('persists one remap with exactly one write and one flush (outside compaction)', async () => {
    const io = new MemSpareIo(metaLenFor(SLOTS, 64) + SLOTS * 512);
    const r = await RemapStore.open(io, opts({ journalRecords: 64 }));
    const g = r.store.geometry;
    for (let i = 0; i < 20; i++) {
      io.resetStats();
      const op = await r.store.commit({ op: 'remap', block: 1000 + i, origin: 'manual' });
      expect(op.slot).toBe(i);
      expect(io.stats.writes).toBe(1);
      expect(io.stats.flushes).toBe(1);
      expect(io.log).toEqual([
        { kind: 'write', offset: g.journalOffsets[1] + i * JOURNAL_RECORD_SIZE, length: JOURNAL_RECORD_SIZE },
        { kind: 'flush' },
      ]);
      // Applied only once durable.
      expect(r.table.get(1000 + i)?.slot).toBe(i);
    }
    // A batch of 60 ops is one record: still one write and one flush.
    io.resetStats();
    const ops: RemapOp[] = Array.from({ length: 40 }, (_, i) => ({ op: 'remap', block: 5000 + i, origin: 'auto' }));
    await r.store.commitBatch(ops);
    expect(io.stats).toMatchObject({ writes: 1, flushes: 1, bytesWritten: JOURNAL_RECORD_SIZE });
  });

  it('a batch longer than one record is still one write and one flush', async () => {
    const slots = 400;
    const io = new MemSpareIo(metaLenFor(slots, 8) + slots * 512);
    const r = await RemapStore.open(io, opts({ journalRecords: 8 }));
    io.resetStats();
    const ops: RemapOp[] = Array.from({ length: 300 }, (_, i) => ({ op: 'remap', block: i * 3, origin: 'auto' }));
    await r.store.commitBatch(ops);
    expect(io.stats).toMatchObject({ writes: 1, flushes: 1, bytesWritten: 3 * JOURNAL_RECORD_SIZE });
    const again = await RemapStore.open(io, opts());
    expect(again.table.size).toBe(300);
    expect(snap(again)).toBe(snap(r));
  });
});

describe('batches and the fingerprint helper', () => {
  it('a batch bigger than the free journal space compacts in the middle and loses nothing', async () => {
    const slots = 400;
    const io = new MemSpareIo(metaLenFor(slots, 2) + slots * 512);
    const r = await RemapStore.open(io, opts({ journalRecords: 2 }));
    await r.store.commit({ op: 'remap', block: 1, origin: 'manual' }); // journal: 1 of 2 used
    const gen = r.store.generation;
    io.resetStats();
    const ops: RemapOp[] = Array.from({ length: 3 * MAX_OPS_PER_RECORD }, (_, i) => ({ op: 'remap', block: 10 + i, origin: 'auto' }));
    await r.store.commitBatch(ops);
    expect(r.store.generation).toBe(gen + 1);
    expect(io.stats).toMatchObject({ writes: 3, flushes: 3 }); // 1 record, compaction, 2 records: each + flush
    const again = await RemapStore.open(io, opts());
    expect(again.table.size).toBe(1 + 3 * MAX_OPS_PER_RECORD);
    expect(snap(again)).toBe(snap(r));
  });

  it('mainFingerprint is 32 bytes, stable, and depends on every part', async () => {
    const { mainFingerprint } = await import('../../src/remap/store.js');
    const a = mainFingerprint('wwn-0x5000c500a1b2c3d4', 1n << 40n);
    expect(a).toHaveLength(32);
    expect(mainFingerprint('wwn-0x5000c500a1b2c3d4', 1n << 40n).equals(a)).toBe(true);
    expect(mainFingerprint('wwn-0x5000c500a1b2c3d4', (1n << 40n) + 512n).equals(a)).toBe(false);
    expect(mainFingerprint('ab', 'c').equals(mainFingerprint('a', 'bc'))).toBe(false);
  });
});

describe('journal replay', () => {
  async function withRecords(n: number): Promise<{ io: MemSpareIo; snaps: string[]; store: RemapStore }> {
    const io = new MemSpareIo(metaLenFor(SLOTS, 16) + SLOTS * 512);
    const r = await RemapStore.open(io, opts({ journalRecords: 16 }));
    const snaps = [snap(r)];
    for (let i = 0; i < n; i++) {
      await r.store.commit({ op: 'remap', block: 10 * i, origin: i % 2 ? 'auto' : 'manual' });
      snaps.push(snap(r));
    }
    return { io, snaps, store: r.store };
  }
  const recOff = (s: RemapStore, i: number): number => s.geometry.journalOffsets[1] + i * JOURNAL_RECORD_SIZE;

  it('replays every committed record', async () => {
    const { io, snaps } = await withRecords(5);
    const r = await RemapStore.open(io, opts());
    expect(r.report.replayedRecords).toBe(5);
    expect(snap(r)).toBe(snaps[5]);
  });

  it('stops at a truncated tail (a record torn half way, or never written)', async () => {
    const { io, snaps, store } = await withRecords(5);
    io.poke(recOff(store, 4) + 64, Buffer.alloc(4096 - 64)); // the last record torn after its first 64 bytes
    const r = await RemapStore.open(io, opts());
    expect(r.report.replayedRecords).toBe(4);
    expect(r.report.journalStop).toMatch(/record 4: bad checksum/);
    expect(snap(r)).toBe(snaps[4]);
    io.poke(recOff(store, 2), Buffer.alloc(JOURNAL_RECORD_SIZE));
    expect(snap(await RemapStore.open(io, opts()))).toBe(snaps[2]);
  });

  it('stops at a corrupt middle record, and never replays the stale records after it', async () => {
    const { io, snaps, store } = await withRecords(5);
    io.flipBit(recOff(store, 1) + 130, 3); // inside record 1's op
    const r = await RemapStore.open(io, opts());
    expect(r.report.replayedRecords).toBe(1);
    expect(snap(r)).toBe(snaps[1]);
    // The next commit goes where record 1 was; records 2..4 (valid, same generation, consecutive sequence
    // numbers) must not be replayed behind it: they are not chained to the new record.
    await r.store.commit({ op: 'remap', block: 777, origin: 'manual' });
    const expected = snap(r);
    const again = await RemapStore.open(io, opts());
    expect(again.report.replayedRecords).toBe(2);
    expect(again.report.journalStop).toMatch(/record 2: not chained/);
    expect(snap(again)).toBe(expected);
    expect(again.table.has(20)).toBe(false);
  });

  it('stops at a record of another generation or sequence, even with a valid checksum', async () => {
    const { io, snaps, store } = await withRecords(3);
    const s = new RemapState(store.geometry, 2_000_000);
    const prev = decodeJournalRecord(io.peek(recOff(store, 2), JOURNAL_RECORD_SIZE), 0, store.uuid);
    if (!prev.ok) throw new Error(prev.why);
    const op = s.resolve({ op: 'remap', block: 999, slot: 60, origin: 'manual' }, T0);
    const forge = (generation: number, seq: number): Buffer => {
      const b = Buffer.alloc(JOURNAL_RECORD_SIZE);
      encodeJournalRecord(store.uuid, { generation, seq, prevCrc: prev.value.crc, counters: prev.value.counters, ops: [op] }, b);
      return b;
    };
    io.poke(recOff(store, 3), forge(store.generation + 1, prev.value.seq + 1));
    let r = await RemapStore.open(io, opts());
    expect(r.report.journalStop).toMatch(/record 3: generation/);
    expect(snap(r)).toBe(snaps[3]);
    io.poke(recOff(store, 3), forge(store.generation, prev.value.seq + 2));
    r = await RemapStore.open(io, opts());
    expect(r.report.journalStop).toMatch(/record 3: sequence/);
    expect(snap(r)).toBe(snaps[3]);
    io.poke(recOff(store, 3), forge(store.generation, prev.value.seq + 1)); // a well-formed next record: replayed
    r = await RemapStore.open(io, opts());
    expect(r.table.get(999)?.slot).toBe(60);
  });
});

describe('crash at every I/O of format, commit and compaction', () => {
  // Count the I/Os of the whole workload, then crash at each one in turn: the disk keeps none, all, or every
  // other one of the unflushed writes, and the write being done when the crash hit is torn after 0, 1, 2 or
  // 9 sectors (disks write a 512-byte sector atomically, not less).
  it('reloads exactly the committed ops (plus at most the one in flight), and keeps working', async () => {
    const ref = new MemSpareIo(SPARE);
    const snaps = await runWorkload(ref);
    const totalIo = ref.stats.writes + ref.stats.flushes;
    expect(totalIo).toBeGreaterThan(40);
    let checked = 0;
    for (let at = 0; at < totalIo; at++) {
      for (const mode of ['none', 'all', 'odd', 'even'] as const) {
        for (const torn of [0, 512, 1024, 4096 + 512]) {
          const io = new MemSpareIo(SPARE);
          io.armCrash({ atIo: at, tornBytes: torn });
          let done = -1; // commits completed (−1: format not completed)
          try {
            await runWorkload(io, (k) => (done = k));
            throw new Error('no crash');
          } catch (e) {
            if (!io.crashed) throw e;
            expect(e).toBeInstanceOf(DmrError);
            expect((e as DmrError).code).toBe('E_SPARE_IO');
          }
          const keep = mode === 'none' || mode === 'all' ? mode : (i: number) => i % 2 === (mode === 'odd' ? 1 : 0);
          const after = io.afterCrash(keep);
          const r = await RemapStore.open(after, opts());
          const got = snap(r);
          const committed = Math.max(done, 0); // commits whose promise resolved
          const allowed = [snaps[committed], snaps[committed + 1]];
          if (!allowed.includes(got)) {
            throw new Error(`crash at I/O ${at} (${mode}, torn ${torn}) after ${committed} commits: got ${got}\nwanted ${allowed[0]}`);
          }
          // And the recovered store keeps working across another reopen.
          await r.store.commit({ op: 'remap', block: 123_456, origin: 'manual' });
          const want = snap(r);
          const again = await RemapStore.open(after, opts());
          expect(snap(again)).toBe(want);
          expect(again.report.repairs).toEqual([]);
          checked++;
        }
      }
    }
    console.log(`crash points checked: ${checked} (${totalIo} I/Os x 4 write-back modes x 4 tear sizes)`);
  }, 120_000);
});

describe('repair of corrupt copies', () => {
  async function worked(): Promise<{ io: MemSpareIo; last: string; r: OpenResult }> {
    const io = new MemSpareIo(SPARE);
    const snaps = await runWorkload(io);
    const r = await RemapStore.open(io, opts());
    return { io, last: snaps[snaps.length - 1] as string, r };
  }

  it('rewrites a corrupt older table copy from the current state', async () => {
    const { io, last, r } = await worked();
    const g = r.store.geometry;
    const older = r.report.loadedCopy === 0 ? 1 : 0;
    io.flipBit(g.tableOffsets[older] + 140, 0);
    io.resetStats();
    const fixed = await RemapStore.open(io, opts());
    expect(snap(fixed)).toBe(last);
    expect(fixed.report.repairs).toEqual([expect.stringMatching(new RegExp(`table copy ${'AB'[older]} \\(entry 0: block out of order or range\\) rewritten`))]);
    expect(io.log).toContainEqual({ kind: 'write', offset: g.tableOffsets[older], length: 4096 });
    const clean = await RemapStore.open(io, opts());
    expect(clean.report.repairs).toEqual([]);
    expect(snap(clean)).toBe(last);
  });

  it('loses nothing when the newest table copy is corrupt: older copy + both journals, then repair', async () => {
    const { io, last, r } = await worked();
    const g = r.store.geometry;
    // Make sure the current journal holds records behind the newest copy.
    await r.store.commit({ op: 'remap', block: 31337, origin: 'auto' });
    const want = snap(r);
    expect(r.store.journalUsed).toBeGreaterThan(0);
    const newest = r.report.loadedCopy;
    io.flipBit(g.tableOffsets[newest] + 40, 1); // in its header
    io.resetStats();
    const fixed = await RemapStore.open(io, opts());
    expect(fixed.report.loadedCopy).toBe(newest === 0 ? 1 : 0);
    expect(snap(fixed)).toBe(want);
    expect(fixed.report.repairs).toHaveLength(1);
    expect(io.log).toContainEqual({ kind: 'write', offset: g.tableOffsets[newest], length: 4096 });
    const clean = await RemapStore.open(io, opts());
    expect(clean.report.repairs).toEqual([]);
    expect(snap(clean)).toBe(want);
    void last;
  });

  it('builds no entry of a copy whose header count was raised (stale entries after the real ones) before its checksum holds', async () => {
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts());
    for (let i = 1; i <= 5; i++) await r.store.commit({ op: 'remap', block: 10 * i, origin: 'manual' });
    await r.store.compact();
    const want = snap(r);
    const g = r.store.geometry;
    const again = await RemapStore.open(io, opts());
    const newest = again.report.loadedCopy;
    const at = g.tableOffsets[newest];
    const real = r.table.size;
    expect(io.peek(at + TB.entryCount, 4).readUInt32LE()).toBe(real);
    // Stale, well-formed, ascending entries after the real ones (what a larger table once left there), and a
    // bit flip raising the count to cover them; the checksum is not fixed.
    const stale = 40;
    for (let i = real; i < stale; i++) {
      const e = Buffer.alloc(ENTRY_SIZE);
      e.writeUInt32LE(100_000 + i, ENTRY.block);
      e.writeUInt32LE(i, ENTRY.slot);
      io.poke(at + TB.body + i * ENTRY_SIZE, e);
    }
    const n = Buffer.alloc(4);
    n.writeUInt32LE(stale);
    io.poke(at + TB.entryCount, n);
    const built = vi.spyOn(RemapTable.prototype, 'insertNew');
    try {
      const decoded = decodeTableCopy(io.peek(at, g.tableCopyLen), { uuid: r.store.uuid, geometry: g, mainBlocks: 2_000_000 });
      expect(decoded).toEqual({ ok: false, why: 'bad checksum' });
      const fixed = await RemapStore.open(io, opts());
      expect(fixed.report.loadedCopy).toBe(newest === 0 ? 1 : 0);
      expect(snap(fixed)).toBe(want);
      expect(fixed.report.repairs).toEqual([expect.stringMatching(/bad checksum/)]);
      // Only the entries of the copy that was loaded were ever built: none of the stale ones.
      expect(built.mock.calls.filter((c) => c[0] >= 100_000)).toEqual([]);
      expect(built.mock.calls.length).toBeLessThanOrEqual(real);
    } finally {
      built.mockRestore();
    }
  });

  it('refuses when both table copies are corrupt, writing nothing; force formats', async () => {
    const { io, r } = await worked();
    const g = r.store.geometry;
    io.flipBit(g.tableOffsets[0] + 200, 2);
    io.flipBit(g.tableOffsets[1] + 8, 2);
    const before = image(io);
    io.resetStats();
    await expect(RemapStore.open(io, opts())).rejects.toMatchObject({ code: 'E_SPARE_METADATA' });
    expect(io.stats.writes).toBe(0);
    expect(image(io).equals(before)).toBe(true);
    const f = await RemapStore.open(io, opts({ force: true }));
    expect(f.report.formatted).toBe(true);
    expect(f.table.size).toBe(0);
  });

  it('repairs a corrupt superblock copy from the other one', async () => {
    for (const bad of [0, 1]) {
      const { io, last } = await worked();
      io.flipBit(bad * 4096 + 33, 5); // main size field
      io.resetStats();
      const fixed = await RemapStore.open(io, opts());
      expect(snap(fixed)).toBe(last);
      expect(fixed.report.repairs).toEqual([`superblock copy ${bad} rewritten from copy ${1 - bad}`]);
      expect(io.log[0]).toEqual({ kind: 'write', offset: bad * 4096, length: 4096 });
      expect(io.peek(0, 4096).equals(io.peek(4096, 4096))).toBe(true);
      expect((await RemapStore.open(io, opts())).report.repairs).toEqual([]);
    }
  });

  it('refuses a spare whose superblocks are both corrupt but still ours; formats one with no superblock at all', async () => {
    const { io } = await worked();
    io.flipBit(100, 0);
    io.flipBit(4096 + 100, 0);
    const before = image(io);
    await expect(RemapStore.open(io, opts())).rejects.toMatchObject({ code: 'E_SPARE_METADATA' });
    expect(image(io).equals(before)).toBe(true);
    io.poke(0, Buffer.alloc(8192));
    const fresh = await RemapStore.open(io, opts());
    expect(fresh.report.formatReason).toBe('fresh');
  });
});

describe('refusals', () => {
  it('refuses the spare of another main device and leaves it unchanged; force takes it over', async () => {
    const io = new MemSpareIo(SPARE);
    const snaps = await runWorkload(io);
    const before = image(io);
    io.resetStats();
    for (const main of [
      { size: MAIN.size, fingerprint: Buffer.alloc(32, 0xb2) },
      { size: MAIN.size + 512n, fingerprint: FP },
    ]) {
      const err = await RemapStore.open(io, opts({ main })).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DmrError);
      expect((err as DmrError).code).toBe('E_SPARE_FOREIGN');
      expect((err as DmrError).message).toMatch(/another main device.*--force-format/);
    }
    await expect(RemapStore.open(io, opts({ blockSize: 4096 }))).rejects.toMatchObject({ code: 'E_BLOCK_SIZE' });
    await expect(RemapStore.open(io, opts({ spareSize: SPARE - 4096 }))).rejects.toMatchObject({ code: 'E_SPARE_METADATA' });
    await expect(RemapStore.format(io, opts())).rejects.toMatchObject({ code: 'E_SPARE_METADATA' });
    expect(io.stats.writes).toBe(0);
    expect(image(io).equals(before)).toBe(true);
    expect(snap(await RemapStore.open(io, opts()))).toBe(snaps[snaps.length - 1]);

    const other = { size: MAIN.size, fingerprint: Buffer.alloc(32, 0xb2) };
    const taken = await RemapStore.open(io, opts({ main: other, force: true }));
    expect(taken.report.formatted).toBe(true);
    expect(taken.report.formatReason).toMatch(/^forced over: the spare holds the remap table of another main/);
    expect(taken.table.size).toBe(0);
    await expect(RemapStore.open(io, opts())).rejects.toMatchObject({ code: 'E_SPARE_FOREIGN' });
    expect((await RemapStore.open(io, opts({ main: other }))).report.formatted).toBe(false);
  });

  it('refuses a spare too small for its metadata and one slot, writing nothing', async () => {
    const io = new MemSpareIo(metaLenFor(1, J) + 511);
    expect(await code(RemapStore.open(io, opts()))).toBe('E_SPARE_TOO_SMALL');
    expect(io.stats.writes).toBe(0);
    const io2 = new MemSpareIo(1 << 20);
    expect(await code(RemapStore.open(io2, opts({ spareOffset: 4096, spareSize: 1 << 20 })))).toBe('E_SPARE_TOO_SMALL');
    expect(await code(RemapStore.open(io2, opts({ spareOffset: 100 })))).toBe('E_USAGE');
    expect(io2.stats.writes).toBe(0);
    // The smallest spare that works holds exactly one slot.
    const io3 = new MemSpareIo(metaLenFor(1, J) + 512);
    expect((await RemapStore.open(io3, opts())).allocator.slotCount).toBe(1);
  });

  it('works in a spare region at an offset, leaving the bytes around it alone', async () => {
    const off = 1 << 16;
    const io = new MemSpareIo(off + SPARE + 8192);
    io.poke(0, Buffer.alloc(off, 0x5a));
    io.poke(off + SPARE, Buffer.alloc(8192, 0x5b));
    const r = await RemapStore.open(io, opts({ spareOffset: off, spareSize: SPARE }));
    expect(r.allocator.slotCount).toBe(SLOTS);
    expect(r.allocator.offsetOf(SLOTS - 1) + 512).toBe(off + SPARE);
    await r.store.commitBatch(WORKLOAD.find((w) => w.length === 3) as RemapOp[]);
    expect(io.clone().peek(0, off).equals(Buffer.alloc(off, 0x5a))).toBe(true);
    expect(io.clone().peek(off + SPARE, 8192).equals(Buffer.alloc(8192, 0x5b))).toBe(true);
    expect(snap(await RemapStore.open(io, opts({ spareOffset: off })))).toBe(snap(r));
  });

  it('spare full and ops that do not fit: typed error, nothing written, table unchanged', async () => {
    const io = new MemSpareIo(metaLenFor(3, J) + 3 * 512);
    const r = await RemapStore.open(io, opts());
    await r.store.commitBatch([
      { op: 'remap', block: 1, origin: 'manual' },
      { op: 'remap', block: 2, origin: 'manual' },
      { op: 'remap', block: 3, origin: 'manual' },
    ]);
    const before = snap(r);
    io.resetStats();
    expect(await code(r.store.commit({ op: 'remap', block: 4, origin: 'auto' }))).toBe('E_SPARE_FULL');
    expect(await code(r.store.commit({ op: 'remap', block: 1, slot: 0, origin: 'auto' }))).toBe('E_REMAP_STATE');
    expect(await code(r.store.commit({ op: 'unremap', block: 4 }))).toBe('E_REMAP_STATE');
    expect(await code(r.store.commit({ op: 'remap', block: Number(MAIN.size / 512n), origin: 'auto' }))).toBe('E_REMAP_STATE');
    expect(
      await code(r.store.commitBatch([{ op: 'unremap', block: 1 }, { op: 'remap', block: 9, origin: 'auto' }, { op: 'remap', block: 10, origin: 'auto' }])),
    ).toBe('E_SPARE_FULL');
    expect(io.stats.writes).toBe(0);
    expect(snap(r)).toBe(before);
    // The store still works: free one, use it.
    await r.store.commitBatch([{ op: 'unremap', block: 1 }, { op: 'remap', block: 9, origin: 'auto' }]);
    expect(r.table.get(9)?.slot).toBe(0);
  });

  it('stops committing after an I/O error until reopened', async () => {
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts());
    io.armCrash({ atIo: 1 }); // the flush of the next commit
    expect(await code(r.store.commit({ op: 'remap', block: 1, origin: 'manual' }))).toBe('E_SPARE_IO');
    expect(r.table.has(1)).toBe(false);
    expect(await code(r.store.commit({ op: 'remap', block: 2, origin: 'manual' }))).toBe('E_SPARE_IO');
  });
});

describe('counters survive restart', () => {
  it('keeps error totals and remap totals across reopen and compaction', async () => {
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts());
    await r.store.commit({ op: 'remap', block: 1, origin: 'manual' });
    await r.store.commit({ op: 'unremap', block: 1 });
    r.store.setCounters({ readErrors: 10, writeErrors: 3 });
    await r.store.commitBatch([]);
    const want = { manualRemaps: 1, autoRemaps: 0, unremaps: 1, readErrors: 10, writeErrors: 3, scanRemaps: 0 };
    expect((await RemapStore.open(io, opts())).store.counters()).toEqual(want);
    r.store.setCounters({ readErrors: 11 });
    await r.store.compact();
    expect((await RemapStore.open(io, opts())).store.counters()).toEqual({ ...want, readErrors: 11 });
  });
});

describe('FileSpareIo', () => {
  it('works on a real file: format, commits, compaction, reopen', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmremap-store-'));
    const file = path.join(dir, 'spare.img');
    fs.writeFileSync(file, '');
    fs.truncateSync(file, SPARE);
    try {
      const io = await FileSpareIo.open(file);
      expect(io.size).toBe(BigInt(SPARE));
      const r = await RemapStore.open(io, opts());
      for (const ops of WORKLOAD) await r.store.commitBatch(ops);
      const want = snap(r);
      await io.close();
      const io2 = await FileSpareIo.open(file);
      expect(snap(await RemapStore.open(io2, opts()))).toBe(want);
      await io2.close();
      await expect(FileSpareIo.open(path.join(dir, 'missing'))).rejects.toMatchObject({ code: 'E_SPARE_IO' });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a table of 1M entries', () => {
  it('loads, exports sorted arrays, and persists a remap with one write and one flush', async () => {
    const N = 1_000_000;
    const slots = N + 1000;
    const size = metaLenFor(slots, 1024) + slots * 4096;
    const io = new MemSpareIo(size);
    const big = { size: 1n << 42n, fingerprint: FP }; // 4 TiB main, 2^30 blocks of 4096
    const o = { main: big, blockSize: 4096 as const, now: () => T0 };
    const r = await RemapStore.open(io, o);
    expect(r.allocator.slotCount).toBeGreaterThanOrEqual(slots);
    // Build the state directly (a million commits would only test the journal), then compact it to disk.
    let x = 12345;
    const t0 = performance.now();
    for (let i = 0; i < N; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const block = x >>> 2; // < 2^30
      if (r.table.has(block)) continue;
      r.store.state.apply(r.store.state.resolve({ op: 'remap', block, slot: r.allocator.peek(), origin: i % 3 ? 'auto' : 'manual', lost: i % 7 === 0 }, T0));
    }
    const n = r.table.size;
    await r.store.compact();
    const tBuild = performance.now() - t0;
    const t1 = performance.now();
    const again = await RemapStore.open(io, o);
    const tLoad = performance.now() - t1;
    expect(again.table.size).toBe(n);
    const t2 = performance.now();
    const sorted = again.table.exportSorted();
    const tExport = performance.now() - t2;
    expect(sorted.count).toBe(n);
    for (let i = 1; i < sorted.count; i += 997) expect(sorted.blocks[i]! > sorted.blocks[i - 1]!).toBe(true);
    io.resetStats();
    const t3 = performance.now();
    await again.store.commit({ op: 'remap', block: 2 ** 30 - 1, origin: 'manual' });
    const tCommit = performance.now() - t3;
    expect(io.stats.writes).toBe(1);
    expect(io.stats.flushes).toBe(1);
    console.log(
      `1M table: ${n} entries; build+compact ${tBuild.toFixed(0)} ms, load ${tLoad.toFixed(0)} ms ` +
        `(table copy ${(again.store.geometry.tableCopyLen / 2 ** 20).toFixed(1)} MiB), exportSorted ${tExport.toFixed(0)} ms, ` +
        `one remap commit: ${io.stats.writes} write (${io.stats.bytesWritten} bytes) + ${io.stats.flushes} flush, ${tCommit.toFixed(2)} ms in memory`,
    );
  }, 120_000);
});

describe('"data on main" of a lost block', () => {
  const onMain = (t: OpenResult['table']): number[] => t.toJSON().filter((e) => e.dataOnMain).map((e) => e.block);
  const copyOnMain = (io: MemSpareIo, store: RemapStore, c: 0 | 1): number[] => {
    const g = store.geometry;
    const d = decodeTableCopy(io.peek(g.tableOffsets[c], g.tableCopyLen), { uuid: store.uuid, geometry: g, mainBlocks: 2_000_000 });
    if (!d.ok) throw new Error(d.why);
    return onMain(d.value.state.table);
  };
  // remap/lost set it; mapped, move and a lost without it clear it; errors keeps it.
  const ops: RemapOp[] = [
    { op: 'remap', block: 10, origin: 'auto', lost: true, dataOnMain: true },
    { op: 'remap', block: 11, origin: 'auto', lost: true },
    { op: 'remap', block: 12, origin: 'manual', lost: true, dataOnMain: true },
    { op: 'mapped', block: 12 },
    { op: 'remap', block: 13, origin: 'manual' },
    { op: 'lost', block: 13, dataOnMain: true },
    { op: 'remap', block: 14, origin: 'auto', lost: true, dataOnMain: true },
    { op: 'move', block: 14 },
    { op: 'remap', block: 15, origin: 'auto', lost: true, dataOnMain: true },
    { op: 'errors', block: 15, errorCount: 4 },
    { op: 'remap', block: 16, origin: 'auto', lost: true, dataOnMain: true },
    { op: 'lost', block: 16 },
  ];

  it('is set by remap and lost, cleared by mapped, move and lost without it, and survives replay, compaction and both table copies', async () => {
    const io = new MemSpareIo(metaLenFor(SLOTS, 64) + SLOTS * 512);
    const o = opts({ journalRecords: 64 });
    const r = await RemapStore.open(io, o);
    for (const op of ops) await r.store.commit(op);
    expect(onMain(r.table)).toEqual([10, 13, 15]);
    expect(r.table.get(15)).toMatchObject({ state: 'lost', errorCount: 4, dataOnMain: true });
    const want = snap(r);
    // Reload from the journal.
    const replayed = await RemapStore.open(io, o);
    expect(replayed.report.replayedOps).toBe(ops.length);
    expect(snap(replayed)).toBe(want);
    expect(onMain(replayed.table)).toEqual([10, 13, 15]);
    // Compact, reload from the table copy (nothing to replay); compact again: both copies hold it.
    await replayed.store.compact();
    const compacted = await RemapStore.open(io, o);
    expect(compacted.report.replayedOps).toBe(0);
    expect(snap(compacted)).toBe(want);
    await compacted.store.compact();
    expect(copyOnMain(io, compacted.store, 0)).toEqual([10, 13, 15]);
    expect(copyOnMain(io, compacted.store, 1)).toEqual([10, 13, 15]);
    // A write to the block (mapped) clears it for good.
    await compacted.store.commit({ op: 'mapped', block: 10 });
    expect(onMain((await RemapStore.open(io, o)).table)).toEqual([13, 15]);
  });

  it('is refused on an op that does not leave the block lost: typed error, nothing written', async () => {
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts());
    await r.store.commit({ op: 'remap', block: 5, origin: 'manual' });
    const before = image(io);
    expect(await code(r.store.commit({ op: 'remap', block: 6, origin: 'auto', lost: false, dataOnMain: true }))).toBe('E_REMAP_STATE');
    const s = r.store.state;
    const bad = { ...s.resolve({ op: 'mapped', block: 5 }, T0), dataOnMain: true };
    expect(await code(() => s.apply(bad))).toBe('E_REMAP_STATE');
    expect(image(io).equals(before)).toBe(true);
    expect(r.table.get(5)).toMatchObject({ state: 'mapped', dataOnMain: false });
    expect(r.table.has(6)).toBe(false);
  });

  it('journal op flag: decoded on remap and lost of a version-2 spare; a bad op elsewhere and on version 1', () => {
    const uuid = Buffer.alloc(16, 3);
    const g = computeGeometry({ spareOffset: 0, spareSize: SPARE, blockSize: 512, journalRecords: J });
    const s = new RemapState(g, 1000);
    const lostOp = s.resolve({ op: 'lost', block: 3, dataOnMain: true }, T0);
    const remapOp = s.resolve({ op: 'remap', block: 4, slot: 1, origin: 'auto', lost: true, dataOnMain: true }, T0);
    expect([lostOp.dataOnMain, remapOp.dataOnMain]).toEqual([true, true]);
    const rec = (o: typeof lostOp) => {
      const b = Buffer.alloc(JOURNAL_RECORD_SIZE);
      encodeJournalRecord(uuid, { generation: 1, seq: 0, prevCrc: 0, counters: s.counters, ops: [o] }, b);
      return b;
    };
    for (const o of [lostOp, remapOp]) {
      const d = decodeJournalRecord(rec(o), 0, uuid, 2);
      expect(d.ok && d.value.ops[0]).toEqual(o);
      expect(decodeJournalRecord(rec(o), 0, uuid, 1)).toEqual({ ok: false, why: 'bad op' });
    }
    const mappedWithIt = { ...s.resolve({ op: 'mapped', block: 3 }, T0), dataOnMain: true };
    expect(decodeJournalRecord(rec(mappedWithIt), 0, uuid, 2)).toEqual({ ok: false, why: 'bad op' });
    const remapNotLost = { ...remapOp, lost: false };
    expect(decodeJournalRecord(rec(remapNotLost), 0, uuid, 2)).toEqual({ ok: false, why: 'bad op' });
  });

  it('is never stored on a version-1 spare: its entries say false, before and after a restart', async () => {
    const io = new MemSpareIo(SPARE);
    const o = opts({ formatVersion: 1 });
    const r = await RemapStore.open(io, o);
    expect(r.store.geometry.version).toBe(1);
    for (const op of ops) await r.store.commit(op); // J = 4: compacts on the way
    expect(onMain(r.table)).toEqual([]);
    const want = snap(r);
    const again = await RemapStore.open(io, o);
    expect(again.report.replayedOps).toBeGreaterThan(0);
    expect(snap(again)).toBe(want);
    await again.store.compact();
    const compacted = await RemapStore.open(io, o);
    expect(snap(compacted)).toBe(want);
    expect(onMain(compacted.table)).toEqual([]);
    // A resolved op carrying it is refused outright on version 1 (the journal could not store it).
    const s = compacted.store.state;
    expect(await code(() => s.apply({ ...s.resolve({ op: 'lost', block: 10 }, T0), dataOnMain: true }))).toBe('E_REMAP_STATE');
  });
});
