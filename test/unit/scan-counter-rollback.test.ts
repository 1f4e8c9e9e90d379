// The persisted scanRemaps counter against a rollback to the program right before it (9e1c6da, its remap store
// bundled in fixtures/pre-scan-counter) and back, and what the exporter makes of it: every exported counter
// only grows unless what it counts was reset (from a cold review of the counter).
import { describe, expect, it } from 'vitest';
import { deviceStatusSchema, statsSchema } from '../../src/control/protocol.js';
import type { RemapEngine } from '../../src/device/remap-engine.js';
import { remapStatus } from '../../src/device/remap-control.js';
import { remapCounters } from '../../src/exporter/metrics.js';
import { JR, MAX_OPS_PER_RECORD, TB } from '../../src/remap/format.js';
import { JOURNAL_RECORD_SIZE, metaLenFor } from '../../src/remap/geometry.js';
import { MemSpareIo } from '../../src/remap/mem-io.js';
import { RemapStore, type OpenOptions } from '../../src/remap/store.js';
import { RemapStore as OldStore } from './fixtures/pre-scan-counter/store.mjs';

const MAIN = { size: 1n << 30n, fingerprint: Buffer.alloc(32, 0xc3) };
const SLOTS = 256;
const J = 4;
const SPARE = metaLenFor(SLOTS, J) + SLOTS * 512;
let t = 1_764_000_000_000;
const opts = (extra: Partial<OpenOptions> = {}): OpenOptions => ({ main: MAIN, blockSize: 512, journalRecords: J, now: () => t++, ...extra });

type OldOpen = {
  store: { counters(): Record<string, number>; commit(op: unknown): Promise<unknown>; compact(): Promise<void>; geometry: { version: number } };
  table: { toJSON(): Array<{ block: number; origin: string }> };
  report: { replayedRecords: number; repairs: string[] };
};
const openOld = OldStore.open as (i: MemSpareIo, o: OpenOptions) => Promise<OldOpen>;
type AnyStats = { autoRemaps: number; manualRemaps: number; scanRemaps?: number };
/** The exporter's remap counters of one scrape: dmremap_remaps_total by origin, and scan (dmremap_scan_remaps_total). */
const series = (s: AnyStats): Record<string, number | undefined> => {
  const rc = remapCounters(s);
  return { ...Object.fromEntries(rc.byOrigin), scan: rc.scan };
};
/** What `stats` of each program reports of the spare's persisted counters. */
const newStats = (c: AnyStats): AnyStats => ({ autoRemaps: c.autoRemaps, manualRemaps: c.manualRemaps, scanRemaps: c.scanRemaps });
const oldStats = (c: Record<string, number>): AnyStats => ({ autoRemaps: c.autoRemaps as number, manualRemaps: c.manualRemaps as number });

/** A version-3 spare on which this program made 3 scan remaps and 1 auto remap. */
async function spareWithScanRemaps(): Promise<MemSpareIo> {
  const io = new MemSpareIo(SPARE);
  const r = await RemapStore.open(io, opts());
  expect(r.store.geometry.version).toBe(3);
  for (const b of [10, 11, 12]) await r.store.commit({ op: 'remap', block: b, origin: 'scan' });
  await r.store.commit({ op: 'remap', block: 13, origin: 'auto' });
  expect(r.store.counters()).toMatchObject({ autoRemaps: 4, scanRemaps: 3 });
  return io;
}

describe('rollback to the program before scanRemaps (9e1c6da) and back: the spare', () => {
  it('sound: the older program loads a version-3 spare with scanRemaps whole, changes nothing by opening it, writes 0 in slot 5, and this program then reads 0', async () => {
    const io = await spareWithScanRemaps();
    const img = io.peek(0, SPARE);
    const old = await openOld(io, opts());
    expect(old.store.geometry.version).toBe(3);
    expect(old.report.repairs).toEqual([]);
    expect(old.report.replayedRecords).toBe(4);
    expect(old.table.toJSON().map((e) => `${e.block}:${e.origin}`)).toEqual(['10:scan', '11:scan', '12:scan', '13:auto']);
    expect(old.store.counters()).toMatchObject({ autoRemaps: 4, manualRemaps: 0 });
    expect(io.peek(0, SPARE).equals(img)).toBe(true); // opening writes nothing
    // Without a write by the older program, this program reads the counter unchanged.
    expect((await RemapStore.open(io, opts())).store.counters()).toMatchObject({ autoRemaps: 4, scanRemaps: 3 });
    // The older program commits (slot 5 of its record: 0) and compacts (slot 5 of its copy: 0).
    const old2 = await openOld(io, opts());
    await old2.store.commit({ op: 'remap', block: 20, origin: 'scan' });
    const back = await RemapStore.open(io, opts());
    expect(back.store.counters()).toMatchObject({ autoRemaps: 5, scanRemaps: 0 });
    expect(back.table.toJSON().filter((e) => e.origin === 'scan').length).toBe(4);
    await old2.store.compact();
    const g = back.store.geometry;
    for (const c of [0, 1] as const) expect(io.peek(g.tableOffsets[c], 4096).readBigUInt64LE(TB.counters + 8 * 5)).toBe(0n);
    const again = await RemapStore.open(io, opts());
    expect(again.report.repairs).toEqual([]);
    expect(again.store.counters()).toMatchObject({ autoRemaps: 5, scanRemaps: 0 });
    // Counting on from there: never above autoRemaps.
    await again.store.commit({ op: 'remap', block: 21, origin: 'scan' });
    expect(again.store.counters()).toMatchObject({ autoRemaps: 6, scanRemaps: 1 });
    // The record this program wrote carries it in slot 5.
    const rec = io.peek((g.journalOffsets[again.store.generation % 2 === 0 ? 1 : 0] as number) + (again.store.journalUsed - 1) * JOURNAL_RECORD_SIZE, JOURNAL_RECORD_SIZE);
    expect(rec.readBigUInt64LE(JR.counters + 8 * 5)).toBe(1n);
  });
});

