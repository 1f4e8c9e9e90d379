// The persisted scanRemaps counter (issue 15: remaps by origin in the metrics): of the automatic remaps, those
// of origin scan. Counter slot 5, stored by format version 3 only; a version-1 or version-2 spare stores a
// scan remap as auto, so its scanRemaps stays 0 and its slot 5 stays reserved (written as 0, ignored when
// read). Counted when a remap op is applied, like autoRemaps: at commit, and at replay through each record's
// counter snapshot (never counted twice); kept by compaction and reopen; not decremented by unremap. A
// reserved counter slot that is not 0 breaks no reader: counters a version does not store are ignored.
import { describe, expect, it } from 'vitest';
import { crc32c } from '../../src/remap/crc32c.js';
import { decodeJournalRecord, decodeTableCopy, encodeJournalRecord, encodeTableCopy, JR, TB } from '../../src/remap/format.js';
import { computeGeometry, JOURNAL_RECORD_SIZE, metaLenFor } from '../../src/remap/geometry.js';
import { MemSpareIo } from '../../src/remap/mem-io.js';
import { RemapState } from '../../src/remap/state.js';
import { RemapStore, type OpenOptions } from '../../src/remap/store.js';
import { RemapStore as V2Store } from './fixtures/remap-store-format-v2/store.mjs';

const MAIN = { size: 1n << 30n, fingerprint: Buffer.alloc(32, 0xc3) };
const SLOTS = 256;
const J = 4;
const SPARE = metaLenFor(SLOTS, J) + SLOTS * 512;
let t = 1_764_000_000_000;
const opts = (extra: Partial<OpenOptions> = {}): OpenOptions => ({ main: MAIN, blockSize: 512, journalRecords: J, now: () => t++, ...extra });
const remaps = (c: { autoRemaps: number; scanRemaps: number; manualRemaps: number; unremaps: number }) =>
  ({ auto: c.autoRemaps, scan: c.scanRemaps, manual: c.manualRemaps, unremaps: c.unremaps });
/** Slot `i` of the 8 counter slots at `off`. */
const slot = (b: Buffer, off: number, i: number): bigint => b.readBigUInt64LE(off + 8 * i);

