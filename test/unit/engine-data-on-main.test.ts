// Whether main holds a lost block's last data is on the spare (the entry's dataOnMain; review finding 9):
// recheck returns such a block to main after a restart too; a block lost because its slot failed stays lost.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fakeFor, makeWorld, type World } from './helpers.js';
import { BS, openEngine, type EngineRig } from './engine-harness.js';
import type { FakeNative } from '../../src/testing/fake-native.js';

let w: World;
let native: FakeNative;
let rig: EngineRig;
beforeEach(async () => {
  w = makeWorld();
  native = fakeFor(w);
  rig = await openEngine(w, native);
});
afterEach(async () => {
  await rig.close();
  w.cleanup();
});

const restart = async (): Promise<void> => {
  await rig.close();
  rig = await openEngine(w, native);
};
const badMain = (block: number): void => void native.cfg.failReads.push({ device: 'main', offset: block * BS, bytes: BS, code: 'EIO' });

describe('lost blocks whose data is on main, across a restart', () => {
  it('a block marked lost because main could not read it is recovered by a recheck after a restart', async () => {
    expect((await rig.engine.markLost([{ block: 40, slotFailed: false, errorCount: 1 }])).get(40)).toBeNull();
    expect(rig.engine.store.table.get(40)).toMatchObject({ state: 'lost', dataOnMain: true });
    await restart();
    expect(rig.engine.store.table.get(40)).toMatchObject({ state: 'lost', dataOnMain: true });
    expect(await rig.engine.recheck([40])).toEqual([{ block: 40, result: 'recovered', errno: null }]);
    expect(rig.engine.store.table.get(40)).toBeUndefined();
  });

  it('a manual remap of an unreadable block records it too', async () => {
    badMain(41);
    expect(await rig.engine.remap(41)).toMatchObject({ block: 41, state: 'lost', readErrno: 'EIO' });
    native.cfg.failReads.length = 0;
    await restart();
    expect(await rig.engine.recheck(null)).toEqual([{ block: 41, result: 'recovered', errno: null }]);
  });

  it('a block lost because its slot failed stays lost after a restart (main holds older data)', async () => {
    expect(await rig.engine.remap(42)).toMatchObject({ state: 'mapped' });
    expect((await rig.engine.markLost([{ block: 42, slotFailed: true, errorCount: 1 }])).get(42)).toBeNull();
    expect(rig.engine.store.table.get(42)).toMatchObject({ state: 'lost', dataOnMain: false });
    await restart();
    expect(await rig.engine.recheck([42])).toEqual([{ block: 42, result: 'main-stale', errno: null }]);
    expect(rig.engine.store.table.get(42)?.state).toBe('lost');
  });

  it('a write to a pending block clears it: mapped, then lost by a failed slot, it stays lost', async () => {
    await rig.engine.markLost([{ block: 43, slotFailed: false, errorCount: 1 }]);
    const ev = await rig.dev.startWrite(1, 1, 43, Buffer.alloc(BS, 0x43)).complete();
    const slot = (ev?.written[0] as { slot: number }).slot;
    expect((await rig.engine.writeBatch([], [{ block: 43, slot }])).commitError).toBeNull();
    expect(rig.engine.store.table.get(43)).toMatchObject({ state: 'mapped', dataOnMain: false });
    await rig.engine.markLost([{ block: 43, slotFailed: true, errorCount: 2 }]);
    await restart();
    expect(await rig.engine.recheck([43])).toEqual([{ block: 43, result: 'main-stale', errno: null }]);
  });
});
