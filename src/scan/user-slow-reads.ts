// The judge of users' slow reads. Native reports a user read slower than slow_io_ms as a `slow_io` event:
// a suspect, not a verdict (a queue of users' requests makes every read slow). Each suspect range waits in a
// small queue (MAX_USER_SUSPECTS; more are dropped and counted, the queue never grows) until users are idle
// (no user request started and none in flight over a whole poll interval: the scanner's notion, rate-control
// isUserActive), then is read again block by block with the scanner's narrow reads. The blocks slow again
// are counted by the rule the scan uses (slow-blocks.ts), so that a block slow once in a scan and once in a
// user read reaches slow_threshold and is relocated with its data (the policy's scan sink: table origin
// `scan`, the verdict being the scan's own re-read).
//
// Only proof counts. A block counts when it is slow in the re-read AND again in a second re-read of the range
// (a burst that slowed the whole disk for a moment, another partition's load this device cannot see, rarely
// lands on the same blocks twice), on main (a slow spare slot is not judged from users' reads: the reference
// below is main's), and when a reference range elsewhere on main (REFERENCE_BLOCKS blocks, half the device
// away), read after them, has no slow block: main is not slow as a whole now (that is noted, not counted).
// A block that fails its re-read is not judged (logged; the scan or the next user read finds it).
//
// A result is used only when it is fresh: the re-read stops at the next call once users do I/O, and a
// re-read during which they did, or across which the remap table changed (a block may have left the place
// read), is not judged; the range waits again, at most USER_SUSPECT_TRIES times, then is dropped (counted).
// Slow reads of overlapping ranges waiting together are one suspect (one episode is one finding), counted
// as the reads they were. The judge runs whatever the scan's state (idle, running, paused, done): a pause
// stops the sweep of the disk, not the checking of what users saw; it reads only while users are idle and
// only what they found slow. close() ends it after the call in flight; native drains never wait for scan
// reads.
import type { Logger } from 'pino';
import { DmrError } from '../errors.js';
import type { NativeScanReadResult } from '../native.js';
import { isUserActive, userActivity, type QueueCounters } from './rate-control.js';
import { scanOutcome } from './scan-read.js';
import { NARROW_STEP_BLOCKS, realTimer, type ScanClock, type ScanDevice, type ScanTimer } from './scanner.js';
import type { SlowBlock, SlowBlockRule } from './slow-blocks.js';

/** Suspect ranges waiting at most; more are dropped (counted in `unjudged`). */
export const MAX_USER_SUSPECTS = 64;
/** How often the judge looks whether users are idle while suspects wait, ms. */
export const USER_IDLE_POLL_MS = 1000;
/** Times a suspect is read again after a re-read that could not be used (users busy, table changed). */
export const USER_SUSPECT_TRIES = 5;
/** Blocks of the reference range read elsewhere on main before a user's slow blocks are counted. */
export const REFERENCE_BLOCKS = 32;
/** Overlapping suspects are merged up to this size (bytes); beyond it they wait apart. */
export const MAX_MERGED_BYTES = 1 << 20;

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
  /** Users' slow reads this suspect stands for (overlapping ones merged while waiting). */
  reads: number;
}

/** How a re-read ended: used ('judged'), not usable now ('again'), or never usable ('drop'), or closing. */
type Verdict = 'judged' | 'again' | 'drop' | 'closed';

