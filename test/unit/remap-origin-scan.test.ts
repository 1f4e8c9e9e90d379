// The table's origin `scan` (a block the background scan found): persisted on a format-version-3 spare (what
// a fresh format writes) as the auto flag plus a scan flag (entry flag 8, journal op flag 8), through the
// journal, compaction and both table copies; counted with the automatic remaps; stored as auto on a
// version-1 or version-2 spare (which keep their version); and a scan flag without the auto flag, or on a
// version-1 or version-2 spare, refused by the decoders (version 3 exists so that a program reading only
// versions 1 and 2 refuses a spare with scan entries at its superblock, see format-v3-downgrade.test.ts).
import { describe, expect, it } from 'vitest';
import { decodeJournalRecord, decodeTableCopy, encodeJournalRecord, encodeTableCopy, ENTRY, ENTRY_AUTO, ENTRY_SCAN, OP_SCAN, TB } from '../../src/remap/format.js';
import { computeGeometry, JOURNAL_RECORD_SIZE, metaLenFor } from '../../src/remap/geometry.js';
import { crc32c } from '../../src/remap/crc32c.js';
import { MemSpareIo } from '../../src/remap/mem-io.js';
import { RemapState, type RemapOp } from '../../src/remap/state.js';
import { RemapStore, type OpenOptions } from '../../src/remap/store.js';

const T0 = 1_764_000_000_000;
const MAIN = { size: 1n << 30n, fingerprint: Buffer.alloc(32, 0xa1) };
const SLOTS = 64;
const J = 4;
const SPARE = metaLenFor(SLOTS, J) + SLOTS * 512;
function opts(extra: Partial<OpenOptions> = {}): OpenOptions {
  let t = T0;
  return { main: MAIN, blockSize: 512, journalRecords: J, now: () => t++, ...extra };
}
const origins = (r: { table: { toJSON(): Array<{ block: number; origin: string }> } }): string[] => r.table.toJSON().map((e) => `${e.block}:${e.origin}`);

const OPS: RemapOp[] = [
  { op: 'remap', block: 10, origin: 'scan', lost: true, dataOnMain: true },
  { op: 'remap', block: 11, origin: 'scan' },
  { op: 'remap', block: 12, origin: 'auto' },
  { op: 'remap', block: 13, origin: 'manual' },
  { op: 'move', block: 11 },
  { op: 'mapped', block: 10 },
];

