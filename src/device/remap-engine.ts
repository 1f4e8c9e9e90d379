// The remap engine inside the daemon: the remap store on the spare (opened before the ublk device starts)
// and the operations on it, run one at a time (a second request waits for the first). Its four jobs live in
// their own files: the table the data path sees, with the blocks being moved and the writes being
// redirected (remap-mirror.ts); the manual operations remap, unremap and recheck (manual-ops.ts); the fault
// primitives auto-remap runs (fault-ops.ts); and the queries verify and table (remap-queries.ts).
//
// Order of a manual remap (DESIGN.md invariants 2-4): reserve a slot → publish the block as MOVING (I/O
// touching it now waits in native) → drain (no earlier I/O still touches it) → copy main block → slot →
// flush the spare → commit the remap (journal write + flush) → publish it mapped. A main read failure
// during the copy commits the block as `lost` and publishes it LOST (reads fail, never stale data). Any
// other failure before the commit gives the slot back and publishes the table without the block.
import { DmrError } from '../errors.js';
import type { BackingRole, NativeDevice, NativeEvent } from '../native.js';
import type { Logger } from '../log.js';
import {
  RemapStore,
  slotOffset,
  type SpareIo,
  type LoadReport,
  type MainIdentity,
} from '../remap/index.js';
import { JOURNAL_RECORD_SIZE, MIN_JOURNAL_RECORDS, DEFAULT_JOURNAL_RECORDS } from '../remap/geometry.js';
import type { EngineContext } from './engine-context.js';
import { FaultOps } from './fault-ops.js';
import { ManualOps } from './manual-ops.js';
import { RemapMirror } from './remap-mirror.js';
import { RemapQueries } from './remap-queries.js';

export const SECTOR = 512;
/** Blocks a recheck returns to main per turn in the engine's chain (each is moved, drained and read again). */
export const RECHECK_BATCH = 8;

export interface EngineOptions {
  /** The spare, claimed (ClaimedSpareIo): the engine never opens or closes it. */
  spare: SpareIo;
  main: MainIdentity;
  blockSize: 512 | 4096;
  /** Size of the device /dev/ublkbN exposes (bytes, multiple of blockSize). */
  deviceBytes: bigint;
  spareOffset?: number;
  spareSize?: number;
  forceFormat?: boolean;
  /** Recovery: the spare must hold this main's metadata already (never formatted here). */
  mustExist?: boolean;
  /** The refusal's message when `mustExist` finds no metadata (default: the recovery's). */
  noTableMessage?: string;
  log: Logger;
}

export interface RemapResult {
  sector: number;
  block: number;
  slot: number;
  state: 'mapped' | 'lost';
  /** errno name of the main read that failed (the block is then lost), else null. */
  readErrno: string | null;
}

export interface VerifyResult {
  sector: number;
  block: number;
  state: 'unmapped' | 'mapped' | 'lost' | 'moving';
  device: BackingRole;
  slot: number | null;
  /** Byte offset on `device` where the block's data lives. */
  offset: number;
  readable: boolean;
  errno: string | null;
}

/** What recheck did with one block. */
export interface RecheckResult {
  block: number;
  /**
   * recovered: it read on main and is back there; unreadable: still lost; not-lost: nothing to recheck;
   * main-stale: lost, but main's copy is not known to be its last data (its entry's dataOnMain is false: its slot failed, or
   * it was marked on a format-version-1 spare): it stays lost.
   */
  result: 'recovered' | 'unreadable' | 'not-lost' | 'main-stale';
  errno: string | null;
}

export interface TableEntryOut {
  block: number;
  sector: number;
  slot: number;
  state: 'mapped' | 'lost';
  origin: 'manual' | 'auto' | 'scan';
  time: number;
  errorCount: number;
}

/**
 * Journal records per journal for a freshly formatted spare region of `spareSize` bytes: the default 1024
 * (8 MiB for both journals), fewer on a small spare so that the journals take at most an eighth of it.
 */
export function journalRecordsFor(spareSize: number): number {
  const n = Math.floor(spareSize / 8 / (2 * JOURNAL_RECORD_SIZE));
  return Math.max(MIN_JOURNAL_RECORDS, Math.min(DEFAULT_JOURNAL_RECORDS, n));
}

/** A block a failed request touched: where it failed, and its error count so far. */
export interface FaultItem {
  block: number;
  slotFailed: boolean;
  errorCount: number;
  /** Who found the failure: the data path (auto, the default) or the background scan (scan). */
  origin?: 'auto' | 'scan';
  /**
   * markLost reads the block once more where it failed, under MOVING, and does not mark it when it reads
   * (auto-remap's read failures: a write may have healed it since the policy's last read).
   */
  confirm?: boolean;
}

