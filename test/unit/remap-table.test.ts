// Remap table, spare slot allocator, spare geometry, CRC32C and op application (host unit tests).
import { describe, expect, it } from 'vitest';
import { DmrError } from '../../src/errors.js';
import { SlotAllocator } from '../../src/remap/allocator.js';
import { crc32c } from '../../src/remap/crc32c.js';
import {
  computeGeometry,
  DEFAULT_MAX_SLOTS,
  JOURNAL_RECORD_SIZE,
  metaLenFor,
  slotOffset,
  SUPERBLOCK_SIZE,
  type Geometry,
} from '../../src/remap/geometry.js';
import { RemapState } from '../../src/remap/state.js';
import { RemapTable, type RemapEntry } from '../../src/remap/table.js';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DmrError);
    return (e as DmrError).code;
  }
  throw new Error('did not throw');
}

describe('crc32c', () => {
  it('matches the known vectors', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(0))).toBe(0);
    expect(crc32c(Buffer.alloc(32, 0))).toBe(0x8a9136aa); // RFC 3720 B.4
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
    const inc = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
    expect(crc32c(inc)).toBe(0x46dd794e);
    const dec = Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i));
    expect(crc32c(dec)).toBe(0x113fdb5c);
  });

  it('can be continued over pieces and ranges', () => {
    const b = Buffer.from('The quick brown fox jumps over the lazy dog, 0123456789');
    const whole = crc32c(b);
    for (const k of [0, 1, 7, 8, 9, 30, b.length]) expect(crc32c(b, k, b.length, crc32c(b, 0, k))).toBe(whole);
    expect(crc32c(b, 4, 13)).toBe(crc32c(b.subarray(4, 13)));
  });
});

