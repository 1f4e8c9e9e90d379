// Whole-disk spares (issue 11 point 2): loading reads a table copy's header and then only its used bytes in
// bounded chunks, formatting writes O(1), sizes and slots past 2^32 round-trip, format version 2 caps the slot
// count, and version-1 spares (bytes written by the version-1 program) still load and stay version 1.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DmrError } from '../../src/errors.js';
import { decodeSuperblock, encodeTableCopy, SB, TableCopyDecoder, decodeTableHeader } from '../../src/remap/format.js';
import { crc32c } from '../../src/remap/crc32c.js';
import { DEFAULT_MAX_SLOTS, computeGeometry } from '../../src/remap/geometry.js';
import type { SpareIo } from '../../src/remap/io.js';
import { MemSpareIo } from '../../src/remap/mem-io.js';
import { RemapState, type RemapOp } from '../../src/remap/state.js';
import { RemapStore, TABLE_READ_CHUNK, type OpenOptions, type OpenResult } from '../../src/remap/store.js';

const TiB = 2 ** 40;
const FP = Buffer.alloc(32, 0x5c);

/** A SpareIo that passes through to a MemSpareIo and records how much was read and written, and the largest read. */
class CountingIo implements SpareIo {
  bytesRead = 0;
  bytesWritten = 0;
  maxRead = 0;
  writes = 0;
  constructor(readonly inner: MemSpareIo) {}
  get size(): bigint {
    return this.inner.size;
  }
  reset(): void {
    this.bytesRead = this.bytesWritten = this.maxRead = this.writes = 0;
  }
  read(offset: number | bigint, length: number): Promise<Buffer> {
    this.bytesRead += length;
    this.maxRead = Math.max(this.maxRead, length);
    return this.inner.read(offset, length);
  }
  write(offset: number | bigint, data: Buffer): Promise<void> {
    this.bytesWritten += data.length;
    this.writes++;
    return this.inner.write(offset, data);
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
}

function opts(main: bigint, extra: Partial<OpenOptions> = {}): OpenOptions {
  let t = 1_764_000_000_000;
  return { main: { size: main, fingerprint: FP }, blockSize: 512, now: () => t++, ...extra };
}

const snap = (r: { table: OpenResult['table']; allocator: OpenResult['allocator']; store: RemapStore }): string =>
  JSON.stringify({ t: r.table.toJSON(), retired: r.allocator.retiredSlots(), c: r.store.counters() });

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (!(e instanceof DmrError)) throw e;
    return e.code;
  }
  throw new Error('did not throw');
}

