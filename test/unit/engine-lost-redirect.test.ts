// A block whose failed write is being redirected is already remapped for markLost, and the commit of
// writes in slots checks each one on its own (review finding 6): an unrelated write never fails with it.
import { describe, expect, it } from 'vitest';
import { ReadsNow } from '../../src/device/fault-ops.js';
import { enginePerTest, type EngineRig } from './engine-harness.js';

let rig: EngineRig;
enginePerTest((r) => (rig = r));

const item = (block: number) => ({ block, slotFailed: false, errorCount: 1 });
const slotOf = (ev: { written: Array<{ slot: number }> } | null): number => (ev?.written[0] as { slot: number }).slot;

describe('lost marks and redirects', () => {
  it('markLost leaves a redirected block alone; the writes in slots of it and an unrelated block both commit', async () => {
    const { engine, dev } = rig;
    await engine.writeBatch([item(100), item(200)], []);
    // A read of 100 planned before its redirect was published fails on main on its last try.
    const lost = await engine.markLost([item(100)]);
    // Nothing marked, answered as a block that reads now: the failed read is tried again (it waits for the redirect).
    expect(lost.get(100)).toBeInstanceOf(ReadsNow);
    expect(engine.store.table.get(100)).toBeUndefined();
    const a = await dev.startWrite(1, 1, 100, rig.block(0x11)).complete();
    const b = await dev.startWrite(2, 2, 200, rig.block(0x22)).complete();
    const r = await engine.writeBatch([], [{ block: 100, slot: slotOf(a) }, { block: 200, slot: slotOf(b) }]);
    expect(r.commitError).toBeNull();
    expect(r.redrive).toEqual([]);
    expect(engine.store.table.get(100)?.state).toBe('mapped');
    expect(engine.store.table.get(200)?.state).toBe('mapped');
    expect(rig.slotData(engine.store.table.get(100)?.slot as number).equals(rig.block(0x11))).toBe(true);
  });

  it('a write whose redirect no longer fits the table is driven again; the others commit', async () => {
    const { engine, dev } = rig;
    await engine.writeBatch([item(100), item(200)], []);
    const a = await dev.startWrite(1, 1, 100, rig.block(0x11)).complete();
    const b = await dev.startWrite(2, 2, 200, rig.block(0x22)).complete();
    // Block 100 got an entry of its own meanwhile (lost at another slot).
    const other = await engine.store.reserveSlot();
    await engine.store.commitBatch([{ op: 'remap', block: 100, slot: other, origin: 'auto', lost: true }]);
    const r = await engine.writeBatch([], [{ block: 100, slot: slotOf(a) }, { block: 200, slot: slotOf(b) }]);
    expect(r.commitError).toBeNull();
    expect(r.redrive).toEqual([{ block: 100, slot: slotOf(a) }]);
    expect(engine.store.table.get(200)?.state).toBe('mapped');
    // The redirect is gone and its slot free again; the write driven again lands in 100's slot, LOST there.
    expect(engine['mirror'].redirects.has(100)).toBe(false);
    expect(engine.store.allocator.isFree(slotOf(a))).toBe(true);
    const again = await dev.startWrite(3, 3, 100, rig.block(0x11)).complete();
    expect(slotOf(again)).toBe(other);
    expect((await engine.writeBatch([], [{ block: 100, slot: other }])).commitError).toBeNull();
    expect(engine.store.table.get(100)?.state).toBe('mapped');
  });
});