describe('RemapTable', () => {
  it('looks up, replaces, deletes and keeps counts', () => {
    const t = new RemapTable();
    t.set(10, { slot: 0, state: 'mapped', origin: 'manual', time: 1, errorCount: 0, dataOnMain: false });
    t.set(5, { slot: 1, state: 'lost', origin: 'auto', time: 2, errorCount: 3, dataOnMain: false });
    t.set(2 ** 40, { slot: 2, state: 'mapped', origin: 'auto', time: 3, errorCount: 1e6, dataOnMain: false });
    expect(t.get(5)?.slot).toBe(1);
    expect(t.get(2 ** 40)?.errorCount).toBe(0xffff);
    expect(t.counts()).toEqual({ remapped: 3, mapped: 2, lost: 1, manual: 1, auto: 2, lostAuto: 1 });
    t.set(5, { slot: 1, state: 'mapped', origin: 'auto', time: 2, errorCount: 3, dataOnMain: false });
    expect(t.counts()).toEqual({ remapped: 3, mapped: 3, lost: 0, manual: 1, auto: 2, lostAuto: 0 });
    expect(t.delete(10).slot).toBe(0);
    expect(code(() => t.delete(10))).toBe('E_REMAP_STATE');
    expect(t.counts()).toEqual({ remapped: 2, mapped: 2, lost: 0, manual: 0, auto: 2, lostAuto: 0 });
    expect(t.size).toBe(2);
  });

  it('keeps its sorted index until the set of blocks changes, and counts lost automatic entries as it goes', () => {
    const t = new RemapTable();
    const e = (state: 'mapped' | 'lost', origin: 'manual' | 'auto' | 'scan') => ({ slot: 0, state, origin, time: 0, errorCount: 0, dataOnMain: false });
    t.set(30, e('lost', 'scan'));
    t.set(10, e('lost', 'manual'));
    t.insertNew(20, 1, true, true, 0, 0);
    const first = t.sortedBlocks();
    expect([...first]).toEqual([10, 20, 30]);
    expect(t.sortedBlocks()).toBe(first); // no change: the same index, not sorted again
    t.set(20, e('mapped', 'auto')); // an entry replaced: the set of blocks is the same
    expect(t.sortedBlocks()).toBe(first);
    expect(t.counts().lostAuto).toBe(1);
    t.set(5, e('lost', 'auto'));
    expect([...t.sortedBlocks()]).toEqual([5, 10, 20, 30]);
    expect(t.counts().lostAuto).toBe(2);
    t.delete(10);
    expect([...t.sortedBlocks()]).toEqual([5, 20, 30]);
    t.delete(30);
    expect(t.counts().lostAuto).toBe(1);
    t.clear();
    expect([...t.sortedBlocks()]).toEqual([]);
    expect(t.counts().lostAuto).toBe(0);
  });

  it('pages taken between random changes (set, replace, delete, insertNew, clear) match a sort of a plain map, and so do the counts', () => {
    let seed = 7;
    const r = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const t = new RemapTable();
    const model = new Map<number, RemapEntry>();
    const origins = ['manual', 'auto', 'scan'] as const;
    for (let step = 0; step < 20_000; step++) {
      const op = r();
      const block = Math.floor(r() * 300);
      if (op < 0.45) {
        const e: RemapEntry = { slot: Math.floor(r() * 1000), state: r() < 0.5 ? 'lost' : 'mapped', origin: origins[Math.floor(r() * 3)] ?? 'manual', time: step, errorCount: 1, dataOnMain: r() < 0.5 };
        t.set(block, e);
        model.set(block, { ...e, dataOnMain: e.state === 'lost' && e.dataOnMain });
      } else if (op < 0.8) {
        if (model.has(block)) {
          t.delete(block);
          model.delete(block);
        }
      } else if (op < 0.97) {
        if (!model.has(block)) {
          const lost = r() < 0.5;
          const auto = r() < 0.5;
          const scan = r() < 0.5;
          t.insertNew(block, 5, lost, auto, step, 2, true, scan);
          model.set(block, { slot: 5, state: lost ? 'lost' : 'mapped', origin: auto ? (scan ? 'scan' : 'auto') : 'manual', time: step, errorCount: 2, dataOnMain: lost });
        }
      } else if (op < 0.975) {
        t.clear();
        model.clear();
      }
      if (r() < 0.3) {
        const keys = [...model.keys()].sort((a, b) => a - b);
        const offset = Math.floor(r() * (keys.length + 2));
        const limit = 1 + Math.floor(r() * 20);
        const page = [...t.sortedBlocks()].slice(offset, offset + limit).map((b) => ({ block: b, ...t.get(b) }));
        expect(page).toEqual(keys.slice(offset, offset + limit).map((b) => ({ block: b, ...model.get(b) })));
        const v = [...model.values()];
        expect(t.counts()).toEqual({
          remapped: v.length,
          mapped: v.filter((e) => e.state === 'mapped').length,
          lost: v.filter((e) => e.state === 'lost').length,
          manual: v.filter((e) => e.origin === 'manual').length,
          auto: v.filter((e) => e.origin !== 'manual').length,
          lostAuto: v.filter((e) => e.state === 'lost' && e.origin !== 'manual').length,
        });
      }
    }
  });

  it('exports entries sorted by block as typed arrays', () => {
    const t = new RemapTable();
    const blocks = [900, 3, 2 ** 33 + 7, 17, 0];
    blocks.forEach((b, i) => t.set(b, { slot: 100 + i, state: i % 2 ? 'lost' : 'mapped', origin: 'manual', time: 0, errorCount: 0, dataOnMain: false }));
    const x = t.exportSorted();
    expect(x.count).toBe(5);
    expect([...x.blocks]).toEqual([0n, 3n, 17n, 900n, 2n ** 33n + 7n]);
    expect([...x.slots]).toEqual([104n, 101n, 103n, 100n, 102n]);
    expect([...x.lost]).toEqual([0, 1, 1, 0, 0]);
    expect(t.toJSON().map((e) => e.block)).toEqual([0, 3, 17, 900, 2 ** 33 + 7]);
  });
});