describe('the scan origin', () => {
  it('survives replay, compaction and both table copies on a fresh (version-3) spare, and counts as an automatic remap', async () => {
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts());
    expect(r.store.geometry.version).toBe(3);
    for (const op of OPS) await r.store.commit(op);
    const want = ['10:scan', '11:scan', '12:auto', '13:manual'];
    expect(origins(r)).toEqual(want);
    expect(r.table.counts()).toMatchObject({ auto: 3, manual: 1 });
    expect(r.store.counters()).toMatchObject({ autoRemaps: 3, manualRemaps: 1 });
    const replayed = await RemapStore.open(io, opts());
    expect(origins(replayed)).toEqual(want);
    await replayed.store.compact();
    await replayed.store.compact();
    const compacted = await RemapStore.open(io, opts());
    expect(compacted.report.replayedOps).toBe(0);
    expect(origins(compacted)).toEqual(want);
    const g = compacted.store.geometry;
    expect(g.version).toBe(3);
    for (const c of [0, 1]) {
      const d = decodeTableCopy(io.peek(g.tableOffsets[c] as number, g.tableCopyLen), { uuid: compacted.store.uuid, geometry: g, mainBlocks: 2_000_000 });
      if (!d.ok) throw new Error(d.why);
      expect(origins(d.value.state)).toEqual(want);
    }
  });

  for (const version of [1, 2] as const) {
    it(`is stored as auto on a version-${version} spare, which stays version ${version}, through replay and compaction`, async () => {
      const io = new MemSpareIo(SPARE);
      const r = await RemapStore.open(io, opts({ formatVersion: version }));
      expect(r.store.geometry.version).toBe(version);
      for (const op of OPS) await r.store.commit(op);
      const want = ['10:auto', '11:auto', '12:auto', '13:manual'];
      expect(origins(r)).toEqual(want);
      const replayed = await RemapStore.open(io, opts());
      expect(replayed.store.geometry.version).toBe(version);
      expect(origins(replayed)).toEqual(want);
      await replayed.store.compact();
      await replayed.store.compact();
      const compacted = await RemapStore.open(io, opts());
      expect(compacted.report.replayedOps).toBe(0);
      expect(compacted.store.geometry.version).toBe(version);
      expect(origins(compacted)).toEqual(want);
      // The superblock still says `version`, and no stored entry carries bit 3.
      expect(io.peek(8, 4).readUInt32LE(0)).toBe(version);
      const g = compacted.store.geometry;
      for (const c of [0, 1]) {
        const copy = io.peek(g.tableOffsets[c] as number, g.tableCopyLen);
        for (let i = 0; i < 4; i++) expect((copy[TB.body + i * 24 + ENTRY.flags] as number) & ENTRY_SCAN).toBe(0);
      }
    });
  }

  it('the journal op flag: decoded on an automatic remap of a version-3 spare; refused without auto, on other ops and on versions 1 and 2', () => {
    const uuid = Buffer.alloc(16, 3);
    const g = computeGeometry({ spareOffset: 0, spareSize: SPARE, blockSize: 512, journalRecords: J });
    const s = new RemapState(g, 1000);
    const op = s.resolve({ op: 'remap', block: 4, slot: 1, origin: 'scan' }, T0);
    expect(op).toMatchObject({ auto: true, scan: true });
    const rec = (o: typeof op): Buffer => {
      const b = Buffer.alloc(JOURNAL_RECORD_SIZE);
      encodeJournalRecord(uuid, { generation: 1, seq: 0, prevCrc: 0, counters: s.counters, ops: [o] }, b);
      return b;
    };
    const d = decodeJournalRecord(rec(op), 0, uuid, 3);
    expect(d.ok && d.value.ops[0]).toEqual(op);
    expect(decodeJournalRecord(rec({ ...op, scan: false }), 0, uuid, 2).ok).toBe(true);
    expect(decodeJournalRecord(rec(op), 0, uuid, 2)).toEqual({ ok: false, why: 'bad op' });
    expect(decodeJournalRecord(rec(op), 0, uuid, 1)).toEqual({ ok: false, why: 'bad op' });
    expect(decodeJournalRecord(rec({ ...op, auto: false }), 0, uuid, 3)).toEqual({ ok: false, why: 'bad op' });
    expect(decodeJournalRecord(rec({ ...s.resolve({ op: 'mapped', block: 3 }, T0), scan: true }), 0, uuid, 3)).toEqual({ ok: false, why: 'bad op' });
    expect(OP_SCAN).toBe(8);
    // The state refuses a scan op on a version-2 spare before anything is encoded.
    const s2 = new RemapState({ ...g, version: 2 }, 1000);
    expect(s2.resolve({ op: 'remap', block: 4, slot: 1, origin: 'scan' }, T0)).toMatchObject({ auto: true, scan: false });
    expect(() => s2.apply(op)).toThrow(/format-version-3 spare/);
  });

  it('the table entry flag: a scan flag without the auto flag, or on a version-1 or version-2 spare, is refused', () => {
    const uuid = Buffer.alloc(16, 5);
    const check = (version: 1 | 2 | 3, flags: number | null): boolean => {
      const g = { ...computeGeometry({ spareOffset: 0, spareSize: SPARE, blockSize: 512, journalRecords: J }), version };
      const s = new RemapState(g, 1000);
      s.apply(s.resolve({ op: 'remap', block: 7, slot: 2, origin: 'scan' }, T0));
      const { buf } = encodeTableCopy(s, uuid, 1, 0);
      if (flags !== null) {
        buf[TB.body + ENTRY.flags] = flags;
        buf.writeUInt32LE(crc32c(buf, TB.body, buf.length, crc32c(buf, 0, TB.crc)), TB.crc);
      }
      const d = decodeTableCopy(buf, { uuid, geometry: g, mainBlocks: 1000 });
      if (d.ok && flags === null) expect(origins(d.value.state)).toEqual([version === 3 ? '7:scan' : '7:auto']);
      return d.ok;
    };
    expect(check(3, null)).toBe(true);
    expect(check(2, null)).toBe(true);
    expect(check(1, null)).toBe(true);
    expect(check(3, ENTRY_AUTO | ENTRY_SCAN)).toBe(true);
    expect(check(3, ENTRY_SCAN)).toBe(false);
    expect(check(2, ENTRY_AUTO)).toBe(true);
    expect(check(2, ENTRY_AUTO | ENTRY_SCAN)).toBe(false);
    expect(check(1, ENTRY_AUTO | ENTRY_SCAN)).toBe(false);
  });
});