describe('scanRemaps', () => {
  it('counts the scan-origin remaps (a subset of autoRemaps) at commit; unremap does not take it back', async () => {
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts());
    expect(r.store.geometry.version).toBe(3);
    await r.store.commit({ op: 'remap', block: 1, origin: 'scan', lost: true, dataOnMain: true });
    await r.store.commit({ op: 'remap', block: 2, origin: 'auto' });
    await r.store.commitBatch([
      { op: 'remap', block: 3, origin: 'scan' },
      { op: 'remap', block: 4, origin: 'manual' },
      { op: 'remap', block: 5, origin: 'scan' },
    ]);
    expect(remaps(r.store.counters())).toEqual({ auto: 4, scan: 3, manual: 1, unremaps: 0 });
    await r.store.commit({ op: 'unremap', block: 3 });
    await r.store.commit({ op: 'mapped', block: 1 });
    await r.store.commit({ op: 'move', block: 5 });
    expect(remaps(r.store.counters())).toEqual({ auto: 4, scan: 3, manual: 1, unremaps: 1 });
    // The table's own count of scan entries went down with the unremap; the counter did not.
    expect(r.table.toJSON().filter((e) => e.origin === 'scan').length).toBe(2);
  });

  it('a batch that does not fit changes nothing (its dry run is undone), and a refused scan op takes no slot', async () => {
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts());
    await r.store.commit({ op: 'remap', block: 7, origin: 'scan' });
    const before = r.store.counters();
    const free = r.allocator.free;
    await expect(r.store.commitBatch([{ op: 'remap', block: 8, origin: 'scan' }, { op: 'remap', block: 7, origin: 'scan' }])).rejects.toThrow(/already remapped/);
    expect(r.store.counters()).toEqual(before);
    expect(r.allocator.free).toBe(free);
    // A scan op on a version-2 state is refused before its slot is taken.
    const g2 = { ...computeGeometry({ spareOffset: 0, spareSize: SPARE, blockSize: 512, journalRecords: J }), version: 2 as const };
    const s2 = new RemapState(g2, 1000);
    const free2 = s2.allocator.free;
    expect(() => s2.apply({ op: 'remap', block: 4, slot: 1, lost: false, auto: true, scan: true, dataOnMain: false, time: t, errorCount: 0 })).toThrow(/format-version-3/);
    expect(s2.allocator.free).toBe(free2);
    expect(s2.counters.scanRemaps).toBe(0);
  });

  it('survives reopen (journal replay, counted once however often it is replayed), compaction, a full journal and a torn last record', async () => {
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts());
    await r.store.commit({ op: 'remap', block: 10, origin: 'scan' });
    await r.store.commit({ op: 'remap', block: 11, origin: 'scan' });
    await r.store.commit({ op: 'remap', block: 12, origin: 'auto' });
    const want = { auto: 3, scan: 2, manual: 0, unremaps: 0 };
    for (let i = 0; i < 3; i++) {
      const again = await RemapStore.open(io, opts());
      expect(again.report.replayedOps).toBe(3);
      expect(remaps(again.store.counters())).toEqual(want);
    }
    // Compaction: the table copy holds it (nothing left to replay).
    await r.store.compact();
    const compacted = await RemapStore.open(io, opts());
    expect(compacted.report.replayedOps).toBe(0);
    expect(remaps(compacted.store.counters())).toEqual(want);
    // More than a journal's worth of commits: compactions on the way, then a replay on top of the copy.
    for (let b = 20; b < 20 + 2 * J + 1; b++) await compacted.store.commit({ op: 'remap', block: b, origin: b % 3 === 0 ? 'auto' : 'scan' });
    const made = Array.from({ length: 2 * J + 1 }, (_, i) => 20 + i);
    const scans = made.filter((b) => b % 3 !== 0).length;
    const want2 = { auto: 3 + made.length, scan: 2 + scans, manual: 0, unremaps: 0 };
    expect(remaps(compacted.store.counters())).toEqual(want2);
    const reopened = await RemapStore.open(io, opts());
    expect(reopened.report.replayedOps).toBeGreaterThan(0);
    expect(remaps(reopened.store.counters())).toEqual(want2);
    // A scan remap whose record is torn was never committed: it is not counted.
    const g = reopened.store.geometry;
    const gen = reopened.store.generation;
    const used = reopened.store.journalUsed;
    await reopened.store.commit({ op: 'remap', block: 99, origin: 'scan' });
    expect(reopened.store.generation).toBe(gen); // the same journal
    const copy = (gen % 2 === 0 ? 1 : 0) as 0 | 1; // fresh: generation 2 in copy B, then alternating
    const at = (g.journalOffsets[copy] as number) + used * JOURNAL_RECORD_SIZE;
    expect(decodeJournalRecord(io.peek(at, JOURNAL_RECORD_SIZE), 0, reopened.store.uuid, 3).ok).toBe(true);
    io.poke(at + 64, Buffer.alloc(JOURNAL_RECORD_SIZE - 64));
    const torn = await RemapStore.open(io, opts());
    expect(torn.table.has(99)).toBe(false);
    expect(remaps(torn.store.counters())).toEqual(want2);
  });

  it('is stored in counter slot 5 of the journal records and table copies of a version-3 spare', async () => {
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts());
    await r.store.commit({ op: 'remap', block: 10, origin: 'scan' });
    const g = r.store.geometry;
    expect(slot(io.peek(g.journalOffsets[1], JOURNAL_RECORD_SIZE), JR.counters, 5)).toBe(1n);
    await r.store.compact();
    expect(slot(io.peek(g.tableOffsets[0], 4096), TB.counters, 5)).toBe(1n);
  });

  for (const version of [1, 2] as const) {
    it(`stays 0 on a version-${version} spare (scan remaps are stored as auto), and its slot 5 stays 0 on disk`, async () => {
      const io = new MemSpareIo(SPARE);
      const r = await RemapStore.open(io, opts({ formatVersion: version }));
      await r.store.commit({ op: 'remap', block: 10, origin: 'scan' });
      await r.store.commit({ op: 'remap', block: 11, origin: 'auto' });
      const want = { auto: 2, scan: 0, manual: 0, unremaps: 0 };
      expect(remaps(r.store.counters())).toEqual(want);
      const g = r.store.geometry;
      for (let i = 0; i < 2; i++) {
        const rec = io.peek((g.journalOffsets[1] as number) + i * JOURNAL_RECORD_SIZE, JOURNAL_RECORD_SIZE);
        for (let k = 5; k < 8; k++) expect(slot(rec, JR.counters, k)).toBe(0n);
      }
      expect(remaps((await RemapStore.open(io, opts())).store.counters())).toEqual(want);
      await r.store.compact();
      for (let k = 5; k < 8; k++) expect(slot(io.peek(g.tableOffsets[0], 4096), TB.counters, k)).toBe(0n);
      const compacted = await RemapStore.open(io, opts());
      expect(compacted.store.geometry.version).toBe(version);
      expect(remaps(compacted.store.counters())).toEqual(want);
    });
  }

  it('the encoders write slot 5 for version 3 only, and a decoder ignores the slots its version does not store', () => {
    const uuid = Buffer.alloc(16, 7);
    const g3 = computeGeometry({ spareOffset: 0, spareSize: SPARE, blockSize: 512, journalRecords: J });
    const counters = { manualRemaps: 1, autoRemaps: 9, unremaps: 2, readErrors: 3, writeErrors: 4, scanRemaps: 6 };
    for (const version of [1, 2, 3] as const) {
      const g = { ...g3, version };
      const rec = Buffer.alloc(JOURNAL_RECORD_SIZE);
      encodeJournalRecord(uuid, { generation: 1, seq: 0, prevCrc: 0, counters, ops: [] }, rec, 0, version);
      expect(slot(rec, JR.counters, 5)).toBe(version === 3 ? 6n : 0n);
      const s = new RemapState(g, 1000);
      s.counters = { ...counters };
      const { buf } = encodeTableCopy(s, uuid, 1, 0);
      expect(slot(buf, TB.counters, 5)).toBe(version === 3 ? 6n : 0n);
      // Non-zero reserved slots (a newer program's counters), checksums made to hold: read past, not refused.
      for (let k = 5; k < 8; k++) rec.writeBigUInt64LE(BigInt(40 + k), JR.counters + 8 * k);
      rec.writeUInt32LE(crc32c(rec, JR.ops, JR.ops, crc32c(rec, 0, JR.crc)), JR.crc);
      const d = decodeJournalRecord(rec, 0, uuid, version);
      if (!d.ok) throw new Error(d.why);
      expect(d.value.counters).toEqual({ ...counters, scanRemaps: version === 3 ? 45 : 0 });
      for (let k = 5; k < 8; k++) buf.writeBigUInt64LE(BigInt(40 + k), TB.counters + 8 * k);
      buf.writeUInt32LE(crc32c(buf, TB.body, buf.length, crc32c(buf, 0, TB.crc)), TB.crc);
      const c = decodeTableCopy(buf, { uuid, geometry: g, mainBlocks: 1000 });
      if (!c.ok) throw new Error(c.why);
      expect(c.value.state.counters).toEqual({ ...counters, scanRemaps: version === 3 ? 45 : 0 });
    }
  });

  it('the program before this counter (its counter code is the version-2 reader\'s) reads past non-zero reserved slots: it loads such a spare whole', async () => {
    // The fixture reads counter slots 0-4 only, as every reader has since the first format (docs/FORMAT.md:
    // "reserved: written as 0, ignored when read"); the version-3 reader before scanRemaps is the same code.
    type Old = { store: { counters(): Record<string, number> }; table: { toJSON(): Array<{ block: number; origin: string }> }; report: { replayedRecords: number; repairs: string[] } };
    const openOld = V2Store.open as (i: MemSpareIo, o: OpenOptions) => Promise<Old>;
    const setReserved = (b: Buffer, off: number): void => {
      for (let k = 5; k < 8; k++) b.writeBigUInt64LE(BigInt(k), off + 8 * k);
    };
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts({ formatVersion: 2 }));
    await r.store.commit({ op: 'remap', block: 5, origin: 'auto' });
    await r.store.compact(); // table copy A, generation 3, and its journal
    await r.store.commit({ op: 'remap', block: 6, origin: 'manual' });
    await r.store.commit({ op: 'remap', block: 7, origin: 'scan' });
    const g = r.store.geometry;
    const want = r.store.counters();
    const { scanRemaps, ...without } = want;
    expect(scanRemaps).toBe(0);
    const check = async (records: number): Promise<void> => {
      const img = io.peek(0, SPARE);
      const old = await openOld(io, opts());
      expect(old.report).toMatchObject({ replayedRecords: records, repairs: [] });
      expect(old.table.toJSON().map((e) => `${e.block}:${e.origin}`)).toEqual(['5:auto', '6:manual', '7:auto']);
      expect(old.store.counters()).toEqual(without);
      expect(io.peek(0, SPARE).equals(img)).toBe(true);
      // This program too (version 2: slot 5 is reserved there).
      const now = await RemapStore.open(io, opts());
      expect(now.report.replayedRecords).toBe(records);
      expect(now.store.counters()).toEqual(want);
    };
    // Slots 5-7 of the journal's last record set, its checksum made to hold.
    const recAt = (g.journalOffsets[0] as number) + JOURNAL_RECORD_SIZE;
    const rec = io.peek(recAt, JOURNAL_RECORD_SIZE);
    setReserved(rec, JR.counters);
    rec.writeUInt32LE(crc32c(rec, JR.ops, JR.ops + 32 * rec.readUInt16LE(JR.opCount), crc32c(rec, 0, JR.crc)), JR.crc);
    io.poke(recAt, rec);
    await check(2);
    // And of a table copy's header (one with no journal record after it: a record chains to its copy's CRC).
    await r.store.compact(); // table copy B, generation 4
    const copy = io.peek(g.tableOffsets[1], 4096);
    setReserved(copy, TB.counters);
    copy.writeUInt32LE(crc32c(copy, TB.body, TB.body + 3 * 24, crc32c(copy, 0, TB.crc)), TB.crc);
    io.poke(g.tableOffsets[1], copy);
    await check(0);
  });
});