const geo = (spareSize: number, blockSize: 512 | 4096 = 512, journalRecords = 4, spareOffset = 0, version: 1 | 2 | 3 = 2): Geometry =>
  computeGeometry({ spareOffset, spareSize, blockSize, journalRecords, version });

describe('spare geometry', () => {
  it.each([
    [1 << 20, 512, 4],
    [1 << 20, 4096, 4],
    [64 << 20, 512, 1024],
    [10 * 2 ** 40, 4096, 1024],
    [2 ** 40 + 12345, 512, 1024],
  ] as const)('capacity is every slot that fits, up to the cap (size %d, block %d, journal %d)', (size, bs, j) => {
    const v1 = geo(size, bs, j, 0, 1);
    const g = geo(size, bs, j);
    // Version 1: metadata + slots fit, and one more slot would not.
    expect(v1.metaLen + v1.slotCount * bs).toBeLessThanOrEqual(size);
    expect(metaLenFor(v1.slotCount + 1, j) + (v1.slotCount + 1) * bs).toBeGreaterThan(size);
    expect(v1.maxSlots).toBe(null);
    // Version 2: the same, capped at DEFAULT_MAX_SLOTS; the cap bounds the metadata whatever the spare's size.
    expect(g.version).toBe(2);
    expect(g.maxSlots).toBe(DEFAULT_MAX_SLOTS);
    expect(g.slotCount).toBe(Math.min(v1.slotCount, DEFAULT_MAX_SLOTS));
    expect(g.metaLen).toBeLessThanOrEqual(metaLenFor(DEFAULT_MAX_SLOTS, j));
    expect(g.metaLen + g.slotCount * bs).toBeLessThanOrEqual(size);
    // Version 3 has version 2's layout (it only adds a flag bit).
    expect(geo(size, bs, j, 0, 3)).toEqual({ ...g, version: 3 });
    // Areas in order, aligned, none overlapping, slot 0 right after the metadata.
    const areas: Array<[number, number]> = [
      [g.superblockOffsets[0], SUPERBLOCK_SIZE],
      [g.superblockOffsets[1], SUPERBLOCK_SIZE],
      [g.tableOffsets[0], g.tableCopyLen],
      [g.tableOffsets[1], g.tableCopyLen],
      [g.journalOffsets[0], j * JOURNAL_RECORD_SIZE],
      [g.journalOffsets[1], j * JOURNAL_RECORD_SIZE],
    ];
    let end = 0;
    for (const [off, len] of areas) {
      expect(off).toBe(end);
      expect(off % 4096).toBe(0);
      end = off + len;
    }
    expect(end).toBe(g.metaLen);
    expect(g.tableCopyLen).toBeGreaterThanOrEqual(136 + 24 * g.slotCount);
    expect(slotOffset(g, 0)).toBe(g.metaLen);
    expect(slotOffset(g, g.slotCount - 1) + bs).toBeLessThanOrEqual(size);
  });

  it('caps version 2 at the given slot count, version 1 has no cap', () => {
    const size = 2 ** 40;
    const g = computeGeometry({ spareOffset: 0, spareSize: size, blockSize: 4096, maxSlots: 1000 });
    expect(g.slotCount).toBe(1000);
    expect(g.tableCopyLen).toBe(Math.ceil((136 + 24 * 1000) / 4096) * 4096);
    expect(geo(size, 4096, 1024).slotCount).toBe(DEFAULT_MAX_SLOTS);
    expect(geo(size, 4096, 1024, 0, 1).slotCount).toBeGreaterThan(0.98 * 2 ** 28); // every 4 KiB slot of 1 TiB but the metadata
    expect(code(() => computeGeometry({ spareOffset: 0, spareSize: size, blockSize: 4096, maxSlots: 0 }))).toBe('E_USAGE');
    expect(code(() => computeGeometry({ spareOffset: 0, spareSize: size, blockSize: 4096, maxSlots: 2 ** 48 }))).toBe('E_USAGE');
  });

  it('puts slots after the metadata inside the spare region at its offset', () => {
    const g = geo(1 << 20, 4096, 4, 1 << 20);
    expect(slotOffset(g, 0)).toBe((1 << 20) + g.metaLen);
    expect(slotOffset(g, g.slotCount - 1) + 4096).toBeLessThanOrEqual(2 << 20);
  });

  it('refuses a spare too small for the metadata and one slot', () => {
    const min = metaLenFor(1, 4) + 512;
    expect(geo(min).slotCount).toBe(1);
    expect(code(() => geo(min - 1))).toBe('E_SPARE_TOO_SMALL');
    expect(code(() => geo(0))).toBe('E_SPARE_TOO_SMALL');
    expect(code(() => computeGeometry({ spareOffset: 512, spareSize: 1 << 20, blockSize: 512 }))).toBe('E_USAGE');
    expect(code(() => computeGeometry({ spareOffset: 0, spareSize: 1 << 20, blockSize: 1024 }))).toBe('E_BLOCK_SIZE');
  });
});

