// A growing defect: bad sectors come in clusters (a scratch, a failing head over a zone), so a new bad block
// near earlier ones says more than one far from any. A position recorded within [from, to) "joins a cluster"
// when another bad block at most `distance` blocks away was recorded in an earlier hour (blocks found in the
// same hour, one failed read or one scan chunk, are one event, not growth).
import { HOUR_MS, type BadBlockPosition } from './series.js';

export interface ClusterGrowth {
  /** New bad blocks in the window that joined earlier ones. */
  joined: number;
  /** The lowest and highest of them (null when none). */
  lowest: number | null;
  highest: number | null;
}

const hourOf = (t: number): number => Math.floor(t / HOUR_MS);

/**
 * Each position in [from, to) joins a cluster when the earliest bad block within `distance` of it was
 * recorded in an earlier hour. The earliest time of a range of positions (sorted by block) comes from a
 * sparse table of minima: O(n log n) to build, O(1) a query. (Looking at every neighbour was quadratic: a
 * contiguous bad zone of 4,096 blocks made each judgement 16 million steps, 170-300 ms on the JS thread, a
 * judgement that runs inside remap commits.)
 */
export function clusterGrowth(positions: readonly BadBlockPosition[], distance: number, from: number, to: number): ClusterGrowth {
  const byBlock = [...positions].sort((a, b) => a.block - b.block);
  const n = byBlock.length;
  const firstAtLeast = (block: number): number => {
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (byBlock[mid]!.block < block) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  // levels[k][i]: the earliest time among byBlock[i .. i + 2^k).
  const levels: Float64Array[] = [Float64Array.from(byBlock, (p) => p.at)];
  for (let k = 1; 1 << k <= n; k++) {
    const prev = levels[k - 1]!;
    const half = 1 << (k - 1);
    const cur = new Float64Array(n - (1 << k) + 1);
    for (let i = 0; i < cur.length; i++) cur[i] = Math.min(prev[i]!, prev[i + half]!);
    levels.push(cur);
  }
  /** The earliest time among byBlock[lo, hi), hi > lo. */
  const earliest = (lo: number, hi: number): number => {
    const k = 31 - Math.clz32(hi - lo);
    const level = levels[k]!;
    return Math.min(level[lo]!, level[hi - (1 << k)]!);
  };
  let joined = 0;
  let lowest: number | null = null;
  let highest: number | null = null;
  for (const p of positions) {
    if (p.at < from || p.at >= to) continue;
    const lo = firstAtLeast(p.block - distance);
    const hi = firstAtLeast(p.block + distance + 1);
    // p itself is in [lo, hi): the range is never empty.
    if (hourOf(earliest(lo, hi)) < hourOf(p.at)) {
      joined++;
      lowest = lowest === null ? p.block : Math.min(lowest, p.block);
      highest = highest === null ? p.block : Math.max(highest, p.block);
    }
  }
  return { joined, lowest, highest };
}
