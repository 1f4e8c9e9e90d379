// recheck reads its candidates on main outside the engine's one-at-a-time chain (review finding 4): fault
// handling (a redirect of an unrelated failed write) is not held up by slow reads of failing sectors.
import { describe, expect, it } from 'vitest';
import { RECHECK_BATCH } from '../../src/device/remap-engine.js';
import { BS, enginePerTest, type EngineRig } from './engine-harness.js';

let rig: EngineRig;
enginePerTest((r) => (rig = r));

const item = (block: number) => ({ block, slotFailed: false, errorCount: 1 });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('recheck beside fault handling', () => {
  it('an unrelated redirect is not delayed by the slow main reads of recheck candidates', async () => {
    const { engine, dev } = rig;
    const pending = [10, 11, 12, 13, 14, 15];
    const marked = await engine.markLost(pending.map(item));
    expect([...marked.values()]).toEqual(pending.map(() => null));
    // Each pending block now reads on main again, but slowly (a failing sector's retries).
    const read = dev.readRange.bind(dev);
    let slowReads = 0;
    dev.readRange = async (from, offset, bytes) => {
      const b = Number(offset) / BS;
      if (from === 'main' && pending.includes(b)) {
        slowReads++;
        await sleep(100);
      }
      return read(from, offset, bytes);
    };
    let recheckDone = false;
    const recheck = engine.recheck(null, true).then((r) => ((recheckDone = true), r));
    await sleep(20);
    const t0 = Date.now();
    const r = await engine.writeBatch([item(500)], []);
    const waited = Date.now() - t0;
    expect(r.redirected.get(500)).toBeNull();
    expect(recheckDone).toBe(false);
    expect(slowReads).toBeLessThan(pending.length);
    expect(waited).toBeLessThan(pending.length * 100);
    const results = await recheck;
    expect(results).toEqual(pending.map((block) => ({ block, result: 'recovered', errno: null })));
    for (const b of pending) expect(engine.store.table.get(b)).toBeUndefined();
  });

  it('blocks that read go back in bounded batches: a redirect queued meanwhile runs between two batches', async () => {
    const { engine, dev } = rig;
    const pending = Array.from({ length: RECHECK_BATCH + 2 }, (_, i) => 20 + i);
    await engine.markLost(pending.map(item));
    // The first read of each is quick; the read again under MOVING (inside the chain) is slow.
    const read = dev.readRange.bind(dev);
    const reads = new Map<number, number>();
    let reReads = 0;
    dev.readRange = async (from, offset, bytes) => {
      const b = Number(offset) / BS;
      if (from === 'main' && pending.includes(b)) {
        const n = (reads.get(b) ?? 0) + 1;
        reads.set(b, n);
        if (n === 2) {
          reReads++;
          await sleep(30);
        }
      }
      return read(from, offset, bytes);
    };
    const recheck = engine.recheck(pending);
    while (reReads === 0) await sleep(2);
    const r = await engine.writeBatch([item(500)], []);
    expect(r.redirected.get(500)).toBeNull();
    // It ran after the first batch, before the second batch's reads under MOVING.
    expect(reReads).toBe(RECHECK_BATCH);
    expect((await recheck).map((x) => x.result)).toEqual(pending.map(() => 'recovered'));
  });

  it('stops reading candidates once the device is stopping', async () => {
    const { engine, dev } = rig;
    const pending = [30, 31, 32, 33];
    await engine.markLost(pending.map(item));
    const read = dev.readRange.bind(dev);
    let mainReads = 0;
    dev.readRange = async (from, offset, bytes) => {
      if (from === 'main') {
        mainReads++;
        await sleep(40);
      }
      return read(from, offset, bytes);
    };
    const recheck = engine.recheck(null);
    await sleep(10);
    await engine.quiesce();
    await expect(recheck).rejects.toMatchObject({ code: 'E_DAEMON' });
    expect(mainReads).toBe(1);
  });
});