describe('a 16 TiB spare', () => {
  it.each([1, 2, 3] as const)('format version %d: formats with O(1) writes, loads by its entries, slots and blocks past 2^32', async (version) => {
    const io = new CountingIo(new MemSpareIo(16 * TiB));
    const main = 4n * BigInt(TiB); // 2^33 blocks of 512 bytes
    // Versions 2 and 3 with a cap high enough that slot numbers pass 2^32; version 1 has no cap (3.4e10 slots).
    const o = opts(main, version === 1 ? { formatVersion: 1 } : { formatVersion: version, maxSlots: 2 ** 40 });
    const f = await RemapStore.open(io, o);
    expect(f.report.formatted).toBe(true);
    const g = f.store.geometry;
    expect(g.version).toBe(version);
    expect(g.slotCount).toBeGreaterThan(2 ** 34);
    expect(g.tableCopyLen).toBeGreaterThan(2 ** 39); // a table copy area no Buffer could hold
    // Format wrote two table copies and two superblocks, 4 KiB each: nothing sized by the slot count.
    expect(io.writes).toBe(4);
    expect(io.bytesWritten).toBe(4 * 4096);

    const highSlot = 2 ** 33 + 5;
    const highBlock = 2 ** 33 - 1;
    await f.store.commitBatch([
      { op: 'remap', block: 3, origin: 'manual' },
      { op: 'remap', block: highBlock, slot: highSlot, origin: 'auto', lost: true },
      { op: 'retire', slot: 2 ** 32 + 1 },
    ]);
    await f.store.compact();
    await f.store.commit({ op: 'remap', block: 2 ** 32 + 9, origin: 'manual' });
    const want = snap(f);
    expect(f.allocator.offsetOf(highSlot)).toBe(g.spareOffset + g.metaLen + highSlot * 512);

    io.reset();
    const r = await RemapStore.open(io, o);
    expect(r.report.formatted).toBe(false);
    expect(r.store.geometry.version).toBe(version);
    expect(snap(r)).toBe(want);
    expect(r.table.get(highBlock)).toMatchObject({ slot: highSlot, state: 'lost', origin: 'auto' });
    expect(r.allocator.isRetired(2 ** 32 + 1)).toBe(true);
    // Reads: 2 superblocks, 2 table headers and used bytes, the journal up to its first unused record.
    expect(r.report.replayedRecords).toBe(1);
    expect(io.bytesRead).toBeLessThan(1024 * 1024);
    expect(io.maxRead).toBeLessThanOrEqual(TABLE_READ_CHUNK);
    expect(io.bytesWritten).toBe(0);
    // The allocator keeps free intervals, not slots.
    expect(r.allocator.free).toBe(g.slotCount - 4);
  });

  it('loads a table copy longer than one read chunk (entries and retired slots straddle the chunks)', async () => {
    const io = new CountingIo(new MemSpareIo(16 * TiB));
    const o = opts(4n * BigInt(TiB), { formatVersion: 1, journalRecords: 64 });
    const f = await RemapStore.open(io, o);
    const n = 200_000; // 24n = 4.8 MB > TABLE_READ_CHUNK
    const stride = 40_009; // spread over 2^33 blocks, not a multiple of anything
    for (let i = 0; i < n; i += 5000) {
      const ops: RemapOp[] = [];
      for (let k = i; k < Math.min(n, i + 5000); k++) ops.push({ op: 'remap', block: k * stride, origin: k % 3 === 0 ? 'auto' : 'manual', lost: k % 7 === 0 });
      await f.store.commitBatch(ops);
    }
    await f.store.commitBatch(Array.from({ length: 3000 }, (_, k): RemapOp => ({ op: 'retire', slot: n + 2 * k + 1 })));
    await f.store.compact();
    const want = snap(f);
    io.reset();
    const r = await RemapStore.open(io, o);
    expect(snap(r)).toBe(want);
    expect(r.report.replayedRecords).toBe(0);
    expect(io.maxRead).toBeLessThanOrEqual(TABLE_READ_CHUNK);
    // Both copies' used bytes (the loaded one built, the other checked) and a little more, not the areas.
    const used = 136 + 24 * n + 8 * 3000;
    expect(io.bytesRead).toBeLessThan(2 * used + 2 * TABLE_READ_CHUNK);
  }, 60_000);
});

