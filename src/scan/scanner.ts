// The daemon's background scan of one device: a loop that, while the cursor is running, reads the device in
// order through native's scanRead at the rate rate-control.ts decides, counts every read in the region
// record, hands what it finds to the fault policy (auto-remap.ts: failed blocks, slow blocks) and moves the
// cursor. Clock and timer are injected: tests drive the loop tick by tick.
//
// Rules it keeps:
// - One read in flight at most: a tick reads its chunks one after another; the next tick is armed only when
//   the previous one has finished, an interval after it began (at once when it read for longer). While
//   users are idle one native call reads a run of up to IDLE_RUN_CHUNKS chunks (a call's fixed cost, as much
//   as a chunk's read in the TCG test VM, is paid once for them); while they do I/O, one chunk per call.
//   Either way each chunk is counted and judged on its own (native never plans a piece across a chunk
//   boundary: kScanAlignBytes). pause/stop/close wait for the tick (and so the read) in flight, then change
//   the cursor: a read's result is always applied to the pass it was read for.
// - Chunks are `chunkBytes` (1 MiB) aligned to multiples of it, clipped to the device end: never past the
//   device, and an aligned chunk stays inside one region (regions are whole MiB). The front (the cursor's
//   position) moves by exactly the chunk read, so a chunk is counted once.
// - A tick reads a chunk only when the rate's allowance left in the tick holds all of it (no overreading).
// - Skipped blocks: 'lost' ones are not read (their data is gone; a user read fails them without I/O);
//   'moving' ones (a move is copying them) are revisited: kept in a list (at most MAX_REVISITS ranges; more
//   are given up at once, logged), each tried again at the next ticks, at most MAX_REVISIT_TRIES times, then
//   given up (logged, counted in `unrevisitedBytes`). The pass's last chunk waits until the list is empty,
//   so a pass is done only after its revisits. The list is not persisted: after a restart the blocks being
//   moved before it are not revisited (the move read them).
// - Persistence: `save` (scan-file.ts) while running at least every `saveIntervalMs` and each time the front
//   moved 1% of the device, at each command and at the end of a pass, and at close (shutdown, detach) when
//   something changed. A failed save is logged; the scan goes on.
import type { Logger } from 'pino';
import { DmrError } from '../errors.js';
import type { BackingRole, NativeScanReadResult } from '../native.js';
import {
  advancePass,
  etaSeconds,
  newCursor,
  pausePass,
  progressPercent,
  resumePass,
  startPass,
  stopPass,
  type ScanCursor,
  type ScanState,
} from './cursor.js';
import { decideRate, initialRateState, isUserActive, MIB, rateLimits, userActivity, type QueueCounters, type RateLimits, type RateState } from './rate-control.js';
import { RegionRecord } from './regions.js';
import type { SavedScan } from './scan-file.js';
import { recordScanReads, SCAN_ALIGN_BYTES, scanOutcome, splitOutcome, type ChunkOutcome, type ScanFailure } from './scan-read.js';
import { badRate, isScanRate, type ScanSettings } from './settings.js';
import { SlowBlockRule, type SlowBlock } from './slow-blocks.js';

export const SCAN_CHUNK_BYTES = MIB;
/**
 * Chunks one native call reads while users are idle (16 MiB). The users' I/O is checked between calls, so a
 * user who starts I/O meets at most this run's remaining pieces (each a pread of at most one chunk, which
 * the user's requests interleave with) before the scan drops to its floor.
 */
export const IDLE_RUN_CHUNKS = 16;
export const SCAN_INTERVAL_MS = 100;
export const SCAN_SAVE_INTERVAL_MS = 5000;
/** Also saved each time the front moved this fraction of the device (1%): a kill -9 loses at most that much. */
export const SAVE_EVERY_FRACTION = 100;
export const MAX_REVISITS = 1024;
export const MAX_REVISIT_TRIES = 50;
/** Blocks per narrow re-read call (a slow or failed chunk re-read block by block): pause/stop/close wait for one call at most. */
export const NARROW_STEP_BLOCKS = 32;
/** Tries of the policy's re-read of one block while the remap table keeps changing under it. */
export const REREAD_STALE_TRIES = 3;
export { MAX_SLOW_SUSPECTS, SLOW_WINDOW_CHUNKS, UNIFORM_SLOW_FRACTION } from './slow-blocks.js';
const DAY_MS = 86_400_000;
const ERROR_LOG_MS = 10_000;
/** After the policy said 'outage' (main does not answer), the loop reads nothing for this long. */
export const OUTAGE_BACKOFF_MS = 1000;
/** How often an idle or finished scan checks its schedule (scan_interval_days). */
export const SCHEDULE_CHECK_MS = 60_000;