describe('SlotAllocator', () => {
  const g = geo(metaLenFor(8, 4) + 8 * 512); // exactly 8 slots
  it('has the expected capacity', () => expect(g.slotCount).toBe(8));

  it('allocates lowest first, reuses freed slots, and reports spare full', () => {
    const a = new SlotAllocator(g);
    expect([0, 1, 2, 3].map(() => a.allocate())).toEqual([0, 1, 2, 3]);
    a.release(1);
    a.release(2);
    expect(a.isFree(1)).toBe(true);
    expect(a.allocate()).toBe(1);
    expect(a.allocate()).toBe(2);
    for (let i = 4; i < 8; i++) expect(a.allocate()).toBe(i);
    expect(a.free).toBe(0);
    expect(a.used).toBe(8);
    expect(code(() => a.allocate())).toBe('E_SPARE_FULL');
    expect(code(() => a.release(3) ?? a.release(3))).toBe('E_REMAP_STATE'); // double free
  });

  it('never hands out a retired slot', () => {
    const a = new SlotAllocator(g);
    a.retire(0);
    a.retire(5);
    expect(code(() => a.retire(5))).toBe('E_REMAP_STATE');
    const got = Array.from({ length: 6 }, () => a.allocate());
    expect(got).toEqual([1, 2, 3, 4, 6, 7]);
    expect(code(() => a.allocate())).toBe('E_SPARE_FULL');
    expect(code(() => a.release(5))).toBe('E_REMAP_STATE');
    expect(a.retiredSlots()).toEqual([0, 5]);
    a.release(3);
    expect(code(() => a.retire(4))).toBe('E_REMAP_STATE'); // in use: move its block first
    a.retire(3);
    expect(code(() => a.allocate())).toBe('E_SPARE_FULL');
    expect(a.retiredCount).toBe(3);
    expect(a.used).toBe(5);
  });

  it('is rebuilt from a loaded state, and rejects duplicate or out-of-range slots', () => {
    const a = SlotAllocator.fromState(g, [6, 0, 2], [3]);
    expect([a.allocate(), a.allocate(), a.allocate(), a.allocate()]).toEqual([1, 4, 5, 7]);
    expect(code(() => a.allocate())).toBe('E_SPARE_FULL');
    expect(code(() => SlotAllocator.fromState(g, [1, 1], []))).toBe('E_SPARE_METADATA');
    expect(code(() => SlotAllocator.fromState(g, [1], [1]))).toBe('E_SPARE_METADATA');
    expect(code(() => SlotAllocator.fromState(g, [8], []))).toBe('E_SPARE_METADATA');
  });

  it('keeps a huge spare cheap and gives slot offsets', () => {
    const big = geo(2 ** 44, 512, 1024);
    const a = new SlotAllocator(big);
    a.take(big.slotCount - 1);
    expect(a.allocate()).toBe(0);
    expect(a.free).toBe(big.slotCount - 2);
    expect(a.offsetOf(1)).toBe(big.metaLen + 512);
    expect(code(() => a.offsetOf(big.slotCount))).toBe('E_REMAP_STATE');
  });
});

