// The judge of users' slow reads. Native reports a user read slower than slow_io_ms as a `slow_io` event:
// a suspect, not a verdict (a queue of users' requests makes every read slow). Each suspect range waits in a
// small queue (MAX_USER_SUSPECTS; more are dropped and counted, the queue never grows) until users are idle
// (no user request started and none in flight over a whole poll interval: the scanner's notion, rate-control
// isUserActive), then is read again block by block with the scanner's narrow reads. The blocks slow again
// are counted by the rule the scan uses (slow-blocks.ts), so that a block slow once in a scan and once in a
// user read reaches slow_threshold and is relocated with its data (the policy's scan sink: table origin
// `scan`, the verdict being the scan's own re-read).
//
// Main slow as a whole must not have its blocks counted. The scan tells that from its window of chunks read
// before; a user's range has none, so when more than half of its blocks are slow again (UNIFORM_SLOW_FRACTION),
// a reference range elsewhere on the disk (REFERENCE_BLOCKS blocks, half the device away) is read the same
// way: slow as a whole too, main is slow, nothing is counted; fast, the range is a bad zone and its blocks
// count. A range only partly slow counts without a reference (its own fast blocks are the reference), as in
// the scan.
//
// A result is used only when it is fresh: a re-read during which users did I/O, or across which the remap
// table changed (a block may have left the place read), is not judged; the range waits again, at most
// USER_SUSPECT_TRIES times, then is dropped (counted). The judge runs whatever the scan's state (idle,
// running, paused, done): a pause stops the sweep of the disk, not the checking of what users saw; it reads
// only while users are idle and only what they found slow. close() ends it after the call in flight; native
// drains never wait for scan reads.
import type { Logger } from 'pino';
import { DmrError } from '../errors.js';
import type { NativeScanReadResult } from '../native.js';
import { isUserActive, userActivity, type QueueCounters } from './rate-control.js';
import { scanOutcome } from './scan-read.js';
import { NARROW_STEP_BLOCKS, realTimer, type ScanClock, type ScanDevice, type ScanTimer } from './scanner.js';
import { slowAsWhole, type SlowBlock, type SlowBlockRule } from './slow-blocks.js';

/** Suspect ranges waiting at most; more are dropped (counted in `unjudged`). */
export const MAX_USER_SUSPECTS = 64;
/** How often the judge looks whether users are idle while suspects wait, ms. */
export const USER_IDLE_POLL_MS = 1000;
/** Times a suspect is read again after a re-read that could not be used (users busy, table changed). */
export const USER_SUSPECT_TRIES = 5;
/** Blocks of the reference range read elsewhere on the disk when a user's range is slow as a whole. */
export const REFERENCE_BLOCKS = 32;

/** What the judge needs of a slow_io event. */
export interface UserSlowRead {
  block: number;
  blocks: number;
  latencyUs: number;
  /** Slow reads native did not report (its rate limit) since its previous event. */
  dropped: number;
}

export interface UserSlowCounters {
  /** Users' reads slower than slow_io_ms (reported by native, and the ones its rate limit left unreported). */
  slowReads: number;
  /** Suspect ranges re-read and judged. */
  judged: number;
  /** Users' slow reads never judged: the queue was full, native's rate limit, tries used up, nothing readable. */
  unjudged: number;
  /** Polls that found users busy while suspects waited (judging deferred). */
  deferred: number;
}

export interface UserSlowReadsOptions {
  /** The device's scan reads, shared with the scanner (serialScanReads). */
  device: ScanDevice;
  blockSize: number;
  deviceBytes: number;
  slowIoMs: number;
  rule: SlowBlockRule;
  log: Logger;
  clock?: ScanClock;
  timer?: ScanTimer;
  pollMs?: number;
  /** Told of each user slow read its re-read confirmed (some of its blocks slow again, counted): the health model's slow_io. */
  onConfirmed?: (() => void) | null;
}

interface Suspect {
  offset: number;
  bytes: number;
  tries: number;
}

/** How a re-read ended: used ('judged'), not usable now ('again'), or never usable ('drop'), or closing. */
type Verdict = 'judged' | 'again' | 'drop' | 'closed';

interface RangeRead {
  slow: SlowBlock[];
  /** Blocks read (not skipped, not failed). */
  readBlocks: number;
}

export class UserSlowReads {
  private queue: Suspect[] = [];
  private prevStats: QueueCounters[] | null = null;
  private timerHandle: unknown = null;
  private running: Promise<void> | null = null;
  private closed = false;
  private readonly c: UserSlowCounters = { slowReads: 0, judged: 0, unjudged: 0, deferred: 0 };
  private readonly timer: ScanTimer;
  private readonly pollMs: number;

  constructor(private readonly o: UserSlowReadsOptions) {
    if (!Number.isSafeInteger(o.blockSize) || o.blockSize <= 0 || !Number.isSafeInteger(o.deviceBytes) || o.deviceBytes <= 0 || o.deviceBytes % o.blockSize !== 0) {
      throw new DmrError('E_INTERNAL', `user slow reads: device of ${o.deviceBytes} bytes is not whole ${o.blockSize}-byte blocks`);
    }
    this.timer = o.timer ?? realTimer;
    this.pollMs = o.pollMs ?? USER_IDLE_POLL_MS;
  }

  stats(): UserSlowCounters {
    return { ...this.c };
  }

  /** Suspect ranges waiting (tests, status). */
  get waiting(): number {
    return this.queue.length;
  }

