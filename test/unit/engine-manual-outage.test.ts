// A manual remap that runs while main is in an outage commits nothing: the control handler refuses it when
// an outage is already known, but a remap queued behind other work, or whose own copy is the first read to
// find main gone, reaches the engine during one. Committing it `lost` would make intact data read EIO.
import { describe, expect, it } from 'vitest';
import { BS, enginePerTest, type EngineRig } from './engine-harness.js';

let rig: EngineRig;
enginePerTest((r) => (rig = r));

const mainFails = (block: number, code: string): void =>
  void rig.native.cfg.failReads.push({ device: 'main', offset: block * BS, bytes: BS, code });

describe('manual remap during an outage of main', () => {
  it('is refused with E_OUTAGE when the engine runs it during an outage, and the table is unchanged', async () => {
    let outage = true;
    rig.engine.readOutageActive = () => outage;
    await expect(rig.engine.remap(10)).rejects.toMatchObject({ code: 'E_OUTAGE' });
    expect(rig.engine.store.table.get(10)).toBeUndefined();
    outage = false;
    expect(await rig.engine.remap(10)).toMatchObject({ block: 10, state: 'mapped' });
  });

  it('is not refused during a write outage (main refuses writes but still reads: the copy reads main)', async () => {
    rig.engine.outageActive = () => true; // health critical
    rig.engine.readOutageActive = () => false;
    expect(await rig.engine.remap(14)).toMatchObject({ block: 14, state: 'mapped' });
  });

  it('a copy that fails because main is gone (ENODEV) commits nothing, where EIO commits the block lost', async () => {
    mainFails(11, 'ENODEV');
    await expect(rig.engine.remap(11)).rejects.toMatchObject({ code: 'E_OUTAGE' });
    expect(rig.engine.store.table.get(11)).toBeUndefined();
    mainFails(12, 'EIO');
    expect(await rig.engine.remap(12)).toMatchObject({ block: 12, state: 'lost', readErrno: 'EIO' });
  });

  it('a copy that fails with EIO once an outage has begun commits nothing, and frees its slot', async () => {
    const before = rig.engine.store.counters();
    const free = rig.engine.store.state.allocator.free;
    mainFails(13, 'EIO');
    let outage = false;
    const dev = rig.dev as unknown as { copyRange: (...a: unknown[]) => Promise<unknown> };
    const copy = dev.copyRange.bind(dev);
    dev.copyRange = async (...a: unknown[]) => {
      outage = true; // the detector declares the outage while this copy is in flight
      return copy(...a);
    };
    rig.engine.readOutageActive = () => outage;
    await expect(rig.engine.remap(13)).rejects.toMatchObject({ code: 'E_OUTAGE' });
    expect(rig.engine.store.table.get(13)).toBeUndefined();
    expect(rig.engine.store.counters().manualRemaps).toBe(before.manualRemaps);
    expect(rig.engine.store.state.allocator.free).toBe(free);
    outage = false;
    rig.native.cfg.failReads.length = 0;
    const again = await rig.engine.remap(13);
    expect(again).toMatchObject({ block: 13, state: 'mapped' });
  });
});