/** A write's data for `block` went to spare slot `slot` (from a 'lost_written' report). */
export interface SlotWrite {
  block: number;
  slot: number;
}

export class RemapEngine {
  /** The table as the data path sees it (remap-mirror.ts). */
  private mirror!: RemapMirror;
  private faults!: FaultOps;
  private manual!: ManualOps;
  private queries!: RemapQueries;
  /** Whether main is in an outage now, a write outage included (set by the auto-remapper). */
  outageActive: () => boolean = () => false;
  /** Whether main does not answer reads now (a device outage; set by the auto-remapper): manual remaps are refused then. */
  readOutageActive: () => boolean = () => false;
  private chain: Promise<unknown> = Promise.resolve();
  /** Error totals changed since the last commit (persisted at the next commit or on close). */
  private countersDirty = false;
  private closing = false;

  private constructor(
    readonly store: RemapStore,
    private readonly io: SpareIo,
    readonly report: LoadReport,
    readonly blockSize: 512 | 4096,
    readonly deviceBytes: bigint,
    private readonly log: Logger,
  ) {
    this.mirror = new RemapMirror(store);
    const ctx: EngineContext = {
      store,
      blockSize,
      log,
      mirror: this.mirror,
      dev: () => this.mirror.dev(),
      countersPersisted: () => {
        this.countersDirty = false;
      },
      sectorOf: (block: number) => (block * blockSize) / SECTOR,
      outageActive: () => this.outageActive(),
      readOutageActive: () => this.readOutageActive(),
    };
    this.faults = new FaultOps(ctx);
    this.manual = new ManualOps(ctx);
    this.queries = new RemapQueries(ctx);
  }

  /** Opens (or formats) the spare's metadata. Refusals are typed errors and leave the spare untouched. */
  static async open(o: EngineOptions): Promise<RemapEngine> {
    const io = o.spare;
    const offset = o.spareOffset ?? 0;
    const regionSize = o.spareSize ?? Math.max(0, Number(io.size) - offset);
    const { store, report } = await RemapStore.open(io, {
      main: o.main,
      blockSize: o.blockSize,
      spareOffset: offset,
      spareSize: o.spareSize,
      force: o.forceFormat === true,
      mustExist: o.mustExist === true,
      ...(o.noTableMessage !== undefined ? { noTableMessage: o.noTableMessage } : {}),
      journalRecords: journalRecordsFor(regionSize),
    });
    return new RemapEngine(store, io, report, o.blockSize, o.deviceBytes, o.log);
  }

  /** Byte offset of slot 0 on the spare (what the native data path adds slot * blockSize to). */
  get spareDataOffset(): bigint {
    return BigInt(slotOffset(this.store.geometry, 0));
  }

  get deviceSectors(): number {
    return Number(this.deviceBytes / BigInt(SECTOR));
  }

  /** Attaches the native device and publishes the table to it (before its start: no I/O misses a remap). */
  attach(device: NativeDevice): void {
    this.mirror.attach(device);
  }

  /** Counts a backing I/O error (persisted with the next commit and on close). */
  recordIoError(ev: Extract<NativeEvent, { type: 'io_error' }>): void {
    this.countErrors(ev.op === 'read' ? 'read' : 'write', 1);
  }

  /** Persists pending counters and waits for every commit (the spare stays claimed). Call after the device stopped. */
  async close(): Promise<void> {
    await this.chain.catch(() => undefined);
    if (this.countersDirty) {
      await this.store.commitBatch([]).catch((e: unknown) => this.log.error({ err: String(e) }, 'cannot persist the error counters'));
    }
    await this.store.idle();
  }

  /** The block holding `sector`; E_OUT_OF_RANGE outside the device. */
  blockOf(sector: number): number {
    if (!Number.isSafeInteger(sector) || sector < 0) throw new DmrError('E_USAGE', `sector must be a whole number, got ${String(sector)}`);
    if (BigInt(sector) * BigInt(SECTOR) >= this.deviceBytes) {
      throw new DmrError('E_OUT_OF_RANGE', `sector ${sector} is beyond the end of the device (${this.deviceSectors} sectors)`);
    }
    return Math.floor((sector * SECTOR) / this.blockSize);
  }