  /** A user's read slower than slow_io_ms (native's slow_io event): its range waits to be judged. */
  suspect(ev: UserSlowRead): void {
    if (this.closed) return;
    this.c.slowReads += 1 + ev.dropped;
    this.c.unjudged += ev.dropped;
    const bs = this.o.blockSize;
    const offset = ev.block * bs;
    const bytes = Math.min(ev.blocks * bs, this.o.deviceBytes - offset);
    if (!Number.isSafeInteger(offset) || offset < 0 || bytes <= 0) {
      this.c.unjudged++;
      return;
    }
    if (this.queue.some((s) => s.offset === offset && s.bytes === bytes)) return; // judged once for all
    if (this.queue.length >= MAX_USER_SUSPECTS) {
      this.c.unjudged++;
      return;
    }
    this.queue.push({ offset, bytes, tries: 0 });
    this.arm();
  }

  /** Ends the judge after the scan read in flight; waiting suspects are dropped. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timerHandle !== null) this.timer.clear(this.timerHandle);
    this.timerHandle = null;
    await this.running;
    this.queue = [];
  }

  /** Resolves once no poll is running (tests). */
  async idle(): Promise<void> {
    await this.running;
  }

  private arm(): void {
    if (this.closed || this.timerHandle !== null || this.running !== null || this.queue.length === 0) return;
    this.timerHandle = this.timer.set(() => {
      this.timerHandle = null;
      this.running = this.poll().finally(() => {
        this.running = null;
        this.arm();
      });
    }, this.pollMs);
  }

  /** One poll: users idle since the last one, the first suspect is judged; else it waits. */
  private async poll(): Promise<void> {
    const stats = this.o.device.stats();
    const prev = this.prevStats;
    this.prevStats = stats;
    if (prev === null) return; // the first look: idle is judged over a whole interval
    if (isUserActive(userActivity(prev, stats))) {
      this.c.deferred++;
      return;
    }
    const s = this.queue.shift();
    if (s === undefined) return;
    let verdict: Verdict;
    try {
      verdict = await this.judge(s);
    } catch (e) {
      this.o.log.warn({ err: e instanceof Error ? e.message : String(e), offset: s.offset, bytes: s.bytes }, 'user slow read: the re-read failed; not judged');
      verdict = 'drop';
    }
    if (verdict === 'judged') this.c.judged++;
    else if (verdict === 'drop') this.c.unjudged++;
    else if (verdict === 'again') {
      if (s.tries + 1 >= USER_SUSPECT_TRIES) this.c.unjudged++;
      else this.queue.push({ ...s, tries: s.tries + 1 });
    }
    // The next interval starts now (the judge's own reads are not users' I/O); none while nothing waits.
    this.prevStats = this.queue.length > 0 ? this.o.device.stats() : null;
  }

  /** Reads `s` again block by block and counts what is slow again (see the header for the rules). */
  private async judge(s: Suspect): Promise<Verdict> {
    const before = this.o.device.stats();
    const generation = this.o.device.tableGeneration();
    const range = await this.readBlocks(s.offset, s.bytes);
    if (range === 'closed') return 'closed';
    if (!this.fresh(before, generation)) return 'again';
    if (range.readBlocks === 0) return 'drop'; // nothing of it is on a readable place now (lost, moving, failed)
    if (range.slow.length === 0) return 'judged';
    if (slowAsWhole(range.slow.length, range.readBlocks)) {
      const ref = this.referenceRange(s);
      const r = await this.readBlocks(ref.offset, ref.bytes);
      if (r === 'closed') return 'closed';
      if (!this.fresh(before, generation)) return 'again';
      if (r.readBlocks === 0) return 'drop';
      if (slowAsWhole(r.slow.length, r.readBlocks)) {
        this.o.rule.noteUniform('user', s.offset, range.slow.length, range.readBlocks);
        return 'judged';
      }
    }
    this.o.rule.count(range.slow, 'user');
    this.o.onConfirmed?.();
    return 'judged';
  }

  /** No user I/O since `before` and the table of `generation` still the one published. */
  private fresh(before: readonly QueueCounters[], generation: number): boolean {
    return !isUserActive(userActivity(before, this.o.device.stats())) && this.o.device.tableGeneration() === generation;
  }

  /** REFERENCE_BLOCKS blocks half the device away from `s` (clipped to the device). */
  private referenceRange(s: Suspect): { offset: number; bytes: number } {
    const bs = this.o.blockSize;
    const size = this.o.deviceBytes;
    const bytes = Math.min(REFERENCE_BLOCKS * bs, size);
    let offset = Math.floor(((s.offset + size / 2) % size) / bs) * bs;
    if (offset + bytes > size) offset = size - bytes;
    return { offset, bytes };
  }

  /** [offset, offset + bytes) read block by block (NARROW_STEP_BLOCKS per call): its blocks slower than slow_io_ms. */
  private async readBlocks(offset: number, bytes: number): Promise<RangeRead | 'closed'> {
    const bs = this.o.blockSize;
    const step = NARROW_STEP_BLOCKS * bs;
    const out: RangeRead = { slow: [], readBlocks: 0 };
    for (let at = offset; at < offset + bytes; ) {
      if (this.closed) return 'closed';
      const res: NativeScanReadResult = await this.o.device.scanRead(BigInt(at), Math.min(step, offset + bytes - at), true);
      scanOutcome(res, bs); // checks that the pieces cover what native says they cover
      if (res.coveredBytes <= 0) throw new DmrError('E_INTERNAL', `user slow read: the scan read at ${at} covered nothing`);
      at += res.coveredBytes;
      for (const seg of res.segments) {
        if (seg.skipped !== null || seg.errno !== 0) continue;
        out.readBlocks += seg.blocks;
        if (seg.latencyUs / 1000 <= this.o.slowIoMs) continue;
        for (let b = seg.block; b < seg.block + seg.blocks; b++) out.slow.push({ block: b, device: seg.device });
      }
    }
    return out;
  }
}