describe('format version 2: the slot cap', () => {
  it('a 1 TiB spare gets DEFAULT_MAX_SLOTS slots and small metadata; the cap is read back from the superblock', async () => {
    const io = new MemSpareIo(TiB);
    const f = await RemapStore.open(io, opts(1n << 30n, { blockSize: 4096 }));
    const g = f.store.geometry;
    expect(g.slotCount).toBe(DEFAULT_MAX_SLOTS);
    expect(g.metaLen).toBeLessThan(256 * 1024 * 1024);
    const sb = decodeSuperblock(io.peek(0, 4096));
    if (!sb.ok) throw new Error(sb.why);
    expect(sb.value.geometry).toEqual(g);
    const small = await RemapStore.open(new MemSpareIo(TiB), opts(1n << 30n, { blockSize: 4096, maxSlots: 10 }));
    expect(small.store.geometry.slotCount).toBe(10);
  });

  it('a full table is a full spare: E_SPARE_FULL at the cap, nothing written', async () => {
    const io = new MemSpareIo(TiB);
    const f = await RemapStore.open(io, opts(1n << 30n, { maxSlots: 3 }));
    await f.store.commitBatch([0, 1, 2].map((b): RemapOp => ({ op: 'remap', block: b, origin: 'manual' })));
    const before = io.stats.writes;
    expect(await code(f.store.commit({ op: 'remap', block: 9, origin: 'manual' }))).toBe('E_SPARE_FULL');
    expect(io.stats.writes).toBe(before);
  });

  it.each([2, 3] as const)('the cap is part of the geometry (version %d): a superblock whose cap was changed (CRC fixed) does not check', async (version) => {
    const io = new MemSpareIo(TiB);
    await RemapStore.open(io, opts(1n << 30n, { maxSlots: 1000, formatVersion: version }));
    const b = io.peek(0, 4096);
    expect(b.readUInt32LE(SB.version)).toBe(version);
    expect(b.readUInt32LE(SB.maxSlots)).toBe(1000);
    b.writeUInt32LE(2000, SB.maxSlots);
    b.writeUInt32LE(crc32c(b, 0, SB.crc), SB.crc);
    expect(decodeSuperblock(b)).toEqual({ ok: false, why: 'inconsistent geometry' });
    const g = computeGeometry({ spareOffset: 0, spareSize: TiB, blockSize: 512, maxSlots: 1000, version });
    expect(encodeTableCopy(new RemapState(g, 1000), Buffer.alloc(16), 1, 0).buf.readUInt32LE(8)).toBe(version);
  });

  it('refuses a spare of an unknown format version with one line naming it, and writes nothing', async () => {
    const io = new MemSpareIo(1 << 30);
    await RemapStore.open(io, opts(1n << 30n));
    for (const at of [0, 4096]) {
      const b = io.peek(at, 4096);
      b.writeUInt32LE(4, SB.version);
      b.writeUInt32LE(crc32c(b, 0, SB.crc), SB.crc);
      io.poke(at, b);
    }
    const img = io.peek(0, 64 * 1024);
    io.resetStats();
    const err = await RemapStore.open(io, opts(1n << 30n)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DmrError);
    expect((err as DmrError).code).toBe('E_SPARE_METADATA');
    expect((err as DmrError).message).toBe("the spare's metadata has format version 4; this program reads versions 1, 2 and 3");
    expect(io.stats.writes).toBe(0);
    expect(io.peek(0, 64 * 1024).equals(img)).toBe(true);
  });
});

describe('TableCopyDecoder', () => {
  it('gives the same state whatever the chunk sizes, and stops at the first bad entry', () => {
    const g = computeGeometry({ spareOffset: 0, spareSize: 1 << 30, blockSize: 512, journalRecords: 4 });
    const s = new RemapState(g, 1 << 21);
    for (let i = 0; i < 500; i++) s.apply(s.resolve({ op: 'remap', block: i * 97, origin: i % 2 ? 'auto' : 'manual', lost: i % 5 === 0 }, 1000 + i));
    for (let i = 0; i < 50; i++) s.apply(s.resolve({ op: 'retire', slot: 1000 + 3 * i }, 5));
    const uuid = Buffer.alloc(16, 9);
    const { buf, crc } = encodeTableCopy(s, uuid, 7, 11);
    const ctx = { uuid, geometry: g, mainBlocks: 1 << 21 };
    const h = decodeTableHeader(buf, ctx);
    if (!h.ok) throw new Error(h.why);
    expect(h.value.usedLength).toBe(buf.length);
    let seed = 1;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (const maxChunk of [1, 7, 23, 25, 4096, buf.length]) {
      const d = new TableCopyDecoder(buf, h.value, ctx, true);
      let off = 136;
      while (off < buf.length) {
        const len = 1 + Math.floor(rand() * maxChunk);
        expect(d.push(buf.subarray(off, off + len))).toBe(true);
        off += len;
      }
      const r = d.finish();
      if (!r.ok) throw new Error(r.why);
      expect(r.value).toMatchObject({ generation: 7, journalStartSeq: 11, crc });
      expect(JSON.stringify(r.value.state?.table.toJSON())).toBe(JSON.stringify(s.table.toJSON()));
      expect(r.value.state?.allocator.retiredSlots()).toEqual(s.allocator.retiredSlots());
    }
    // A byte changed where structure still holds (an entry's time): the checksum catches it.
    const t = Buffer.from(buf);
    t.writeUInt8(t.readUInt8(136 + 24 * 10 + 16) ^ 1, 136 + 24 * 10 + 16);
    const dt = new TableCopyDecoder(t, h.value, ctx, true);
    expect(dt.push(t.subarray(136))).toBe(true);
    expect(dt.finish()).toEqual({ ok: false, why: 'bad checksum' });
    // Entries out of order: push() says stop at once.
    const o = Buffer.from(buf);
    o.fill(0, 136 + 24 * 3, 136 + 24 * 3 + 8);
    const dO = new TableCopyDecoder(o, h.value, ctx, true);
    expect(dO.push(o.subarray(136, 136 + 24 * 4))).toBe(false);
    expect(dO.finish()).toEqual({ ok: false, why: 'entry 3: block out of order or range' });
  });
});