  remap(sector: number): Promise<RemapResult> {
    const block = this.blockOf(sector);
    return this.serial(() => this.manual.remap(sector, block));
  }

  unremap(sector: number): Promise<{ sector: number; block: number; slot: number }> {
    const block = this.blockOf(sector);
    return this.serial(() => this.manual.unremap(sector, block));
  }

  verify(sector: number): Promise<VerifyResult> {
    return this.queries.verify(sector, this.blockOf(sector));
  }

  table(offset: number, limit: number): { total: number; offset: number; entries: TableEntryOut[] } {
    return this.queries.table(offset, limit);
  }

  /** Counts `n` read or write errors (persisted with the next commit and on close). */
  countErrors(op: 'read' | 'write', n: number): void {
    if (n <= 0) return;
    const c = this.store.counters();
    if (op === 'read') this.store.setCounters({ readErrors: c.readErrors + n });
    else this.store.setCounters({ writeErrors: c.writeErrors + n });
    this.countersDirty = true;
  }

  /** Sets both error totals to zero (clear_stats); persisted with the next commit. */
  clearErrorCounters(): void {
    this.store.setCounters({ readErrors: 0, writeErrors: 0 });
    this.countersDirty = true;
  }

  /** Marks blocks lost at slots of their own, in one batch (FaultOps.markLost). */
  markLost(items: ReadonlyArray<FaultItem>): Promise<Map<number, DmrError | null>> {
    return this.serial(() => this.faults.markLost(items));
  }

  /** The blocks whose failed write is being redirected now (published REDIRECT, not committed). */
  redirectedBlocks(): number[] {
    return [...this.mirror.redirects.keys()];
  }

  /** The redirected writes to `blocks` failed for good: back to main, slots freed (FaultOps.abandonRedirects). */
  abandonRedirects(blocks: readonly number[]): Promise<void> {
    return this.serial(() => this.faults.abandonRedirects(blocks));
  }

  /** One batch of failed-write work: commits of writes in slots, then new redirects (FaultOps.writeBatch). */
  writeBatch(
    redirects: ReadonlyArray<FaultItem>,
    slotWrites: ReadonlyArray<SlotWrite>,
  ): Promise<{ redirected: Map<number, DmrError | null>; redrive: SlotWrite[]; commitError: DmrError | null }> {
    return this.serial(() => this.faults.writeBatch(redirects, slotWrites));
  }

  /** Relocates a block whose read a retry recovered (FaultOps.relocate). */
  relocate(block: number, fromSpare: boolean, errorCount: number, tries: number, backoffMs: number, origin: 'auto' | 'scan' = 'auto'): Promise<'relocated' | 'unreadable' | 'skipped'> {
    return this.serial(() => this.faults.relocate(block, fromSpare, errorCount, tries, backoffMs, origin));
  }

  /**
   * Re-reads lost blocks on main (`blocks`, or every lost block; with `autoOnly`, only the pending ones);
   * those that read go back to main. The first read of each candidate, which may take seconds on a failing
   * sector, runs outside the one-at-a-time chain, so fault handling goes on meanwhile; only the blocks
   * that read then enter it, RECHECK_BATCH at a time (ManualOps.recheckBatch: MOVING, drain, read again,
   * commit), and other jobs run between the batches. Results are in block order.
   */
  async recheck(blocks: readonly number[] | null, autoOnly = false): Promise<RecheckResult[]> {
    if (this.closing) throw new DmrError('E_DAEMON', 'the device is stopping');
    this.mirror.dev();
    const { out, candidates } = this.manual.recheckCandidates(blocks, autoOnly);
    const readable: number[] = [];
    for (const b of candidates) {
      if (this.closing) throw new DmrError('E_DAEMON', 'the device is stopping');
      const errno = await this.manual.readMain(b);
      if (errno === null) readable.push(b);
      else out.push({ block: b, result: 'unreadable', errno });
      if (readable.length === RECHECK_BATCH) out.push(...(await this.serial(() => this.manual.recheckBatch(readable.splice(0)))));
    }
    if (readable.length > 0) out.push(...(await this.serial(() => this.manual.recheckBatch(readable.splice(0)))));
    return out.sort((a, b) => a.block - b.block);
  }

  /** Refuses new remap/unremap requests and waits for the one in progress (before the device stops). */
  async quiesce(): Promise<void> {
    this.closing = true;
    await this.chain.catch(() => undefined);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(new DmrError('E_DAEMON', 'the device is stopping'));
    const run = this.chain.then(fn);
    this.chain = run.catch(() => undefined);
    return run;
  }
}
