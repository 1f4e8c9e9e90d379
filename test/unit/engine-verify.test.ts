// `verify` reads of main (src/device/verify-gate.ts, remap-queries.ts): one at a time for the whole daemon,
// a few waiting in order, the next refused with E_BUSY; refused during an outage of main (E_OUTAGE) while a
// block on the spare is still verified; a block remapped while its verify waited is answered from the spare.
import { describe, expect, it } from 'vitest';
import { VerifyGate, MAX_WAITING_VERIFY_READS } from '../../src/device/verify-gate.js';
import { enginePerTest, type EngineRig } from './engine-harness.js';

let rig: EngineRig;
enginePerTest((r) => (rig = r));

/** Makes reads of main hang until released; counts them. */
function holdMainReads(): { release: () => void; inFlight: () => number; most: () => number; started: () => number } {
  let inFlight = 0;
  let most = 0;
  let started = 0;
  const waiting: Array<() => void> = [];
  const orig = rig.dev.readRange.bind(rig.dev);
  rig.dev.readRange = async (from, offset, bytes) => {
    if (from !== 'main') return orig(from, offset, bytes);
    started++;
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise<void>((r) => waiting.push(r));
    inFlight--;
    return orig(from, offset, bytes);
  };
  return { release: () => waiting.shift()?.(), inFlight: () => inFlight, most: () => most, started: () => started };
}

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 10));

describe('verify reads of main', () => {
  it('run one at a time, in order; past MAX_WAITING_VERIFY_READS waiting the next gets E_BUSY at once', async () => {
    const h = holdMainReads();
    const order: number[] = [];
    const asked = Array.from({ length: MAX_WAITING_VERIFY_READS + 1 }, (_, i) => rig.engine.verify(20 + i).then((r) => order.push(r.sector)));
    await tick();
    expect(h.inFlight()).toBe(1);
    await expect(rig.engine.verify(40)).rejects.toMatchObject({ code: 'E_BUSY' });
    for (let i = 0; i < MAX_WAITING_VERIFY_READS + 1; i++) {
      h.release();
      await tick();
    }
    await Promise.all(asked);
    expect(h.most()).toBe(1);
    expect(order).toEqual([20, 21, 22, 23, 24]);
    // The gate is free again.
    const again = rig.engine.verify(41);
    await tick();
    h.release();
    expect(await again).toMatchObject({ sector: 41, device: 'main', readable: true });
  });

  it('are refused during an outage of main (E_OUTAGE), also one that was waiting when it began; a block on the spare is still verified', async () => {
    expect(await rig.engine.remap(30)).toMatchObject({ state: 'mapped' });
    const h = holdMainReads();
    let outage = false;
    rig.engine.readOutageActive = () => outage;
    const first = rig.engine.verify(20);
    const second = rig.engine.verify(21);
    await tick();
    outage = true;
    h.release();
    expect(await first).toMatchObject({ sector: 20, readable: true });
    await expect(second).rejects.toMatchObject({ code: 'E_OUTAGE', message: expect.stringContaining('verify refused: main is in an outage') });
    await expect(rig.engine.verify(22)).rejects.toMatchObject({ code: 'E_OUTAGE' });
    expect(h.started()).toBe(1);
    expect(await rig.engine.verify(30)).toMatchObject({ state: 'mapped', device: 'spare', readable: true });
  });

  it('a block remapped while its verify waited is answered from the spare', async () => {
    const h = holdMainReads();
    const first = rig.engine.verify(20);
    const second = rig.engine.verify(25);
    await tick();
    // The remap's copy reads main through copyRange, not readRange: not held.
    expect(await rig.engine.remap(25)).toMatchObject({ state: 'mapped' });
    h.release();
    expect(await first).toMatchObject({ device: 'main' });
    expect(await second).toMatchObject({ sector: 25, state: 'mapped', device: 'spare', readable: true });
    expect(h.started()).toBe(1);
  });
});

describe('VerifyGate', () => {
  it('a read that fails lets the next one run', async () => {
    const g = new VerifyGate(1);
    const a = g.run(() => Promise.reject(new Error('EIO')));
    const b = g.run(() => Promise.resolve('b'));
    await expect(a).rejects.toThrow('EIO');
    await expect(b).resolves.toBe('b');
    expect(g.load()).toEqual({ running: false, waiting: 0 });
  });
});
