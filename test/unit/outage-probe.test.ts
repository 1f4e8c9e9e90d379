// What an outage probe reads: blocks that read on main lately first, the first, middle and last block as a
// fallback, never a block in the remap table (nor next to nothing: the fallback steps past table blocks).
import { describe, expect, it } from 'vitest';
import { PROBE_READS, ProbeTargets } from '../../src/device/outage-probe.js';

describe('outage probe targets', () => {
  it('with nothing known good: the first, middle and last block', () => {
    expect(new ProbeTargets(1000, () => false).pick()).toEqual([0, 500, 999]);
  });

  it('blocks in the table are skipped: the fallback steps to the nearest block that is not', () => {
    const table = new Set([0, 1, 500, 999]);
    expect(new ProbeTargets(1000, (b) => table.has(b)).pick()).toEqual([2, 501, 998]);
  });

  it('recently good blocks come first, the newest first, and a block remapped since is skipped', () => {
    const table = new Set<number>();
    const t = new ProbeTargets(1000, (b) => table.has(b));
    for (const b of [10, 20, 30, 40]) t.noteGood(b);
    expect(t.pick()).toEqual([40, 30, 20]);
    table.add(30);
    expect(t.pick()).toEqual([40, 20, 10]);
    t.noteGood(10);
    expect(t.pick()).toEqual([10, 40, 20]);
    expect(t.pick()).toHaveLength(PROBE_READS);
  });

  it('one good block: it, then the fallbacks', () => {
    const t = new ProbeTargets(1000, () => false);
    t.noteGood(77);
    expect(t.pick()).toEqual([77, 0, 500]);
  });
});
