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

export function clusterGrowth(positions: readonly BadBlockPosition[], distance: number, from: number, to: number): ClusterGrowth {
  const byBlock = [...positions].sort((a, b) => a.block - b.block);
  const firstAtLeast = (block: number): number => {
    let lo = 0;
    let hi = byBlock.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (byBlock[mid]!.block < block) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  let joined = 0;
  let lowest: number | null = null;
  let highest: number | null = null;
  for (const p of positions) {
    if (p.at < from || p.at >= to) continue;
    const hour = hourOf(p.at);
    let found = false;
    for (let i = firstAtLeast(p.block - distance); i < byBlock.length && byBlock[i]!.block <= p.block + distance; i++) {
      if (hourOf(byBlock[i]!.at) < hour) {
        found = true;
        break;
      }
    }
    if (found) {
      joined++;
      lowest = lowest === null ? p.block : Math.min(lowest, p.block);
      highest = highest === null ? p.block : Math.max(highest, p.block);
    }
  }
  return { joined, lowest, highest };
}