describe('format version 1 spares', () => {
  interface Fixture {
    size: number;
    mainSize: number;
    fingerprint: string;
    blockSize: 512;
    slotCount: number;
    pages: Record<string, string>;
    expect: { entries: Array<Record<string, unknown>>; counters: Record<string, number>; retired: number[]; generation: number; journalUsed: number };
  }
  const fx = JSON.parse(
    fs.readFileSync(path.join(import.meta.dirname, 'fixtures', 'remap-v1-spare.json'), 'utf8'),
  ) as Fixture;
  const load = (): MemSpareIo => {
    const io = new MemSpareIo(fx.size);
    for (const [off, b64] of Object.entries(fx.pages)) io.poke(Number(off), Buffer.from(b64, 'base64'));
    return io;
  };
  const vopts = (): OpenOptions => opts(BigInt(fx.mainSize), { main: { size: BigInt(fx.mainSize), fingerprint: Buffer.from(fx.fingerprint, 'hex') } });

  it('loads a spare written by the version-1 program (table copy + journal), as it was', async () => {
    const io = load();
    const before = io.peek(0, fx.size);
    const r = await RemapStore.open(io, vopts());
    expect(r.report.formatted).toBe(false);
    expect(r.store.geometry.version).toBe(1);
    expect(r.store.geometry.slotCount).toBe(fx.slotCount);
    // Version 1 has no "data on main" bit: every entry loads with it false.
    expect(r.table.toJSON()).toEqual(fx.expect.entries.map((e) => ({ ...e, dataOnMain: false })));
    // The version-1 program knew no scanRemaps; a version-1 spare does not store it: 0.
    expect(r.store.counters()).toEqual({ ...fx.expect.counters, scanRemaps: 0 });
    expect(r.allocator.retiredSlots()).toEqual(fx.expect.retired);
    expect(r.store.generation).toBe(fx.expect.generation);
    expect(r.store.journalUsed).toBe(fx.expect.journalUsed);
    expect(r.report.repairs).toEqual([]);
    expect(io.peek(0, fx.size).equals(before)).toBe(true); // loading wrote nothing
  });

  it('stays version 1 through commits and compactions (its layout is kept, not converted)', async () => {
    const io = load();
    const r = await RemapStore.open(io, vopts());
    await r.store.commit({ op: 'remap', block: 77, origin: 'manual' });
    await r.store.compact();
    await r.store.commit({ op: 'remap', block: 78, origin: 'auto' });
    const want = snap(r);
    const sb = io.peek(0, 4096);
    expect(sb.readUInt32LE(SB.version)).toBe(1);
    const again = await RemapStore.open(io, vopts());
    expect(again.store.geometry.version).toBe(1);
    expect(snap(again)).toBe(want);
    // The table copies it writes carry version 1 too.
    const g = again.store.geometry;
    expect(io.peek(g.tableOffsets[0], 12).readUInt32LE(8)).toBe(1);
    expect(io.peek(g.tableOffsets[1], 12).readUInt32LE(8)).toBe(1);
  });

  it('repairs a corrupt version-1 superblock copy as version 1', async () => {
    const io = load();
    io.flipBit(4096 + 100);
    const r = await RemapStore.open(io, vopts());
    expect(r.report.repairs).toEqual(['superblock copy 1 rewritten from copy 0']);
    expect(io.peek(4096, 4096).equals(io.peek(0, 4096))).toBe(true);
    expect(decodeSuperblock(io.peek(4096, 4096)).ok).toBe(true);
  });
});
