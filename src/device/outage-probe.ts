// What the outage monitor reads to ask whether main answers (finding 8 of the issue-11 review): a few blocks
// that are known to have read on main lately, else the first, middle and last block, never a block in the
// remap table (a remapped or lost block may be a bad sector: its failure says nothing about the device).
// Runs on the JS thread.
import type { NativeDevice } from '../native.js';
import { isNativeError } from '../native.js';
import { MEDIUM_ERRNOS } from './outage-detector.js';

/** Blocks read at most by one probe (the libuv pool has 4 threads; a hung main holds each read's thread). */
export const PROBE_READS = 3;
/** Recently good blocks remembered. */
const RING = 8;
/** How far from a fallback block (first, middle, last) a probe looks for one that is not in the table. */
const FALLBACK_SEARCH = 64;

export class ProbeTargets {
  /** Blocks that read on main lately, the newest last. */
  private readonly good: number[] = [];

  constructor(
    private readonly deviceBlocks: number,
    /** The block is in the remap table or being redirected: not a probe target. */
    private readonly excluded: (block: number) => boolean,
  ) {}

  /** `block` read on main (a probe, a retry that went through, a recheck that recovered it). */
  noteGood(block: number): void {
    if (block < 0 || block >= this.deviceBlocks) return;
    const i = this.good.indexOf(block);
    if (i >= 0) this.good.splice(i, 1);
    this.good.push(block);
    if (this.good.length > RING) this.good.shift();
  }

  /** The blocks a probe reads now: the newest good ones not in the table, then the fallbacks. */
  pick(): number[] {
    const out: number[] = [];
    const add = (b: number): void => {
      if (out.length < PROBE_READS && !out.includes(b) && !this.excluded(b)) out.push(b);
    };
    for (let i = this.good.length - 1; i >= 0; i--) add(this.good[i] as number);
    const last = Math.max(0, this.deviceBlocks - 1);
    for (const base of [0, Math.floor(this.deviceBlocks / 2), last]) {
      for (let d = 0; d < FALLBACK_SEARCH && out.length < PROBE_READS; d++) {
        const b = base === last ? base - d : base + d;
        if (b < 0 || b >= this.deviceBlocks) break;
        if (!this.excluded(b) && !out.includes(b)) {
          out.push(b);
          break;
        }
      }
    }
    return out;
  }
}

/**
 * Reads `blocks` of main: true when main answers, that is when one read succeeds or fails with a medium
 * error (the device is there, that sector is bad); false when every read fails otherwise (EIO from
 * everywhere, ENODEV...) or there is nothing to read. `good` is told each block that read.
 */
export async function probeMain(device: NativeDevice, blockSize: number, blocks: readonly number[], good: (block: number) => void): Promise<boolean> {
  const answers = await Promise.all(
    blocks.map((b) =>
      device.readRange('main', BigInt(b) * BigInt(blockSize), blockSize).then(
        () => {
          good(b);
          return true;
        },
        (e: unknown) => isNativeError(e) && MEDIUM_ERRNOS.has(e.errno),
      ),
    ),
  );
  return answers.some((a) => a);
}
