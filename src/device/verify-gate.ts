// `verify` reads of main, one at a time for the whole daemon. Each read is an O_DIRECT read on a libuv pool
// thread (the addon's readRange); on a dying disk one can take tens of seconds, and the pool is shared with
// the spare's journal writes and syncs, relocations and the scan's reads. Without this, any peer allowed
// `verify` (the control group's members too) could hold every pool thread with a verify on each of its
// connections and stall remap commits. The rest wait in order, a few at most; past that they are told
// E_BUSY at once (a client that waits its turn gets an answer; one that floods gets refusals).
import { DmrError } from '../errors.js';

/** Verify reads of main waiting for the one in flight, at most; the next gets E_BUSY. */
export const MAX_WAITING_VERIFY_READS = 4;

export class VerifyGate {
  private running = false;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly maxWaiting = MAX_WAITING_VERIFY_READS) {}

  /** Runs `fn` once no other verify read of main is in flight; E_BUSY when maxWaiting already wait. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running) {
      if (this.waiting.length >= this.maxWaiting) {
        throw new DmrError('E_BUSY', `verify refused: ${this.maxWaiting + 1} verify reads of main are in flight or waiting (one runs at a time); try again shortly`);
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    this.running = true;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next !== undefined) next();
      else this.running = false;
    }
  }

  /** Reads in flight (0 or 1) and waiting: for tests and status. */
  load(): { running: boolean; waiting: number } {
    return { running: this.running, waiting: this.waiting.length };
  }
}
