// The auto-remap work queue on its own: one job per (kind, block), foreground before background, batches
// by group, and a full background lane that refuses (and counts) what does not fit.
import { describe, expect, it } from 'vitest';
import { WorkQueue } from '../../src/device/work-queue.js';

type Item = { block: number };

function recorder(): { batches: Array<{ group: string; jobs: string[] }>; run: (g: string, jobs: Array<{ kind: string; item: Item }>) => Promise<Map<string, Error | null>> } {
  const batches: Array<{ group: string; jobs: string[] }> = [];
  return {
    batches,
    run: async (group, jobs) => {
      batches.push({ group, jobs: jobs.map((j) => `${j.kind}:${j.item.block}`) });
      return new Map();
    },
  };
}

describe('WorkQueue', () => {
  it('joins a queued job for the same kind and block, runs foreground jobs first, one group per batch', async () => {
    const r = recorder();
    const q = new WorkQueue<Item>(r.run, (k) => (k === 'heal' || k === 'redirect' ? 'write' : k));
    const done = [
      q.add('background', 'relocate', { block: 1 }),
      q.add('foreground', 'redirect', { block: 2 }),
      q.add('foreground', 'redirect', { block: 2 }), // joins the one above
      q.add('foreground', 'heal', { block: 3 }),
      q.add('foreground', 'lost', { block: 4 }),
    ];
    expect(await Promise.all(done)).toEqual([null, null, null, null, null]);
    expect(r.batches).toEqual([
      { group: 'write', jobs: ['redirect:2', 'heal:3'] },
      { group: 'lost', jobs: ['lost:4'] },
      { group: 'relocate', jobs: ['relocate:1'] },
    ]);
    expect(q.stats()).toMatchObject({ queued: 0, running: 0, handled: 4, batches: 3, droppedBackground: 0 });
  });

  it('refuses background jobs beyond its limit, with an error, and counts them in stats', async () => {
    const r = recorder();
    const q = new WorkQueue<Item>(r.run, undefined, 512, 2);
    const done = [1, 2, 3, 4].map((block) => q.add('background', 'relocate', { block }));
    const out = await Promise.all(done);
    expect(out.slice(0, 2)).toEqual([null, null]);
    expect(out.slice(2).map((e) => e?.message)).toEqual(['background queue full', 'background queue full']);
    expect(q.stats()).toMatchObject({ handled: 2, droppedBackground: 2 });
  });
});
