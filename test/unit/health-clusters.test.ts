// clusterGrowth (a sparse table of minima, not a walk of every neighbour: that was quadratic, 170-300 ms a
// judgement after a contiguous bad zone) answers as the plain definition does: a position in the window
// joins when a bad block within `distance` of it was recorded in an earlier hour.
import { describe, expect, it } from 'vitest';
import { clusterGrowth } from '../../src/health/clusters.js';
import { HOUR_MS, type BadBlockPosition } from '../../src/health/series.js';

function plain(positions: readonly BadBlockPosition[], distance: number, from: number, to: number): { joined: number; lowest: number | null; highest: number | null } {
  let joined = 0;
  let lowest: number | null = null;
  let highest: number | null = null;
  for (const p of positions) {
    if (p.at < from || p.at >= to) continue;
    const hour = Math.floor(p.at / HOUR_MS);
    if (positions.some((q) => Math.abs(q.block - p.block) <= distance && Math.floor(q.at / HOUR_MS) < hour)) {
      joined++;
      lowest = lowest === null ? p.block : Math.min(lowest, p.block);
      highest = highest === null ? p.block : Math.max(highest, p.block);
    }
  }
  return { joined, lowest, highest };
}

describe('clusterGrowth', () => {
  it('agrees with the plain definition on random positions, distances and windows', () => {
    let x = 7;
    const rnd = (n: number): number => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return x % n;
    };
    for (let round = 0; round < 300; round++) {
      const count = rnd(60);
      const positions: BadBlockPosition[] = [];
      for (let i = 0; i < count; i++) positions.push({ block: rnd(5000), at: 1_000_000 + rnd(30) * HOUR_MS + rnd(HOUR_MS), origin: 'auto' });
      const distance = rnd(600);
      const from = 1_000_000 + rnd(30) * HOUR_MS;
      const to = from + rnd(30) * HOUR_MS;
      expect(clusterGrowth(positions, distance, from, to)).toEqual(plain(positions, distance, from, to));
    }
  });

  it('a contiguous zone of 4,096 blocks found over two hours: the blocks of the second hour join those of the first', () => {
    const positions: BadBlockPosition[] = [];
    for (let i = 0; i < 4096; i++) positions.push({ block: 100_000 + i, at: 5 * HOUR_MS + (i < 2048 ? 0 : HOUR_MS), origin: 'scan' });
    // Every block of the second hour has one of the first within 2048 blocks; none of the first hour joins.
    expect(clusterGrowth(positions, 2048, 0, 10 * HOUR_MS)).toEqual({ joined: 2048, lowest: 100_000 + 2048, highest: 100_000 + 4095 });
    expect(clusterGrowth(positions, 2048, 0, 6 * HOUR_MS)).toEqual({ joined: 0, lowest: null, highest: null });
  });
});
