// Slots of redirects given up are freed only after a drain (review finding 5): a write planned against a
// provisional slot and still in flight must not land in that slot after it went to another block.
import { describe, expect, it } from 'vitest';
import { enginePerTest, type EngineRig } from './engine-harness.js';

let rig: EngineRig;
enginePerTest((r) => (rig = r));

const item = (block: number) => ({ block, slotFailed: false, errorCount: 1 });

describe('freeing redirect slots', () => {
  it('an abandoned redirect\'s slot is reused only after the write in flight to it completed', async () => {
    const { engine, dev } = rig;
    expect((await engine.writeBatch([item(100)], [])).redirected.get(100)).toBeNull();
    // W' writes block 100 to its provisional slot P and stays in flight on a slow spare.
    const wPrime = dev.startWrite(1, 1, 100, rig.block(0xbb));
    const wDone = new Promise((r) => setTimeout(() => r(wPrime.complete()), 60));
    // 100's redirect is given up; the next redirect (200) takes a slot and its retried write lands there.
    const abandon = engine.abandonRedirects([100]);
    const r = await engine.writeBatch([item(200)], []);
    expect(r.redirected.get(200)).toBeNull();
    const x = dev.startWrite(2, 2, 200, rig.block(0xcc));
    const ev = await x.complete();
    await abandon;
    await wDone;
    expect(ev?.written).toHaveLength(1);
    const written = ev?.written[0] as { block: number; slot: number };
    const c = await engine.writeBatch([], [{ block: 200, slot: written.slot }]);
    expect(c.commitError).toBeNull();
    expect(c.redrive).toEqual([]);
    const e = engine.store.table.get(200);
    expect(e?.state).toBe('mapped');
    // Whatever slot 200 got (P again or another), it holds 200's data, not W''s.
    expect(rig.slotData(e?.slot as number).equals(rig.block(0xcc))).toBe(true);
  });

  it('after a failed commit, the redirect\'s slot is freed only after a drain', async () => {
    const { engine, dev } = rig;
    await engine.writeBatch([item(100)], []);
    const x = dev.startWrite(1, 1, 100, rig.block(0xaa));
    const ev = await x.complete();
    const slot = (ev?.written[0] as { slot: number }).slot;
    // Another write to 100 planned against the slot is still in flight when the commit fails.
    const wPrime = dev.startWrite(3, 3, 100, rig.block(0xbb));
    const wDone = new Promise((r) => setTimeout(() => r(wPrime.complete()), 60));
    const commit = engine.store.commitBatch.bind(engine.store);
    engine.store.commitBatch = () => Promise.reject(new Error('journal write failed'));
    const failed = engine.writeBatch([], [{ block: 100, slot }]);
    const next = engine.writeBatch([item(200)], []); // queued behind it
    expect((await failed).commitError?.code).toBe('E_IO');
    engine.store.commitBatch = commit;
    await next;
    const y = await dev.startWrite(4, 4, 200, rig.block(0xcc)).complete();
    const ySlot = (y?.written[0] as { slot: number }).slot;
    expect((await engine.writeBatch([], [{ block: 200, slot: ySlot }])).commitError).toBeNull();
    await wDone;
    expect(rig.slotData(engine.store.table.get(200)?.slot as number).equals(rig.block(0xcc))).toBe(true);
  });
});
