// A rollback to a program that reads only format versions 1 and 2 (fixtures/remap-store-format-v2: main's
// remap store before format version 3, bundled) must never silently lose remaps. Its decoders do not know
// the scan origin (entry and op flag bit 3): a journal op carrying it ends its replay like a torn tail, and a
// table copy carrying it makes it load the older copy and rewrite the newer one. So the scan origin is only
// stored by format version 3, which that program refuses at the superblock (E_SPARE_METADATA, nothing
// written); a version-2 spare stores a scan remap as auto and stays readable by it. (Review finding F1.)
import { describe, expect, it } from 'vitest';
import { metaLenFor } from '../../src/remap/geometry.js';
import { MemSpareIo } from '../../src/remap/mem-io.js';
import { RemapStore, type OpenOptions } from '../../src/remap/store.js';
// Generated JavaScript (see its make.sh); typed here by what the test uses.
import { RemapStore as V2Store } from './fixtures/remap-store-format-v2/store.mjs';

interface Loaded {
  table: { toJSON(): Array<{ block: number; state: string; origin: string }> };
  report: { repairs: string[] };
}
const openV2 = V2Store.open as (io: MemSpareIo, o: OpenOptions) => Promise<Loaded>;

const MAIN = { size: 1n << 30n, fingerprint: Buffer.alloc(32, 0xa1) };
const SLOTS = 64;
const J = 8;
const SPARE = metaLenFor(SLOTS, J) + SLOTS * 512;
let t = 1_764_000_000_000;
const opts = (extra: Partial<OpenOptions> = {}): OpenOptions => ({ main: MAIN, blockSize: 512, journalRecords: J, now: () => t++, ...extra });
const blocks = (r: Loaded): string[] => r.table.toJSON().map((e) => `${e.block}:${e.state}:${e.origin}`);

/** What the older program does with the spare: its error (code and message), or what it loaded. */
async function v2Opens(io: MemSpareIo): Promise<{ code: unknown; message: string } | { loaded: string[]; repairs: string[] }> {
  try {
    const r = await openV2(io, opts());
    return { loaded: blocks(r), repairs: r.report.repairs };
  } catch (e) {
    return { code: (e as { code?: unknown }).code, message: (e as Error).message };
  }
}

const REFUSED = { code: 'E_SPARE_METADATA', message: "the spare's metadata has format version 3; this program reads versions 1 and 2" };

describe('rollback to a program that reads format versions 1 and 2', () => {
  it('journal: a fresh (version-3) spare with a scan remap in its journal is refused, and not one byte of it changes', async () => {
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts());
    expect(r.store.geometry.version).toBe(3);
    await r.store.commit({ op: 'remap', block: 5, origin: 'auto' });
    await r.store.commit({ op: 'remap', block: 11, origin: 'scan' });
    await r.store.commit({ op: 'remap', block: 20, origin: 'manual' });
    const img = io.peek(0, SPARE);
    io.resetStats();
    expect(await v2Opens(io)).toEqual(REFUSED);
    expect(io.stats.writes).toBe(0);
    expect(io.peek(0, SPARE).equals(img)).toBe(true);
    // This program still reads all of it.
    expect(blocks(await RemapStore.open(io, opts()))).toEqual(['5:mapped:auto', '11:mapped:scan', '20:mapped:manual']);
  });

  it('table copy: a version-3 spare whose newest table copy holds a scan entry is refused; no copy is "repaired"', async () => {
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts());
    await r.store.commit({ op: 'remap', block: 5, origin: 'auto' });
    await r.store.compact();
    await r.store.commit({ op: 'remap', block: 11, origin: 'scan' });
    await r.store.commit({ op: 'remap', block: 20, origin: 'manual' });
    await r.store.compact();
    const img = io.peek(0, SPARE);
    io.resetStats();
    expect(await v2Opens(io)).toEqual(REFUSED);
    expect(io.stats.writes).toBe(0);
    expect(io.peek(0, SPARE).equals(img)).toBe(true);
  });

  it('a version-3 spare without any scan entry is refused too (the version decides, not the entries)', async () => {
    const io = new MemSpareIo(SPARE);
    await RemapStore.open(io, opts());
    const img = io.peek(0, SPARE);
    expect(await v2Opens(io)).toEqual(REFUSED);
    expect(io.peek(0, SPARE).equals(img)).toBe(true);
  });

  it('a version-2 spare with scan remaps (stored as auto) loads in the older program whole, journal and table copies', async () => {
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts({ formatVersion: 2 }));
    await r.store.commit({ op: 'remap', block: 5, origin: 'auto' });
    await r.store.commit({ op: 'remap', block: 11, origin: 'scan' });
    await r.store.compact();
    await r.store.commit({ op: 'remap', block: 12, origin: 'scan', lost: true, dataOnMain: true });
    await r.store.commit({ op: 'remap', block: 20, origin: 'manual' });
    const want = ['5:mapped:auto', '11:mapped:auto', '12:lost:auto', '20:mapped:manual'];
    expect(blocks(r)).toEqual(want);
    expect(await v2Opens(io)).toEqual({ loaded: want, repairs: [] });
    // And back: the newer program still sees a version-2 spare.
    const again = await RemapStore.open(io, opts());
    expect(again.store.geometry.version).toBe(2);
    expect(blocks(again)).toEqual(want);
  });

  it('a spare the older program formatted and wrote stays version 2 here: it loads whole, a scan remap is stored as auto, the older program reads it all back', async () => {
    const io = new MemSpareIo(SPARE);
    const old = (await openV2(io, opts())) as Loaded & { store: { commit(op: unknown): Promise<void>; compact(): Promise<void> } };
    await old.store.commit({ op: 'remap', block: 3, origin: 'auto', lost: true, dataOnMain: true });
    await old.store.compact();
    await old.store.commit({ op: 'remap', block: 9, origin: 'manual' });
    expect(io.peek(8, 4).readUInt32LE(0)).toBe(2);
    const r = await RemapStore.open(io, opts());
    expect(r.report.formatted).toBe(false);
    expect(r.store.geometry.version).toBe(2);
    expect(blocks(r)).toEqual(['3:lost:auto', '9:mapped:manual']);
    await r.store.commit({ op: 'remap', block: 30, origin: 'scan' });
    await r.store.compact();
    await r.store.commit({ op: 'remap', block: 31, origin: 'scan' });
    const want = ['3:lost:auto', '9:mapped:manual', '30:mapped:auto', '31:mapped:auto'];
    expect(blocks(r)).toEqual(want);
    expect(io.peek(8, 4).readUInt32LE(0)).toBe(2);
    expect(await v2Opens(io)).toEqual({ loaded: want, repairs: [] });
  });
});