interface RangeRead {
  slow: SlowBlock[];
  /** Blocks read (not skipped, not failed). */
  readBlocks: number;
  /** Blocks whose read failed. */
  failed: number[];
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
    const end = offset + bytes;
    const near = this.queue.find((q) => q.offset < end && offset < q.offset + q.bytes && Math.max(end, q.offset + q.bytes) - Math.min(offset, q.offset) <= MAX_MERGED_BYTES);
    if (near !== undefined) {
      // One episode, one finding: the reads of overlapping ranges waiting together are judged once, as their union.
      const qEnd = near.offset + near.bytes;
      near.offset = Math.min(near.offset, offset);
      near.bytes = Math.max(qEnd, end) - near.offset;
      near.reads++;
      return;
    }
    if (this.queue.length >= MAX_USER_SUSPECTS) {
      this.c.unjudged++;
      return;
    }
    this.queue.push({ offset, bytes, tries: 0, reads: 1 });
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
    if (verdict === 'judged') this.c.judged += s.reads;
    else if (verdict === 'drop') this.c.unjudged += s.reads;
    else if (verdict === 'again') {
      if (s.tries + 1 >= USER_SUSPECT_TRIES) this.c.unjudged += s.reads;
      else this.queue.push({ ...s, tries: s.tries + 1 });
    }
    // The next interval starts now (the judge's own reads are not users' I/O); none while nothing waits.
    this.prevStats = this.queue.length > 0 ? this.o.device.stats() : null;
  }

  /** Reads `s` again block by block and counts what is slow again (see the header for the rules). */
  private async judge(s: Suspect): Promise<Verdict> {
    const before = this.o.device.stats();
    const generation = this.o.device.tableGeneration();
    const range = await this.readBlocks(s.offset, s.bytes, before);
    if (range === 'closed') return 'closed';
    if (range === 'busy' || !this.fresh(before, generation)) return 'again';
    if (range.failed.length > 0) {
      this.o.log.warn({ blocks: range.failed.slice(0, 16), failed: range.failed.length, offset: s.offset, bytes: s.bytes }, 'user slow read: blocks failed their re-read; not judged (the scan or the next read of them finds them)');
      return 'drop';
    }
    if (range.readBlocks === 0) return 'drop'; // nothing of it is on a readable place now (lost, moving)
    const first = range.slow.filter((b) => b.device === 'main');
    if (first.length === 0) return 'judged';
    // Slow again in a second re-read of the same blocks: a burst over the whole disk rarely hits them twice.
    const lo = first[0]!.block * this.o.blockSize;
    const hi = (first[first.length - 1]!.block + 1) * this.o.blockSize;
    const again = await this.readBlocks(lo, hi - lo, before);
    if (again === 'closed') return 'closed';
    if (again === 'busy' || !this.fresh(before, generation)) return 'again';
    const slowTwice = new Set(again.slow.filter((b) => b.device === 'main').map((b) => b.block));
    const confirmed = first.filter((b) => slowTwice.has(b.block));
    if (confirmed.length === 0) return 'judged';
    // Main not slow as a whole now: a reference range elsewhere has no slow block.
    const ref = this.referenceRange(s);
    const r = await this.readBlocks(ref.offset, ref.bytes, before);
    if (r === 'closed') return 'closed';
    if (r === 'busy' || !this.fresh(before, generation)) return 'again';
    if (r.readBlocks === 0) return 'drop';
    if (r.slow.length > 0) {
      this.o.rule.noteUniform('user', s.offset, confirmed.length, range.readBlocks);
      return 'judged';
    }
    this.o.rule.count(confirmed, 'user');
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

  /**
   * [offset, offset + bytes) read block by block (NARROW_STEP_BLOCKS per call): its blocks slower than
   * slow_io_ms, and those that failed. 'busy' as soon as users did I/O since `before` (checked after each
   * call: no further call competes with them).
   */
  private async readBlocks(offset: number, bytes: number, before: readonly QueueCounters[]): Promise<RangeRead | 'closed' | 'busy'> {
    const bs = this.o.blockSize;
    const step = NARROW_STEP_BLOCKS * bs;
    const out: RangeRead = { slow: [], readBlocks: 0, failed: [] };
    for (let at = offset; at < offset + bytes; ) {
      if (this.closed) return 'closed';
      const res: NativeScanReadResult = await this.o.device.scanRead(BigInt(at), Math.min(step, offset + bytes - at), true);
      scanOutcome(res, bs); // checks that the pieces cover what native says they cover
      if (res.coveredBytes <= 0) throw new DmrError('E_INTERNAL', `user slow read: the scan read at ${at} covered nothing`);
      at += res.coveredBytes;
      for (const seg of res.segments) {
        if (seg.skipped !== null) continue;
        if (seg.errno !== 0) {
          for (let b = seg.block; b < seg.block + seg.blocks; b++) out.failed.push(b);
          continue;
        }
        out.readBlocks += seg.blocks;
        if (seg.latencyUs / 1000 <= this.o.slowIoMs) continue;
        for (let b = seg.block; b < seg.block + seg.blocks; b++) out.slow.push({ block: b, device: seg.device });
      }
      if (isUserActive(userActivity(before, this.o.device.stats()))) return 'busy';
    }
    return out;
  }
}