describe('a batch over several journal records, torn', () => {
  it('sound: a batch torn after its first record counts the scan remaps of that record only (per-record snapshots), and none of the rest', async () => {
    const n = MAX_OPS_PER_RECORD + 10; // two records, one write
    const ops = Array.from({ length: n }, (_, i) => ({ op: 'remap' as const, block: 1000 + i, origin: i % 2 === 0 ? ('scan' as const) : ('auto' as const) }));
    const bio = new MemSpareIo(metaLenFor(4096, 8) + 4096 * 512);
    const big = await RemapStore.open(bio, opts({ journalRecords: 8 }));
    await big.store.commitBatch(ops);
    expect(big.store.counters()).toMatchObject({ autoRemaps: n, scanRemaps: Math.ceil(n / 2) });
    const g = big.store.geometry;
    const second = (g.journalOffsets[1] as number) + JOURNAL_RECORD_SIZE;
    bio.poke(second + JR.ops, Buffer.alloc(64, 0xee)); // the second record torn: its checksum fails
    const again = await RemapStore.open(bio, opts({ journalRecords: 8 }));
    expect(again.report.replayedRecords).toBe(1);
    expect(again.store.counters()).toMatchObject({ autoRemaps: MAX_OPS_PER_RECORD, scanRemaps: Math.ceil(MAX_OPS_PER_RECORD / 2) });
    expect(again.table.toJSON().filter((e) => e.origin === 'scan').length).toBe(Math.ceil(MAX_OPS_PER_RECORD / 2));
  });
});

describe('rollback and back: the exported counters', () => {
  it('origin="auto" does not go down when the older daemon wrote nothing to the spare in between (no difference of counters is exported)', async () => {
    const io = await spareWithScanRemaps();
    const scrapes: Array<Record<string, number | undefined>> = [];
    // 1. This program's daemon: auto 4 (the scan's 3 among them), scan 3.
    scrapes.push(series(newStats((await RemapStore.open(io, opts())).store.counters())));
    // 2. Rolled back (restart with the older program installed): no scanRemaps in its stats.
    scrapes.push(series(oldStats((await openOld(io, opts())).store.counters())));
    // 3. Upgraded again before the older daemon committed anything: scanRemaps is read back as 3.
    scrapes.push(series(newStats((await RemapStore.open(io, opts())).store.counters())));
    expect(scrapes.map((s) => s.auto)).toEqual([4, 4, 4]);
    expect(scrapes.map((s) => s.scan)).toEqual([3, undefined, 3]);
  });

  it('origin="auto" grows by exactly the remaps made while rolled back; only the scan counter resets (the older program writes it as 0)', async () => {
    const io = await spareWithScanRemaps();
    const before = series(newStats((await RemapStore.open(io, opts())).store.counters()));
    const old = await openOld(io, opts());
    await old.store.commit({ op: 'remap', block: 30, origin: 'auto' }); // one automatic remap while rolled back
    const after = series(newStats((await RemapStore.open(io, opts())).store.counters()));
    expect(before).toEqual({ auto: 4, manual: 0, scan: 3 });
    expect(after).toEqual({ auto: 5, manual: 0, scan: 0 });
  });
});

describe('a version-2 spare', () => {
  it('stats and status carry no scanRemaps (the spare stores the scan\'s remaps as auto): no scan series, not a 0 that cannot count', async () => {
    const io = new MemSpareIo(SPARE);
    const r = await RemapStore.open(io, opts({ formatVersion: 2 }));
    await r.store.commit({ op: 'remap', block: 10, origin: 'scan' }); // what the daemon commits for a block the scan found
    const engine = { store: r.store, deviceSectors: 1 << 21, spareDataOffset: 0n } as unknown as RemapEngine;
    const status = remapStatus(engine, 'healthy');
    expect(status.autoRemaps).toBe(1);
    expect('scanRemaps' in status).toBe(false);
    expect(deviceStatusSchema.shape.remap.safeParse(status).success).toBe(true);
    expect(series({ autoRemaps: status.autoRemaps, manualRemaps: status.manualRemaps })).toEqual({ auto: 1, manual: 0, scan: undefined });
  });
});

describe('the schemas stay strict', () => {
  it('sound: scanRemaps must be a number when present (like its siblings: z.number(), negatives not refused), and may be absent', () => {
    const f = statsSchema.shape.scanRemaps;
    expect(f.safeParse(undefined).success).toBe(true);
    expect(f.safeParse(3).success).toBe(true);
    expect(f.safeParse('3').success).toBe(false);
    expect(f.safeParse(null).success).toBe(false);
    expect(deviceStatusSchema.shape.remap.shape.scanRemaps.safeParse('3').success).toBe(false);
  });
});