describe('RemapState ops', () => {
  const g = geo(metaLenFor(4, 4) + 4 * 512);
  const now = 1_700_000_000_000;

  it('applies remap, lost, mapped, errors, move, retire, unremap and keeps counters', () => {
    const s = new RemapState(g, 1000);
    s.apply(s.resolve({ op: 'remap', block: 7, origin: 'manual' }, now));
    s.apply(s.resolve({ op: 'remap', block: 9, origin: 'auto', lost: true, errorCount: 2 }, now));
    expect(s.table.get(7)).toEqual({ slot: 0, state: 'mapped', origin: 'manual', time: now, errorCount: 0, dataOnMain: false });
    expect(s.table.get(9)).toEqual({ slot: 1, state: 'lost', origin: 'auto', time: now, errorCount: 2, dataOnMain: false });
    s.apply(s.resolve({ op: 'mapped', block: 9 }, now));
    s.apply(s.resolve({ op: 'lost', block: 7 }, now));
    s.apply(s.resolve({ op: 'errors', block: 7, errorCount: 5 }, now));
    s.apply(s.resolve({ op: 'move', block: 7 }, now)); // to slot 2
    s.apply(s.resolve({ op: 'retire', slot: 0 }, now));
    expect(s.table.get(7)).toMatchObject({ slot: 2, state: 'lost', errorCount: 5 });
    expect(s.allocator.isRetired(0)).toBe(true);
    s.apply(s.resolve({ op: 'unremap', block: 9 }, now));
    expect(s.counters).toEqual({ manualRemaps: 1, autoRemaps: 1, unremaps: 1, readErrors: 0, writeErrors: 0, scanRemaps: 0 });
    expect(s.allocator.peek()).toBe(1);
  });

  it('refuses ops that do not fit and changes nothing (batch is all or nothing)', () => {
    const s = new RemapState(g, 1000);
    s.apply(s.resolve({ op: 'remap', block: 1, origin: 'manual' }, now));
    const before = JSON.stringify([s.table.toJSON(), s.counters, s.allocator.free]);
    expect(code(() => s.apply(s.resolve({ op: 'remap', block: 1, origin: 'manual' }, now)))).toBe('E_REMAP_STATE');
    expect(code(() => s.apply(s.resolve({ op: 'remap', block: 1000, origin: 'manual' }, now)))).toBe('E_REMAP_STATE');
    expect(code(() => s.apply(s.resolve({ op: 'remap', block: 2, slot: 0, origin: 'manual' }, now)))).toBe('E_REMAP_STATE');
    expect(code(() => s.apply(s.resolve({ op: 'unremap', block: 2 }, now)))).toBe('E_REMAP_STATE');
    expect(code(() => s.apply(s.resolve({ op: 'retire', slot: 0 }, now)))).toBe('E_REMAP_STATE');
    const ops = [
      s.resolve({ op: 'remap', block: 2, slot: 1, origin: 'auto' }, now),
      s.resolve({ op: 'remap', block: 3, slot: 2, origin: 'auto' }, now),
      s.resolve({ op: 'remap', block: 4, slot: 2, origin: 'auto' }, now), // slot taken by the op before
    ];
    expect(code(() => s.applyAll(ops))).toBe('E_REMAP_STATE');
    expect(JSON.stringify([s.table.toJSON(), s.counters, s.allocator.free])).toBe(before);
    const undo = s.applyAll(ops.slice(0, 2));
    expect(s.table.size).toBe(3);
    undo();
    expect(JSON.stringify([s.table.toJSON(), s.counters, s.allocator.free])).toBe(before);
  });
});