/** What the scanner needs of the native device. */
export interface ScanDevice {
  /** NativeDevice.scanRead: may cover less than asked (coveredBytes); names the table generation it read against. */
  scanRead(offset: bigint, bytes: number, narrow?: boolean): Promise<NativeScanReadResult>;
  /** NativeDevice.tableGeneration: a result of an older generation may have read a place a block has left. */
  tableGeneration(): number;
  /** Native's cumulative per-queue counters (QueueStats): the users' I/O, which slows the scan. */
  stats(): QueueCounters[];
}

export interface ScanClock {
  /** ms since the epoch (the cursor's times; the rate's elapsed time). */
  now(): number;
}

export interface ScanTimer {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

/** Node's timers, unref'd: the scan never keeps a process alive. */
export const realTimer: ScanTimer = {
  set: (fn, ms) => setTimeout(fn, ms).unref(),
  clear: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** A block whose scan read failed, named by a narrow (per-block) read. */
export interface ScanBlockFailure {
  block: number;
  device: BackingRole;
  errno: number;
}

/**
 * What the policy concluded about failed blocks: 'handled'; 'outage' (main is in a device-wide outage),
 * 'closed' (the policy is shutting down) and 'undecided' (its re-reads could not be done: a command stopped
 * them, the table kept changing, the device refused): nothing was decided, the chunk is read again later (by
 * this daemon or the next: the cursor does not move past it).
 */
export type ScanFailureVerdict = 'handled' | 'outage' | 'closed' | 'undecided';

/** Thrown by the scanner's own reads when a command (pause, stop, close) waits: the work is left undecided. */
export class ScanHalted extends Error {
  constructor() {
    super('the scan was halted by a command');
  }
}

/** Where what the scan finds goes (the daemon's AutoRemapper; tests' fakes). */
export interface ScanFindingsSink {
  /**
   * Blocks whose read failed (per block). `reread` reads the given blocks again, narrow, and returns those
   * that failed again. 'outage': main is in a device-wide outage: nothing was decided, the scanner reads
   * the chunk again later.
   */
  readFailed(
    failed: readonly ScanBlockFailure[],
    reread: (blocks: readonly number[]) => Promise<ScanBlockFailure[]>,
    halted?: () => boolean,
  ): Promise<ScanFailureVerdict>;
  /** A block was slow `slow_threshold` times: relocate it with its data. */
  slowBlock(block: number, device: BackingRole): void;
  /**
   * Pending (lost) blocks the pass came to (native skipped them: nothing to read on the exported device):
   * read them again on main; those that read go back there (recheck). Never throws.
   */
  pendingSeen?(blocks: readonly number[]): Promise<void>;
}

/** `scan` status (control message, CLI). */
export interface ScanStatus {
  state: ScanState;
  progress: number;
  position: number;
  deviceBytes: number;
  rateBps: number;
  startedAt: number | null;
  finishedAt: number | null;
  errorsFound: number;
  slowFound: number;
  etaSeconds: number | null;
  pass: number;
}

export interface ScanCounters {
  /** Reads (chunks or pieces) slower than slow_io_ms. */
  slowIos: number;
  /** Blocks found slow by a block-by-block re-read (the scan's, and the re-reads of users' slow reads: slow-blocks.ts). */
  slowBlocks: number;
  /** Blocks relocated for being slow slow_threshold times (handed to the policy). */
  slowRelocations: number;
  /** Chunks (or users' slow ranges) most of whose blocks were slow: main slow everywhere (load, a slow link), no block counted. */
  uniformSlowChunks: number;
  /** Slow reads while users did I/O: not judged (a user queue makes every read slow). */
  busySlowReads: number;
  /** Bytes skipped as moving and given up after their revisits. */
  unrevisitedBytes: number;
}

export interface ScannerOptions {
  device: ScanDevice;
  blockSize: number;
  deviceBytes: number;
  settings: ScanSettings;
  log: Logger;
  clock?: ScanClock;
  timer?: ScanTimer;
  sink?: ScanFindingsSink | null;
  /** What loadScan found (null: a fresh cursor). */
  saved?: SavedScan | null;
  /** Told of each slow read judged (not one while users did I/O): the health model's slow_io. */
  onSlowIo?: (() => void) | null;
  /**
   * The slow-block rule shared with the judge of users' slow reads (user-slow-reads.ts), so that a block
   * slow once in a scan and once in a user read reaches slow_threshold. Absent: the scanner's own, which
   * hands its relocations to `sink`.
   */
  slowRule?: SlowBlockRule;
  /** Persists the scan (saveScan); null: not persisted. Throws on failure (logged). */
  save?: ((s: SavedScan) => void) | null;
  chunkBytes?: number;
  intervalMs?: number;
  saveIntervalMs?: number;
}

interface Range {
  offset: number;
  bytes: number;
}

interface Revisit extends Range {
  tries: number;
  /** Tried again no earlier than this tick (one try per tick). */
  dueTick: number;
}

export class Scanner {
  private cursor: ScanCursor;
  readonly regions: RegionRecord;
  private readonly settings: ScanSettings;
  private limits: RateLimits;
  private rate: RateState;
  private prevStats: QueueCounters[] | null = null;
  private readSinceDecision = 0;
  private revisits: Revisit[] = [];
  private tickCount = 0;
  private readonly slowRule: SlowBlockRule;
  private counters = { slowIos: 0, busySlowReads: 0, unrevisitedBytes: 0 };
  /** Users did I/O in the current interval (rate control's view): reads are slow then for their sake, not the disk's. */
  private usersActive = false;
  private timerHandle: unknown = null;
  private scheduleHandle: unknown = null;
  /** The tick running now (its reads), null between ticks. */
  private ticking: Promise<void> | null = null;
  /** Set while a command waits for the tick in flight: the tick reads nothing more. */
  private halting = false;
  private closed = false;
  private lastSaveAt: number;
  /** Something changed since the last save (reads counted, the cursor moved). */
  private dirty = false;
  /** A tick whose read threw: logged at most once per ERROR_LOG_MS, with the count since the last line. */
  private lastErrorLogAt: number | null = null;
  private failedTicks = 0;
  /**
   * The findings of the pass's last chunk, applied (counted, judged) while revisits were still queued: the
   * cursor stays at that chunk's start until they are done, then moves to the end with these (tick). Not
   * persisted, like the revisits: a daemon that stops before then reads the last chunk again.
   */
  private heldEnd: { errors: number; slow: number } | null = null;
  /** No reads before this time (an outage of main was reported); null: none. */
  private holdUntil: number | null = null;
  /** The cursor's position at the last save. */
  private lastSavePosition = 0;
  /** Commands run one at a time. */
  private ops: Promise<unknown> = Promise.resolve();
  private readonly clock: ScanClock;
  private readonly timer: ScanTimer;
  private readonly chunkBytes: number;
  private readonly intervalMs: number;
  private readonly saveIntervalMs: number;

  constructor(private readonly o: ScannerOptions) {
    if (!Number.isSafeInteger(o.blockSize) || o.blockSize <= 0 || !Number.isSafeInteger(o.deviceBytes) || o.deviceBytes <= 0 || o.deviceBytes % o.blockSize !== 0) {
      throw new DmrError('E_INTERNAL', `scanner: device of ${o.deviceBytes} bytes is not whole ${o.blockSize}-byte blocks`);
    }
    this.clock = o.clock ?? { now: () => Date.now() };
    this.timer = o.timer ?? realTimer;
    this.chunkBytes = o.chunkBytes ?? SCAN_CHUNK_BYTES;
    if (this.chunkBytes % o.blockSize !== 0) throw new DmrError('E_INTERNAL', `scan chunk ${this.chunkBytes} is not whole blocks of ${o.blockSize}`);
    // Native's pieces never cross a multiple of SCAN_ALIGN_BYTES: a chunk holds whole pieces only when it is
    // a multiple of that.
    if (this.chunkBytes <= 0 || this.chunkBytes % SCAN_ALIGN_BYTES !== 0) {
      throw new DmrError('E_INTERNAL', `scan chunk ${this.chunkBytes} is not a whole number of native's ${SCAN_ALIGN_BYTES}-byte piece alignment`);
    }
    this.intervalMs = o.intervalMs ?? SCAN_INTERVAL_MS;
    this.saveIntervalMs = o.saveIntervalMs ?? SCAN_SAVE_INTERVAL_MS;
    this.settings = { ...o.settings };
    this.cursor = o.saved?.cursor ?? newCursor(o.deviceBytes);
    this.regions = o.saved?.regions ?? RegionRecord.forDevice(o.deviceBytes);
    if (this.cursor.deviceBytes !== o.deviceBytes || this.regions.deviceBytes !== o.deviceBytes) {
      throw new DmrError('E_INTERNAL', `scanner: saved scan is of a ${this.cursor.deviceBytes}-byte device, this one has ${o.deviceBytes}`);
    }
    // A pass started with --rate keeps its ceiling in the cursor: a resumed pass runs at it again.
    this.limits = this.limitsFor(this.cursor.rateMib ?? this.settings.scanRateMib);
    this.rate = initialRateState(this.limits);
    this.lastSaveAt = this.clock.now();
    this.slowRule = o.slowRule ?? new SlowBlockRule({ slowThreshold: this.settings.slowThreshold, log: o.log, relocate: o.sink ? (b, d) => o.sink?.slowBlock(b, d) : null });
  }

  /** Starts the loop (a running cursor resumes where it was) and the schedule. */
  begin(): void {
    if (this.cursor.state === 'running') this.arm(0);
    this.armSchedule(0);
  }

  get state(): ScanState {
    return this.cursor.state;
  }

  get cursorNow(): ScanCursor {
    return { ...this.cursor };
  }

  status(): ScanStatus {
    const c = this.cursor;
    const rateBps = c.state === 'running' ? Math.round(this.rate.rateBps) : 0;
    return {
      state: c.state,
      progress: progressPercent(c),
      position: c.position,
      deviceBytes: c.deviceBytes,
      rateBps,
      startedAt: c.startedAt,
      finishedAt: c.finishedAt,
      errorsFound: c.errorsFound,
      slowFound: c.slowFound,
      etaSeconds: etaSeconds(c, rateBps),
      pass: c.pass,
    };
  }

  stats(): ScanCounters {
    return { ...this.counters, ...this.slowRule.counters() };
  }

  /** `scan start [--rate N]`: a new pass from byte 0; `rateMib` is this pass's ceiling (E_USAGE unless a valid rate). */
  start(rateMib?: number): Promise<ScanStatus> {
    if (rateMib !== undefined && !isScanRate(rateMib)) return Promise.reject(badRate(rateMib));
    return this.command(() => {
      const next = startPass(this.cursor, this.clock.now(), rateMib ?? null);
      this.limits = this.limitsFor(rateMib ?? this.settings.scanRateMib);
      this.cursor = next;
      this.regions.clearReads();
      this.revisits = [];
      this.heldEnd = null;
      this.rate = initialRateState(this.limits);
      this.prevStats = null;
      this.readSinceDecision = 0;
      this.saveNow();
      this.arm(0);
    });
  }

  pause(): Promise<ScanStatus> {
    return this.command(() => {
      this.cursor = pausePass(this.cursor);
      this.disarm();
      this.saveNow();
    }, () => pausePass(this.cursor));
  }

  resume(): Promise<ScanStatus> {
    return this.command(() => {
      this.cursor = resumePass(this.cursor);
      this.rate = initialRateState(this.limits);
      this.prevStats = null;
      this.saveNow();
      this.arm(0);
    });
  }

  stop(): Promise<ScanStatus> {
    return this.command(() => {
      this.cursor = stopPass(this.cursor);
      this.revisits = [];
      this.heldEnd = null;
      this.disarm();
      this.saveNow();
    }, () => stopPass(this.cursor));
  }

  /**
   * Shutdown or detach: the loop ends after the read in flight, the cursor is saved as it is (a running
   * scan resumes in the next daemon). Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.halting = true;
    this.disarm();
    if (this.scheduleHandle !== null) this.timer.clear(this.scheduleHandle);
    this.scheduleHandle = null;
    await this.ops.catch(() => undefined);
    await this.ticking;
    if (this.dirty) this.saveNow();
  }

  /** Resolves once no tick is running (tests). */
  async idle(): Promise<void> {
    await this.ticking;
  }

  /**
   * Runs `apply`, one command at a time. With `check` (pause, stop): `check` refuses first (waiting for
   * nothing), then the tick in flight ends (its read applied), then `apply` runs against the cursor it left.
   */
  private command(apply: () => void, check: (() => void) | null = null): Promise<ScanStatus> {
    const run = async (): Promise<ScanStatus> => {
      if (this.closed) throw new DmrError('E_SCAN_STATE', 'the scanner is shutting down');
      if (check !== null) {
        // A refusal first, before any waiting; `apply` checks again against the cursor the tick left.
        check();
        this.halting = true;
        try {
          await this.ticking;
        } finally {
          this.halting = false;
        }
      }
      apply();
      return this.status();
    };
    const p = this.ops.then(run, run);
    this.ops = p.catch(() => undefined);
    return p;
  }

  private limitsFor(ceilingMib: number): RateLimits {
    return rateLimits(ceilingMib, this.settings.scanMinRateMib, this.chunkBytes);
  }

  private arm(ms: number): void {
    if (this.closed || this.timerHandle !== null || this.ticking !== null) return;
    this.timerHandle = this.timer.set(() => {
      this.timerHandle = null;
      const began = this.clock.now();
      this.ticking = this.tick().finally(() => {
        this.ticking = null;
        // The next decision an interval after this one began: a tick that read for longer is followed at
        // once (a 100 ms pause after each long tick cost an idle scan a seventh of its time in the VM).
        const took = Math.max(0, this.clock.now() - began);
        if (this.cursor.state === 'running' && !this.halting) this.arm(Math.max(0, this.intervalMs - took));
        else if (this.cursor.state === 'done') this.armSchedule(0);
      });
    }, ms);
  }

  private disarm(): void {
    if (this.timerHandle !== null) this.timer.clear(this.timerHandle);
    this.timerHandle = null;
  }

  /** scan_interval_days: a finished pass starts the next once the interval since its end has passed. */
  private armSchedule(ms: number): void {
    if (this.closed) return;
    if (this.scheduleHandle !== null) this.timer.clear(this.scheduleHandle);
    this.scheduleHandle = this.timer.set(() => {
      this.scheduleHandle = null;
      if (this.closed) return;
      if (this.due()) {
        this.o.log.info({ pass: this.cursor.pass + 1, intervalDays: this.settings.scanIntervalDays }, 'scheduled scan pass starting');
        this.start().catch((e: unknown) => this.o.log.warn({ err: String(e) }, 'scheduled scan pass did not start'));
      }
      this.armSchedule(SCHEDULE_CHECK_MS);
    }, ms);
  }

  /** Whether a scheduled pass is due: the last pass is done and scan_interval_days (> 0) have passed since it finished. */
  due(): boolean {
    const days = this.settings.scanIntervalDays;
    const c = this.cursor;
    return days > 0 && c.state === 'done' && c.finishedAt !== null && this.clock.now() >= c.finishedAt + days * DAY_MS;
  }

  private saveNow(): void {
    this.lastSaveAt = this.clock.now();
    this.lastSavePosition = this.cursor.position;
    this.dirty = false;
    if (!this.o.save) return;
    try {
      this.o.save({ cursor: this.cursor, regions: this.regions });
    } catch (e) {
      this.o.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'cannot save the scan cursor');
    }
  }

  /** One interval: a rate decision, then chunks while its allowance holds them. */
  private async tick(): Promise<void> {
    if (this.cursor.state !== 'running' || this.halting) return;
    const now = this.clock.now();
    if (this.holdUntil !== null && now < this.holdUntil) return;
    this.holdUntil = null;
    const stats = this.o.device.stats();
    const user = userActivity(this.prevStats, stats);
    this.prevStats = stats;
    const d = decideRate(this.limits, this.rate, { atMs: now, user, scannedBytes: this.readSinceDecision });
    this.rate = d.state;
    this.readSinceDecision = 0;
    this.usersActive = d.active;
    let budget = d.allowanceBytes;
    const tick = ++this.tickCount;
    let first = true;
    try {
      while (this.cursor.state === 'running' && !this.halting) {
        // Users who start I/O during the interval's reads end them (the next decision drops to the floor):
        // a high allowance is not read out in one go beside them.
        if (!first && !this.usersActive && isUserActive(userActivity(stats, this.o.device.stats()))) break;
        first = false;
        const revisit = this.revisits.find((r) => r.dueTick <= tick);
        if (revisit !== undefined) {
          if (revisit.bytes > budget) break;
          budget -= revisit.bytes;
          this.readSinceDecision += revisit.bytes;
          await this.readRevisit(revisit);
          continue;
        }
        if (this.heldEnd !== null) {
          // The last chunk is applied: the pass is done once its revisits are.
          if (this.revisits.length > 0) break;
          this.cursor = advancePass(this.cursor, this.cursor.deviceBytes, this.clock.now(), this.heldEnd);
          this.heldEnd = null;
          continue;
        }
        const next = this.nextRun(budget);
        if (next === null) break;
        budget -= next.bytes;
        this.readSinceDecision += next.bytes;
        const ok = await this.readRun(next);
        if (!ok) break;
      }
    } catch (e) {
      // One line per ERROR_LOG_MS at most: a device that refuses every read would log 10 lines a second.
      this.failedTicks++;
      if (this.lastErrorLogAt === null || now - this.lastErrorLogAt >= ERROR_LOG_MS) {
        this.o.log.error({ err: e instanceof Error ? e.message : String(e), position: this.cursor.position, failedTicks: this.failedTicks }, 'scan read failed; trying again at the next interval');
        this.lastErrorLogAt = now;
        this.failedTicks = 0;
      }
    }
    if (this.stateNow() === 'done') {
      this.o.log.info({ pass: this.cursor.pass, errorsFound: this.cursor.errorsFound, slowFound: this.cursor.slowFound }, 'scan pass done');
      this.saveNow();
    } else if (
      this.dirty &&
      (this.clock.now() - this.lastSaveAt >= this.saveIntervalMs || this.cursor.position - this.lastSavePosition >= this.cursor.deviceBytes / SAVE_EVERY_FRACTION)
    ) {
      this.saveNow();
    }
  }

  /** The cursor's state now (read again after awaits). */
  private stateNow(): ScanState {
    return this.cursor.state;
  }

  /**
   * The chunks at the front the next call reads: each up to the next multiple of chunkBytes, clipped to the
   * device end; as many as `budget` holds whole, at most IDLE_RUN_CHUNKS while users are idle and one while
   * they do I/O. The pass's last chunk waits for the revisits (the pass is done only after them). Null when
   * not even one chunk can be read now.
   */
  private nextRun(budget: number): Range | null {
    if (this.heldEnd !== null) return null;
    const pos = this.cursor.position;
    const end = this.cursor.deviceBytes;
    const most = this.usersActive ? 1 : IDLE_RUN_CHUNKS;
    let stop = pos;
    for (let n = 0; n < most && stop < end; n++) {
      const next = Math.min(end, (Math.floor(stop / this.chunkBytes) + 1) * this.chunkBytes);
      if (next - pos > budget) break;
      if (next === end && this.revisits.length > 0) break;
      stop = next;
    }
    return stop > pos ? { offset: pos, bytes: stop - pos } : null;
  }

  /**
   * One native call over `r`, cut into its chunks. Native may cover less than asked (a run ends with the chunk
   * of its first failed read; any call after many failed reads). Users who started I/O while it read make
   * `usersActive` true: its reads were slow for their sake, none is judged, and the tick ends (`usersStarted`).
   */
  private async readChunks(r: Range): Promise<{ chunks: ChunkOutcome[]; usersStarted: boolean }> {
    const before = this.o.device.stats();
    const result = await this.o.device.scanRead(BigInt(r.offset), r.bytes, false);
    const outcome = scanOutcome(result, this.o.blockSize);
    const usersStarted = !this.usersActive && isUserActive(userActivity(before, this.o.device.stats()));
    if (usersStarted) this.usersActive = true;
    return { chunks: splitOutcome(outcome, r.offset, this.chunkBytes), usersStarted };
  }

  /**
   * Reads the run at the front with one call and applies it chunk by chunk, as calls of one chunk each would
   * be: the front moves past each chunk once it is applied. False (the tick ends) at a chunk whose failed
   * blocks nothing was decided for (an outage, closing, undecided), before the next chunk when a command waits,
   * and when users started I/O during the call; the chunks not applied are read again later, none of them
   * counted.
   */
  private async readRun(r: Range): Promise<boolean> {
    const { chunks, usersStarted } = await this.readChunks(r);
    for (const [i, chunk] of chunks.entries()) {
      if (i > 0 && this.halting) return false;
      const found = await this.applyChunk(chunk, 0);
      if (found === null) return false;
      const end = chunk.offset + chunk.coveredBytes;
      if (end === this.cursor.deviceBytes && this.revisits.length > 0) {
        this.heldEnd = found;
        return false;
      }
      this.cursor = advancePass(this.cursor, end, this.clock.now(), found);
    }
    return !usersStarted;
  }

  private async readRevisit(r: Revisit): Promise<void> {
    this.revisits = this.revisits.filter((x) => x !== r);
    const { chunks } = await this.readChunks(r);
    let at = r.offset;
    let errors = 0;
    let slow = 0;
    for (const [i, chunk] of chunks.entries()) {
      if (i > 0 && this.halting) break;
      const found = await this.applyChunk(chunk, r.tries + 1);
      if (found === null) break;
      errors += found.errors;
      slow += found.slow;
      at = chunk.offset + chunk.coveredBytes;
    }
    if (at === r.offset) {
      this.revisits.push(r); // nothing decided: tried again as it was
      return;
    }
    if (at < r.offset + r.bytes) this.queueRevisit({ offset: at, bytes: r.offset + r.bytes - at, tries: r.tries, dueTick: this.tickCount + 1 });
    if (this.cursor.state === 'running') {
      this.cursor = { ...this.cursor, errorsFound: this.cursor.errorsFound + errors, slowFound: this.cursor.slowFound + slow };
    }
  }

  /**
   * Applies one chunk's part of a call: counts its reads in the region record, queues its moving pieces for a
   * revisit, hands its failed blocks to the policy, its pending blocks to the recheck and its slow reads to the
   * slow-block rule. Null (nothing counted, the chunk is read again later) when nothing was decided: the
   * policy's verdict was not 'handled' (an outage, closing, undecided) or a command halted the naming of the
   * failed blocks.
   */
  private async applyChunk(outcome: ChunkOutcome, tries: number): Promise<{ errors: number; slow: number } | null> {
    let errors = 0;
    if (outcome.failed.length > 0) {
      // Read against an older table, a failed piece may be a place its blocks have left: every failed piece
      // is then read again, block by block, against the table of now.
      const stale = outcome.generation !== this.o.device.tableGeneration();
      let failed: ScanBlockFailure[];
      try {
        failed = await this.nameFailedBlocks(outcome.failed, stale, tries);
      } catch (e) {
        if (e instanceof ScanHalted) return null; // a command waits: the chunk is read again later
        throw e;
      }
      if (failed.length > 0 && this.o.sink) {
        const verdict = await this.o.sink.readFailed(failed, (blocks) => this.rereadBlocks(blocks), () => this.halting);
        if (verdict !== 'handled') {
          if (verdict === 'outage') this.holdUntil = this.clock.now() + OUTAGE_BACKOFF_MS;
          return null;
        }
      }
      errors = failed.length;
    }
    recordScanReads(this.regions, outcome);
    this.dirty = true;
    for (const s of outcome.skipped) if (s.reason === 'moving') this.queueRevisit({ offset: s.offset, bytes: s.length, tries, dueTick: this.tickCount + 1 });
    const pending: number[] = [];
    for (const s of outcome.skipped) {
      if (s.reason !== 'lost') continue;
      for (let b = s.offset / this.o.blockSize; b < (s.offset + s.length) / this.o.blockSize; b++) pending.push(b);
    }
    if (pending.length > 0 && this.o.sink?.pendingSeen && !this.halting) await this.o.sink.pendingSeen(pending);
    const slowBlocks: SlowBlock[] = [];
    let slowReads = 0;
    for (const read of outcome.reads) {
      if (read.failed || read.latencyMs <= this.settings.slowIoMs) continue;
      this.counters.slowIos++;
      slowReads++;
      if (!this.usersActive) this.o.onSlowIo?.();
      // While users do I/O a read is slow for their sake: the blocks are not judged (not even re-read).
      if (!this.usersActive) slowBlocks.push(...(await this.findSlowBlocks(read.offset, read.length)));
    }
    if (slowReads > 0 && this.usersActive) this.counters.busySlowReads += slowReads;
    const readBlocks = outcome.reads.reduce((n, x) => n + (x.failed ? 0 : x.length), 0) / this.o.blockSize;
    // Not judged: a command cut the block-by-block reads short (a partial list would defeat the whole-chunk
    // rule); the chunk was read while users did I/O (it does not enter the window of judged chunks either);
    // native stopped inside the chunk (its rest, read later, enters the window for it: once, not as two halves).
    const cut = (outcome.offset + outcome.coveredBytes) % this.chunkBytes !== 0 && outcome.offset + outcome.coveredBytes !== this.cursor.deviceBytes;
    const slow = this.halting || this.usersActive || cut ? 0 : this.slowRule.noteScanChunk(slowBlocks, readBlocks, outcome.offset);
    return { errors, slow };
  }

  private queueRevisit(r: Revisit): void {
    if (r.tries >= MAX_REVISIT_TRIES || this.revisits.length >= MAX_REVISITS) {
      this.counters.unrevisitedBytes += r.bytes;
      this.o.log.warn({ offset: r.offset, bytes: r.bytes, tries: r.tries }, 'scan: blocks still being moved are not revisited in this pass');
      return;
    }
    this.revisits.push(r);
  }

  /**
   * The blocks of failed pieces that fail read one by one (a piece of one block is that block, unless the
   * read was `stale`: planned against an older table). A narrow read that is itself stale names nothing:
   * its range is revisited later, like a block being moved.
   */
  private async nameFailedBlocks(failed: readonly ScanFailure[], stale: boolean, tries: number): Promise<ScanBlockFailure[]> {
    const bs = this.o.blockSize;
    const out: ScanBlockFailure[] = [];
    for (const f of failed) {
      if (f.length === bs && !stale) {
        out.push({ block: f.offset / bs, device: f.device, errno: f.errno });
        continue;
      }
      await this.narrowRead(f.offset, f.length, (res) => {
        if (this.halting) throw new ScanHalted();
        if (res.generation !== this.o.device.tableGeneration()) {
          this.queueRevisit({ offset: Number(res.offset), bytes: res.coveredBytes, tries, dueTick: this.tickCount + 1 });
          return;
        }
        for (const seg of res.segments) if (seg.skipped === null && seg.errno !== 0) out.push({ block: seg.block, device: seg.device, errno: seg.errno });
      });
    }
    return out;
  }

  /**
   * The policy's re-read: each block read alone; those that fail again. A read planned against an older
   * table is read again (REREAD_STALE_TRIES times); a block whose table keeps changing under it throws, and
   * so does a command waiting (ScanHalted): the policy then decides nothing for these blocks ('undecided').
   */
  private async rereadBlocks(blocks: readonly number[]): Promise<ScanBlockFailure[]> {
    const bs = this.o.blockSize;
    const out: ScanBlockFailure[] = [];
    for (const b of blocks) {
      for (let attempt = 1; ; attempt++) {
        if (this.halting) throw new ScanHalted();
        this.readSinceDecision += bs; // re-reads are charged to the rate like the chunks
        const res = await this.o.device.scanRead(BigInt(b * bs), bs, true);
        if (res.generation !== this.o.device.tableGeneration()) {
          if (attempt < REREAD_STALE_TRIES) continue;
          throw new DmrError('E_INTERNAL', `scan: block ${b} was re-read ${attempt} times while the remap table changed; nothing is decided for it`);
        }
        for (const seg of res.segments) if (seg.skipped === null && seg.errno !== 0) out.push({ block: seg.block, device: seg.device, errno: seg.errno });
        break;
      }
    }
    return out;
  }

  /**
   * Block-by-block reads of [offset, offset + bytes), NARROW_STEP_BLOCKS per call, each result handed to
   * `each`; the next call starts where native says the last one stopped. Throws ScanHalted before a call
   * when a command waits.
   */
  private async narrowRead(offset: number, bytes: number, each: (res: NativeScanReadResult) => void): Promise<void> {
    const bs = this.o.blockSize;
    const step = NARROW_STEP_BLOCKS * bs;
    for (let at = offset; at < offset + bytes; ) {
      if (this.halting) throw new ScanHalted();
      const n = Math.min(step, offset + bytes - at);
      this.readSinceDecision += n;
      const res = await this.o.device.scanRead(BigInt(at), n, true);
      scanOutcome(res, bs); // checks that the pieces cover what native says they cover
      each(res);
      at += res.coveredBytes;
    }
  }

  /**
   * A read slower than slow_io_ms: its blocks read one by one (a block-by-block read of a piece against
   * an older table is not used: the block may have left that place); the blocks slower than slow_io_ms.
   * Stops early when a command waits.
   */
  private async findSlowBlocks(offset: number, bytes: number): Promise<SlowBlock[]> {
    const bs = this.o.blockSize;
    const step = NARROW_STEP_BLOCKS * bs;
    const out: SlowBlock[] = [];
    for (let at = offset; at < offset + bytes && !this.halting; ) {
      const n = Math.min(step, offset + bytes - at);
      this.readSinceDecision += n;
      const res = await this.o.device.scanRead(BigInt(at), n, true);
      scanOutcome(res, bs);
      at += res.coveredBytes;
      if (res.generation !== this.o.device.tableGeneration()) continue;
      for (const seg of res.segments) {
        if (seg.skipped !== null || seg.errno !== 0 || seg.latencyUs / 1000 <= this.settings.slowIoMs) continue;
        for (let b = seg.block; b < seg.block + seg.blocks; b++) out.push({ block: b, device: seg.device });
      }
    }
    return out;
  }
}
