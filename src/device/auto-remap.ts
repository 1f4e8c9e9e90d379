// Auto-remap: what the daemon does with a request native parked because part of it failed (io_fault),
// and with a write whose data native put in spare slots (lost_written). Native never decides; this module does (DESIGN.md):
//
// - write error on main: narrow the failure to single blocks (a retry with one backing I/O per block),
//   publish those blocks REDIRECT at reserved spare slots (not committed yet; a read of them waits in
//   native until the redirect ends), retry: the write goes to the
//   slots and comes back as 'lost_written', whose blocks are committed remapped (a spare flush for the slot
//   data, then one journal write and flush) before the write is acknowledged. The user sees success.
// - read error: retry (narrowed, `readRetries` times, backoff doubling from `retryBackoffMs`). A retry that
//   succeeds returns the data; the block's error count grows and at `errorThreshold` a background job
//   relocates it. When every try fails the blocks become `lost` (pending: the next write heals them) and
//   the read fails with EIO: never zeros, never stale data.
// - error on a spare slot: the block moves to a fresh slot and the bad slot is retired (as `lost` when the
//   data could not be read, relocated with its data when a retry read it).
// - a write outage (main refuses writes while it still reads: write-outage-detector.ts): the writes that
//   fail on main are held like an outage's, not redirected (a read-only main would fill the spare a block
//   at a time); each probe first asks whether main took a write since the outage began, else retries the
//   write held longest (one retry out at a time, waited for one probe interval at most). A write main
//   takes ends it. A held write whose hold ends is redirected as a bad sector (a misclassification costs
//   latency, never an error). A write failing on a spare slot is not main's: it moves to a fresh slot.
// - spare full or the metadata cannot be written: the error reaches the user and is logged.
// - auto-remap off: native completes failed requests with their errno (parking off); lost blocks still heal
//   on write.
import fs from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import type { FaultPolicy } from '../config/policy.js';
import { DmrError } from '../errors.js';
import type { Logger } from '../log.js';
import type { FaultAction, NativeDevice, NativeEvent } from '../native.js';
import { BurstLog } from './burst-log.js';
import { OutageDetector } from './outage-detector.js';
import type { HealthEvent } from '../health/index.js';
import { OutageMonitor, PROBE_MAX_MS, type Held, type OutageStats } from './outage-monitor.js';
import { probeMain, ProbeTargets } from './outage-probe.js';
import { WriteOutageDetector } from './write-outage-detector.js';
import type { RecheckResult, RemapEngine } from './remap-engine.js';
import { ScanHalted, type ScanBlockFailure, type ScanFailureVerdict, type ScanFindingsSink } from '../scan/scanner.js';
import { jobKey, WorkQueue, type WorkQueueStats } from './work-queue.js';
import { ReadsNow } from './fault-ops.js';

type FaultEvent = Extract<NativeEvent, { type: 'io_fault' }>;
type ClearedEvent = Extract<NativeEvent, { type: 'fault_cleared' }>;

const EIO = 5;
/** Retries of one write (each after moving its failed blocks to fresh slots) before it fails. */
const MAX_WRITE_ATTEMPTS = 8;
/** Blocks whose read errors are remembered (for errorThreshold) at most; the oldest are forgotten. */
const MAX_SUSPECTS = 100_000;
/** The scan's unreadable blocks are marked this many at a time (scanReadFailed): one batch each. */
export const SCAN_LOST_GROUP = 8;

/** Counters kept in memory since start or the last clear_stats (the error totals are persisted by the store). */
export interface AutoRemapCounters {
  retries: number;
  recoveredReads: number;
  unrecoveredReads: number;
  relocations: number;
  relocationFailures: number;
  spareIoErrors: number;
  /** Failed requests completed with their error: auto-remap off, spare full, metadata failure. */
  passedThrough: number;
  /** Blocks whose write landed in their slot and was committed there (redirected writes, and written lost blocks): stats healedBlocks. */
  slotWritesCommitted: number;
  /** Writes driven again because their data went to a slot their block had left (moved, or redirect abandoned). */
  redrivenWrites: number;
  /** Lost blocks that read on main again (recheck) and are back there. */
  recovered: number;
}

const zero = (): AutoRemapCounters => ({
  retries: 0,
  recoveredReads: 0,
  unrecoveredReads: 0,
  relocations: 0,
  relocationFailures: 0,
  spareIoErrors: 0,
  passedThrough: 0,
  slotWritesCommitted: 0,
  redrivenWrites: 0,
  recovered: 0,
});

interface Job {
  block: number;
  /** 'slot-write' jobs: the slot the write's data went to. */
  slot?: number;
  slotFailed: boolean;
  errorCount: number;
  /** 'redirect' jobs: the write's write-outage hold ended: redirected even though a write outage goes on. */
  pastHold?: boolean;
  /** 'lost' and 'relocate' jobs: the background scan found the block (the table's origin `scan`). */
  scan?: boolean;
}

/** The outcome of a 'slot-write' job whose block is no longer at that slot: the write is driven again. */
class RedriveWrite extends Error {}

/** The outcome of a 'lost' or 'redirect' job when main is in an outage: nothing was done; the request is held. */
class OutageHold extends Error {}

interface FaultRecord {
  op: FaultEvent['op'];
  /** Blocks that failed in the latest report, with where. */
  blocks: Map<number, 'main' | 'spare'>;
  /** A narrowed retry was asked for: the latest failures are per block. */
  narrowed: boolean;
  /** Its blocks were remapped for it (a write): nothing to relocate when it clears. */
  remapped: boolean;
  firstErrno: number;
  /** Retries given to it when an outage it was held in ended (not counted against its retries). */
  outageRetries: number;
  /** It was held in an outage: its failures were the outage's, not its blocks'. */
  outage: boolean;
  /** When it was first held in an outage (its holds together last outageHoldMs at most), null if never. */
  heldSince: number | null;
  /** Blocks redirected for it (a write): given up if it fails, else their slots would leak and read EIO. */
  redirected: Set<number>;
  /** The range it covers (as first reported). */
  range: { block: number; blocks: number };
  /** It is held in a write outage (held again after a probe retry: not counted twice). */
  writeHeld: boolean;
  /** A write-outage probe retried it: told whether the retry went through (settled by resolve too). */
  probeDone: ((ok: boolean) => void) | null;
  /** Its blocks read again when they were about to be marked lost, and it was retried for that once. */
  readsAgainRetried?: boolean;
}

/**
 * Relocations still to do, kept in a file beside the device's state (the table itself, pending blocks
 * included, is on the spare). It is a hint: losing it loses no data, only delays a relocation until the
 * block fails again.
 */
const queueFileSchema = z.strictObject({
  version: z.literal(1),
  pairId: z.string(),
  relocate: z
    .array(z.strictObject({ block: z.number().int().nonnegative(), slotFailed: z.boolean(), errorCount: z.number().int().nonnegative(), scan: z.boolean().optional() }))
    .max(MAX_SUSPECTS),
});

/** The first blocks of a failed range (a log line's worth; the range's length is its count). */
const firstBlocks = (r: { block: number; blocks: number }): number[] => Array.from({ length: Math.min(r.blocks, 16) }, (_, i) => r.block + i);

const keyOf = (ev: { queue: number; tag: number; seq: number }): string => `${ev.queue}:${ev.tag}:${ev.seq}`;

export class AutoRemapper {
  private readonly faults = new Map<string, FaultRecord>();
  private readonly suspects = new Map<number, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  /** When the last "nothing decided" line of the scan's re-reads was logged (one per 10 s at most). */
  private undecidedLogAt: number | null = null;
  /** Waits of the scanner's retries (scanReadFailed): woken at close. */
  private readonly wakers = new Set<() => void>();
  private readonly queue: WorkQueue<Job>;
  private counters = zero();
  private closed = false;
  /**
   * Closed for a detach (an in-place restart): no held request is resolved any more, whatever its handling
   * concludes; native drops them uncommitted at detach and the kernel reissues them to the successor.
   */
  private leavingHeld = false;
  private persistTimer: NodeJS.Timeout | null = null;
  /**
   * Whether restore() took up the queue file: until then the file is the previous run's list, which a
   * close (a recover failing before the device is back) must leave for the next daemon, not overwrite.
   */
  private restored = false;
  /** Errors and remaps are logged through this: one line at once, then one summary per second of a burst (DeviceEvents hears its lines: burst.onNote). */
  readonly burst: BurstLog;
  private readonly detector: OutageDetector;
  /** Where the health model's events go (the daemon's DeviceHealth); null: nowhere. */
  health: { record(event: HealthEvent): void } | null = null;
  /** Device-wide outages of main: while one lasts, failed requests are held, never remapped or marked lost. */
  readonly outage: OutageMonitor;
  /** What the outage probe reads: blocks read on main lately, never one in the table. */
  private readonly probeTargets: ProbeTargets;
  private readonly writeDetector: WriteOutageDetector;
  /** Main refuses writes while it reads: failed writes are held, never redirected. */
  readonly writeOutage: OutageMonitor;
  /** Writes main had done whole when the write outage began. */
  private writeOutageOkBase = 0;
  /** The write-outage probe's retry out now (a held write retried on main), null when none. */
  private writeProbe: Promise<boolean> | null = null;

  /** A slot was refused because the spare is full, and none has been freed since (nor stats cleared). */
  private spareFullSeen = false;

  constructor(
    private readonly engine: RemapEngine,
    private readonly device: NativeDevice,
    readonly policy: FaultPolicy,
    private readonly log: Logger,
    /** Where queued relocations are kept across restarts; null: not kept. */
    private readonly queueFile: string | null = null,
  ) {
    this.burst = new BurstLog(log);
    const deviceBlocks = Number(engine.deviceBytes / BigInt(engine.blockSize));
    this.detector = new OutageDetector(() => ({ regions: policy.outageRegions, windowMs: policy.outageWindowMs }), deviceBlocks, Date.now);
    this.probeTargets = new ProbeTargets(deviceBlocks, (b) => engine.store.table.get(b) !== undefined);
    this.outage = new OutageMonitor(
      () => probeMain(device, engine.blockSize, this.probeTargets.pick(), (b) => this.probeTargets.noteGood(b)),
      () => this.policy.outageHoldMs,
      log,
      () => this.afterOutage(),
      () => this.detector.reset(),
    );
    this.writeDetector = new WriteOutageDetector(() => ({ regions: policy.writeOutageRegions, windowMs: policy.outageWindowMs }), deviceBlocks, Date.now);
    this.writeOutage = new OutageMonitor(
      () => this.probeWrites(),
      () => this.policy.outageHoldMs,
      log,
      () => undefined,
      () => this.writeDetector.reset(),
    );
    this.writeOutage.words = {
      began: 'main refuses writes (it still reads: read-only or write-protected?): failed writes are held, not redirected to the spare; health is critical',
      ended: 'main takes writes again: held writes are retried',
      expired: 'main still refuses writes: held writes are redirected to the spare as bad sectors (one hold each while it lasts)',
    };
    engine.outageActive = () => this.outage.active || this.writeOutage.active;
    // A manual remap reads the block on main: refused in a device outage only (main still reads in a write outage).
    engine.readOutageActive = () => this.outage.active;
    // A failed write's two steps (redirect, then commit once its data is in the slot) share batches: one
    // commit and one table publish serve the writes being redirected and those being committed.
    this.queue = new WorkQueue<Job>((group, jobs) => this.runBatch(group, jobs), (kind) => (kind === 'redirect' || kind === 'slot-write' ? 'write' : kind));
    this.queue.onSettled = (kind) => {
      if (kind === 'relocate') this.persistSoon();
    };
  }

  /** Queues the relocations a previous run left in the queue file (for this spare pair only). */
  restore(): number {
    this.restored = true;
    if (this.queueFile === null) return 0;
    let raw: string;
    try {
      raw = fs.readFileSync(this.queueFile, 'utf8');
    } catch {
      return 0;
    }
    let parsed;
    try {
      parsed = queueFileSchema.safeParse(JSON.parse(raw));
    } catch {
      parsed = null;
    }
    if (!parsed?.success || parsed.data.pairId !== this.engine.store.pairId) {
      this.log.warn({ file: this.queueFile }, 'ignoring an unusable relocation queue file');
      return 0;
    }
    for (const it of parsed.data.relocate) void this.queue.add('background', 'relocate', it);
    if (parsed.data.relocate.length > 0) this.log.info({ relocations: parsed.data.relocate.length }, 'queued relocations restored');
    return parsed.data.relocate.length;
  }

  private persistSoon(): void {
    if (this.queueFile === null || this.persistTimer !== null || this.closed) return;
    this.persistTimer = setTimeout(() => {
      this.persistTimer = null;
      this.persistNow();
    }, 100);
  }

  /** Writes the relocations queued or running now (temp file + rename: the old list or the new one). */
  private persistNow(): void {
    if (this.queueFile === null || !this.restored) return;
    const relocate = this.queue.items('relocate');
    const body = JSON.stringify({ version: 1, pairId: this.engine.store.pairId, relocate });
    const tmp = `${this.queueFile}.tmp`;
    try {
      fs.mkdirSync(path.dirname(this.queueFile), { recursive: true, mode: 0o700 });
      if (relocate.length === 0) {
        fs.rmSync(this.queueFile, { force: true });
        return;
      }
      fs.writeFileSync(tmp, body, { mode: 0o600 });
      fs.renameSync(tmp, this.queueFile);
    } catch (e) {
      this.log.warn({ file: this.queueFile, err: String(e) }, 'cannot save the relocation queue');
    }
  }

  /**
   * Re-reads lost blocks on main (`blocks`, or all; `autoOnly`: only those auto-remap marked pending) and
   * returns those that read to main (RemapEngine.recheck); counts them `recovered`.
   */
  async recheck(blocks: readonly number[] | null, autoOnly = false): Promise<RecheckResult[]> {
    const r = await this.engine.recheck(blocks, autoOnly);
    const back = r.filter((x) => x.result === 'recovered');
    this.counters.recovered += back.length;
    for (const x of back) this.probeTargets.noteGood(x.block);
    return r;
  }

  /** After an outage: the blocks marked pending may have failed for the outage's sake; read them again. */
  private afterOutage(): void {
    if (this.closed) return;
    this.recheck(null, true).then(
      (r) => {
        const back = r.filter((x) => x.result === 'recovered').length;
        if (r.length > 0) this.log.info({ checked: r.length, recovered: back }, 'pending blocks rechecked after the outage');
      },
      (e: unknown) => this.log.error({ err: String(e) }, 'rechecking pending blocks after the outage failed'),
    );
  }

  /** Turns auto-remap on or off for this device (not persisted: the config file holds the default). */
  setAutoRemap(on: boolean): void {
    this.policy.autoRemap = on;
    this.device.setFaultParking(on);
    // Native now completes parked requests itself, a probe's retry among them, without an event.
    if (!on) for (const rec of this.faults.values()) this.settleProbe(rec, false);
    if (!on && !this.closed) {
      // Native no longer reports failures (io_error only, no io_fault): a redirected write whose retry now
      // fails is completed without TypeScript hearing of it, and nothing would end its redirect (its blocks'
      // reads would park for good). Every redirect is given up now: back on main; a write whose data lands in
      // a slot meanwhile is driven again to main (lost_written, commitSlotWrites).
      const blocks = this.engine.redirectedBlocks();
      if (blocks.length > 0) void this.engine.abandonRedirects(blocks).catch((e: unknown) => this.log.error({ err: String(e) }, 'giving up redirects failed'));
    }
    this.log.info({ autoRemap: on }, `auto-remap ${on ? 'on' : 'off'}`);
  }

  /**
   * The spare is full now: a remap was refused for want of a slot and no slot is free yet. Clears itself
   * once a slot is free again (an unremap, a remap given up), and on clear_stats.
   */
  get spareFull(): boolean {
    if (this.spareFullSeen && this.engine.store.allocator.free > 0) {
      this.spareFullSeen = false;
      this.log.info({ freeSlots: this.engine.store.allocator.free }, 'the spare has free slots again');
    }
    return this.spareFullSeen;
  }

  clearStats(): void {
    this.spareFullSeen = false;
    this.outage.clearStats();
    this.writeOutage.clearStats();
    this.counters = zero();
    this.suspects.clear();
    this.engine.clearErrorCounters();
  }

  stats(): AutoRemapCounters & {
    queue: WorkQueueStats;
    faultsParked: number;
    suspectBlocks: number;
    outage: OutageStats;
    writeOutage: OutageStats & { mainWritesOk: number; mainWritesFailed: number };
  } {
    const mw = this.mainWrites();
    return {
      ...this.counters, queue: this.queue.stats(), faultsParked: this.faults.size, suspectBlocks: this.suspects.size, outage: this.outage.stats(),
      writeOutage: { ...this.writeOutage.stats(), mainWritesOk: mw.ok, mainWritesFailed: mw.failed },
    };
  }

  /** Backing writes to main done whole and failed since the device started (native's counters). */
  private mainWrites(): { ok: number; failed: number } {
    let ok = 0;
    let failed = 0;
    for (const q of this.device.stats()) {
      ok += q.mainWritesOk;
      failed += q.mainWritesFailed;
    }
    return { ok, failed };
  }

  /**
   * The write-outage probe: main takes writes when it has done one since the outage began (asked first, at
   * every probe); otherwise the write held longest is retried on main (the user's own data to its own
   * blocks, not yet acknowledged: a probe writes nothing of its own), and the answer is whether it went
   * through. One retry is out at a time; a probe waits for it PROBE_MAX_MS at most (the longest gap between
   * probes), so a retry that is slow or never reports back never stops the next probes.
   */
  private async probeWrites(): Promise<boolean> {
    const took = (): boolean => this.mainWrites().ok > this.writeOutageOkBase;
    if (took()) return true;
    if (this.writeProbe === null) {
      const h = this.writeOutage.takeOldest();
      if (h === null) return false;
      if (h.probe === undefined) {
        h.release(true);
        return false;
      }
      const p = h.probe();
      this.writeProbe = p;
      void p.then(() => {
        if (this.writeProbe === p) this.writeProbe = null;
      });
    }
    let t: NodeJS.Timeout | undefined;
    const went = await Promise.race([this.writeProbe, new Promise<boolean>((res) => (t = setTimeout(() => res(false), PROBE_MAX_MS)))]);
    clearTimeout(t);
    return went || took();
  }

  /** Tells a write-outage probe retrying this request whether the retry went through. */
  private settleProbe(rec: FaultRecord | undefined, went: boolean): void {
    if (rec?.probeDone == null) return;
    const done = rec.probeDone;
    rec.probeDone = null;
    done(went);
  }

  /** Waits until no fault is being handled and the work queue is empty (tests, benchmarks). */
  async idle(): Promise<void> {
    await this.queue.idle();
  }

  /**
   * Stops taking decisions: retries are cancelled, queued jobs dropped (native fails parked requests on
   * stop). A batch running now finishes (a relocation never stops half-done). `leaveHeld` (a detach): from
   * now on no request is resolved, neither the ones whose jobs are dropped nor faults reported later; they
   * stay held in native, which leaves them to the kernel to reissue to the next daemon. Set before the
   * first await: nothing resolved by this close.
   */
  async close(opts: { leaveHeld?: boolean } = {}): Promise<void> {
    if (opts.leaveHeld === true) this.leavingHeld = true;
    this.closed = true;
    this.outage.close();
    this.writeOutage.close();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const wake of this.wakers) wake();
    this.wakers.clear();
    if (this.persistTimer !== null) clearTimeout(this.persistTimer);
    this.persistTimer = null;
    // What is still queued now is what the next start picks up.
    this.persistNow();
    this.burst.flush();
    await this.queue.close();
  }

  /** Handles io_fault and fault_cleared events (JS thread). Never throws. */
  handle(ev: FaultEvent | ClearedEvent): void {
    if (this.leavingHeld && ev.type === 'io_fault') return; // held for the next daemon (close({ leaveHeld }))
    if (ev.type === 'fault_cleared') {
      this.cleared(ev);
      return;
    }
    const p = ev.kind === 'lost_written' ? this.lostWritten(ev) : this.failed(ev);
    p.catch((e: unknown) => {
      this.log.error({ err: String(e), queue: ev.queue, tag: ev.tag }, 'fault handling failed: the request fails');
      this.resolve(ev, { action: 'fail', errno: EIO });
    });
  }

  private resolve(ev: { queue: number; tag: number; seq: number }, action: FaultAction): void {
    if (this.leavingHeld) {
      this.log.debug({ queue: ev.queue, tag: ev.tag, action: action.action }, 'detaching: the request stays held for the next daemon');
      return;
    }
    if (action.action !== 'retry') {
      // Its final answer: a probe retrying it learns whether it went through (complete) or not.
      this.settleProbe(this.faults.get(keyOf(ev)), action.action === 'complete');
      this.faults.delete(keyOf(ev));
    }
    try {
      this.device.resolveFault(ev.queue, ev.tag, ev.seq, action);
    } catch (e) {
      this.log.error({ err: String(e) }, 'resolveFault failed');
    }
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private async lostWritten(ev: FaultEvent): Promise<void> {
    const writes: Array<{ block: number; slot: number }> = [];
    for (const r of ev.written) for (let i = 0; i < r.blocks; i++) writes.push({ block: r.block + i, slot: r.slot + i });
    const blocks = writes.map((x) => x.block);
    const errs = await Promise.all(writes.map((x) => this.queue.add('foreground', 'slot-write', { ...x, slotFailed: false, errorCount: 0 })));
    const err = errs.find((e) => e !== null && !(e instanceof RedriveWrite));
    if (err) {
      this.burst.note('commit-failed', 'error', 'writes to spare slots could not be committed: they fail', { blocks, fields: { err: err.message } });
      this.counters.passedThrough++;
      this.resolve(ev, { action: 'fail', errno: EIO });
      return;
    }
    const redrive = writes.filter((_, i) => errs[i] instanceof RedriveWrite);
    this.counters.slotWritesCommitted += writes.length - redrive.length;
    if (writes.length > redrive.length) {
      this.burst.note('committed', 'info', 'writes committed in spare slots (blocks remapped after write errors, or healed)', { blocks });
    }
    const rec = this.faults.get(keyOf(ev));
    if (rec) rec.remapped = true;
    if (redrive.length > 0) {
      // Their data went to a slot the table no longer gives the block (it moved, or its redirect was
      // abandoned): acknowledging would map the block to a slot without the data. Write it again, against
      // the table as it is now.
      // Tries spent held in an outage are not the write's own (as in writeFailed).
      if (ev.attempt - (rec?.outageRetries ?? 0) >= MAX_WRITE_ATTEMPTS) {
        this.log.error({ attempt: ev.attempt, blocks: redrive.slice(0, 16).map((x) => x.block) }, 'write keeps landing in slots its blocks left: it fails');
        this.counters.passedThrough++;
        this.resolve(ev, { action: 'fail', errno: EIO });
        return;
      }
      this.counters.redrivenWrites++;
      this.log.debug({ blocks: redrive.slice(0, 16) }, 'write landed in slots its blocks left: written again');
      this.resolve(ev, { action: 'retry' });
      return;
    }
    this.resolve(ev, { action: 'complete' });
  }

  private async failed(ev: FaultEvent): Promise<void> {
    const key = keyOf(ev);
    let rec = this.faults.get(key);
    const errno = ev.failed[0]?.errno ?? EIO;
    if (rec === undefined) {
      rec = {
        op: ev.op, blocks: new Map(), narrowed: false, remapped: false, firstErrno: errno, outageRetries: 0, outage: false,
        heldSince: null, redirected: new Set(), range: { block: ev.block, blocks: ev.blocks }, writeHeld: false, probeDone: null,
      };
      this.faults.set(key, rec);
    }
    // A write-outage probe's retry failed: main still refuses writes.
    this.settleProbe(rec, false);
    if (ev.attempt === 0) this.engine.countErrors(ev.op === 'read' ? 'read' : 'write', ev.failed.length);
    rec.blocks.clear();
    let multi = false;
    for (const r of ev.failed) {
      if (r.device === 'spare') this.counters.spareIoErrors++;
      // The health model: a failed range on main once (its retries are the same error), each on the spare (as spareIoErrors).
      if (r.device === 'spare') this.health?.record({ type: 'spare_error', op: ev.op === 'read' ? 'read' : 'write' });
      else if (ev.attempt === 0) this.health?.record({ type: ev.op === 'read' ? 'read_error' : 'write_error' });
      if (r.blocks > 1) multi = true;
      for (let b = r.block; b < r.block + r.blocks; b++) rec.blocks.set(b, r.device);
    }
    if (ev.attempt === 0) {
      for (const r of ev.failed) {
        this.burst.note(`${ev.op}:${r.device}`, 'warn', `${ev.op} errors on ${r.device}`, {
          blocks: firstBlocks(r),
          count: r.blocks,
          fields: { op: ev.op, device: r.device, errno: r.errno },
        });
      }
    } else {
      this.log.debug({ op: ev.op, attempt: ev.attempt, failed: ev.failed.slice(0, 16) }, `${ev.op} failed again`);
    }
    if (!this.policy.autoRemap && !this.closed && ev.op !== 'read') {
      // Auto-remap switched off while this write was redirected: nothing will commit its redirects now, so
      // they are given up (published without REDIRECT) before it fails: else its blocks' reads park forever.
      await this.failWrite(ev, rec, rec.firstErrno);
      return;
    }
    if (!this.policy.autoRemap || this.closed) {
      this.counters.passedThrough++;
      this.resolve(ev, { action: 'fail', errno: rec.firstErrno });
      return;
    }
    // A device-wide outage is not a surface defect: hold the request until main answers.
    let suspicious = false;
    for (const r of ev.failed) if (r.device === 'main' && this.detector.failure(r.block, r.errno)) suspicious = true;
    if (this.outage.active || (suspicious && (await this.outage.confirm()))) {
      this.holdForOutage(ev, rec);
      return;
    }
    if (ev.op !== 'read' && this.writeOutageNow(ev, !multi || rec.narrowed)) {
      this.holdForWriteOutage(ev, rec);
      return;
    }
    if (ev.op === 'read') return this.readFailed(ev, rec, multi);
    return this.writeFailed(ev, rec, multi);
  }

  /**
   * Holds a request during an outage (it stays parked in native): retried whole when main answers (the
   * retry does not count against its own retries), failed with its first errno if main does not answer
   * within outageHoldMs of its first hold. Nothing is remapped or marked lost for it either way; a write
   * that fails gives up the redirects made for it earlier (back to main, slots freed) first.
   */
  private holdForOutage(ev: FaultEvent, rec: FaultRecord): void {
    rec.outage = true;
    rec.heldSince ??= Date.now();
    this.outage.hold({
      release: (mainAnswers) => {
        if (this.closed) return;
        if (mainAnswers) this.retryAfterHold(ev, rec);
        else void this.failWrite(ev, rec, rec.firstErrno);
      },
    }, rec.heldSince);
  }

  /**
   * Whether main refuses writes: a write outage goes on, or this write's failures on main complete the
   * evidence (WriteOutageDetector), which begins one. Only per-block failures are `evidence`: a multi-block
   * write that failed whole says nothing of its good blocks (its narrowed retry writes them, and a main
   * that takes those writes is not refusing writes).
   */
  private writeOutageNow(ev: FaultEvent, evidence: boolean): boolean {
    const main = ev.failed.filter((r) => r.device === 'main');
    if (main.length === 0) return false; // a failed slot write is the spare's, not main's
    if (this.writeOutage.active) return true;
    if (!evidence) return false;
    const ok = this.mainWrites().ok;
    let now = false;
    for (const r of main) if (this.writeDetector.failure(r.block, ok)) now = true;
    if (!now) return false;
    this.writeOutageOkBase = ok;
    this.writeOutage.enter();
    return true;
  }

  /**
   * Holds a write in a write outage: as holdForOutage, and it may be the one a probe retries (a retry that
   * goes through ends the outage). When its hold ends (counted from its first hold, a probe's retry
   * included: one that comes back failed after it is released at once) it is redirected as a bad sector.
   */
  private holdForWriteOutage(ev: FaultEvent, rec: FaultRecord): void {
    rec.outage = true;
    rec.heldSince ??= Date.now();
    const again = rec.writeHeld;
    rec.writeHeld = true;
    const held: Held = {
      release: (mainAnswers) => {
        if (this.closed) return;
        if (mainAnswers) {
          this.retryAfterHold(ev, rec);
        } else {
          // Narrowed first if it failed whole: only its failed blocks go to the spare.
          this.writeFailed(ev, rec, !rec.narrowed && rec.blocks.size > 1, true).catch((e: unknown) => {
            this.log.error({ err: String(e) }, 'redirecting a held write failed: it fails');
            this.resolve(ev, { action: 'fail', errno: EIO });
          });
        }
      },
      probe: () =>
        new Promise<boolean>((res) => {
          if (this.closed) return res(false);
          rec.probeDone = res;
          this.retryAfterHold(ev, rec);
        }),
    };
    this.writeOutage.hold(held, rec.heldSince, again);
  }

  /**
   * Fails a request with `errno`; a write first gives up every redirect made for it (the engine publishes
   * the table without them and frees their slots): the blocks stay on main, where the failed write may or
   * may not have landed, as a failed write allows.
   */
  private async failWrite(ev: FaultEvent, rec: FaultRecord, errno: number): Promise<void> {
    const give = new Set([...rec.redirected, ...(rec.op === 'read' ? [] : rec.blocks.keys())]);
    if (give.size > 0) await this.engine.abandonRedirects([...give]).catch((e: unknown) => this.log.error({ err: String(e) }, 'giving up redirects failed'));
    this.counters.passedThrough++;
    this.resolve(ev, { action: 'fail', errno });
  }

  /** Retries a held request whole; the retry does not count against its own tries. */
  private retryAfterHold(ev: FaultEvent, rec: FaultRecord): void {
    rec.outageRetries++;
    rec.narrowed = false;
    this.resolve(ev, { action: 'retry' });
  }

  private retry(ev: FaultEvent, rec: FaultRecord, delayMs: number): void {
    rec.narrowed = true;
    this.counters.retries++;
    const go = (): void => this.resolve(ev, { action: 'retry', narrow: true });
    if (delayMs > 0) this.later(delayMs, go);
    else go();
  }

  private async readFailed(ev: FaultEvent, rec: FaultRecord, multi: boolean): Promise<void> {
    const attempt = ev.attempt - rec.outageRetries;
    // A failure not yet narrowed to single blocks is narrowed first, even with no retries configured:
    // marking a whole request's blocks lost for one bad block would throw good data away.
    if (this.readRetryDue(attempt) || (multi && !rec.narrowed)) {
      this.retry(ev, rec, this.readBackoffMs(attempt));
      return;
    }
    const errs = await this.jobs('lost', rec);
    if (errs instanceof OutageHold) {
      this.holdForOutage(ev, rec);
      return;
    }
    if (errs instanceof ReadsNow) {
      // Every block read where it had failed when it was read once more before being marked: nothing was
      // marked; the read is tried again (once: a device that keeps failing the user's read and passing
      // ours gets the error, with nothing marked lost).
      this.log.warn({ blocks: [...rec.blocks.keys()].slice(0, 16), retried: rec.readsAgainRetried === true }, 'failed read: its blocks read again before they were marked pending; nothing marked');
      if (rec.readsAgainRetried !== true) {
        rec.readsAgainRetried = true;
        this.resolve(ev, { action: 'retry' });
      } else {
        this.resolve(ev, { action: 'fail', errno: EIO });
      }
      return;
    }
    this.counters.unrecoveredReads++;
    const blocks = [...rec.blocks.keys()];
    if (errs === null) this.burst.note('pending', 'error', 'read failed on every try: blocks marked pending (lost until written)', { blocks, fields: { tries: ev.attempt + 1 } });
    else this.log.error({ blocks: blocks.slice(0, 16), count: blocks.length, err: errs.message }, 'read failed on every try; marking the blocks pending failed');
    this.resolve(ev, { action: 'fail', errno: EIO });
  }

  /** Whether a read that failed `attempt` retries so far (its first try is 0) is tried again. */
  private readRetryDue(attempt: number): boolean {
    return attempt < this.policy.readRetries;
  }

  /** The wait before a read's retry number `attempt` (0: the first retry): retryBackoffMs, doubling. */
  private readBackoffMs(attempt: number): number {
    return this.policy.retryBackoffMs * 2 ** Math.min(attempt, 10);
  }

  /** `pastHold`: its write-outage hold ended: redirected even though the write outage goes on. */
  private async writeFailed(ev: FaultEvent, rec: FaultRecord, multi: boolean, pastHold = false): Promise<void> {
    if (multi && !rec.narrowed) {
      // After a hold the write was retried whole: narrowing it again is the outage's doing, not a try of
      // its own (a burst of bad blocks taken for a write outage several times over failed writes with EIO).
      if (rec.outage) rec.outageRetries++;
      this.retry(ev, rec, 0);
      return;
    }
    if (ev.attempt - rec.outageRetries >= MAX_WRITE_ATTEMPTS) {
      this.log.error({ attempt: ev.attempt }, 'write keeps failing after remaps: it fails');
      await this.failWrite(ev, rec, rec.firstErrno);
      return;
    }
    const err = await this.jobs('redirect', rec, pastHold);
    if (err instanceof OutageHold) {
      if (this.outage.active || !this.writeOutage.active) this.holdForOutage(ev, rec);
      else this.holdForWriteOutage(ev, rec);
      return;
    }
    if (err !== null) {
      await this.failWrite(ev, rec, rec.firstErrno);
      return;
    }
    for (const b of rec.blocks.keys()) rec.redirected.add(b);
    if (!this.policy.autoRemap) {
      // Switched off while the redirect was made: with parking off nothing would report the retry's end.
      await this.failWrite(ev, rec, rec.firstErrno);
      return;
    }
    rec.remapped = true;
    // The blocks are published REDIRECT at reserved slots now: the retry writes them there and reports
    // 'lost_written', whose commit makes the remap durable before the write is acknowledged.
    this.resolve(ev, { action: 'retry' });
  }

  /**
   * Runs a foreground job of `kind` for each of the record's failed blocks: 'lost' (committed lost at a
   * fresh slot: pending) or 'redirect' (a failed write's blocks sent to reserved slots). Null when every
   * one worked, else the first error.
   */
  private async jobs(kind: 'lost' | 'redirect', rec: Pick<FaultRecord, 'blocks'>, pastHold = false, scan = false): Promise<Error | null> {
    const errs = await Promise.all(
      [...rec.blocks].map(([block, device]) =>
        this.queue.add('foreground', kind, { block, slotFailed: device === 'spare', errorCount: this.bumpSuspect(block), pastHold, ...(scan ? { scan } : {}) }),
      ),
    );
    // ReadsNow (a block read again just before it was marked) only when it is every block's answer: with
    // others marked lost the request still fails.
    const real = errs.filter((e) => e !== null && !(e instanceof ReadsNow));
    const err = real[0] ?? (errs.length > 0 && errs.every((e) => e instanceof ReadsNow) ? errs[0] ?? null : null);
    if (err !== null && err instanceof DmrError && err.code === 'E_SPARE_FULL') {
      if (!this.spareFullSeen) this.log.error('spare full: errors now reach the user; health is critical');
      this.spareFullSeen = true;
    }
    return err;
  }

  private bumpSuspect(block: number): number {
    const n = (this.suspects.get(block) ?? 0) + 1;
    this.suspects.delete(block);
    this.suspects.set(block, n);
    if (this.suspects.size > MAX_SUSPECTS) this.suspects.delete(this.suspects.keys().next().value as number);
    return n;
  }

  private cleared(ev: ClearedEvent): void {
    const key = keyOf(ev);
    const rec = this.faults.get(key);
    this.faults.delete(key);
    // Held in an outage and through now: the outage failed it, not its blocks.
    if (rec === undefined) return;
    // A write-outage probe's retry went through: main takes writes again.
    this.settleProbe(rec, true);
    if (rec.op === 'read') {
      // The whole range read on main now: a block of it that never failed is a good probe target.
      for (let b = rec.range.block; b < rec.range.block + rec.range.blocks; b++) {
        if (!rec.blocks.has(b)) {
          this.probeTargets.noteGood(b);
          break;
        }
      }
    }
    if (rec.remapped || rec.outage) return;
    if (rec.op === 'read') {
      this.counters.recoveredReads++;
      this.health?.record({ type: 'recovered_read' });
    }
    this.recovered(rec.blocks);
  }

  /** Blocks whose read failed and a retry read: they work, for now. Relocated once they reach the threshold. */
  private recovered(blocks: ReadonlyMap<number, 'main' | 'spare'>, scan = false): void {
    for (const [block, device] of blocks) {
      const n = this.bumpSuspect(block);
      if (n < this.policy.errorThreshold || this.closed) continue;
      void this.queue.add('background', 'relocate', { block, slotFailed: device === 'spare', errorCount: n, ...(scan ? { scan } : {}) });
      this.persistSoon();
    }
  }

  /**
   * Blocks the background scan could not read (src/scan/scanner.ts names them block by block): the policy
   * of a failed user read, with the scanner's reads as the retries. In a device-wide outage nothing is
   * decided or counted ('outage': the scanner reads the chunk again later; 'closed' likewise at shutdown);
   * otherwise counted as read errors; each block is read again
   * `readRetries` times with the same backoff; a block a retry reads is recovered (relocated with its data at
   * `errorThreshold`), one that fails every try is marked pending (lost until written, reads fail with
   * EIO). Auto-remap off: only counted (a user read meets the block later). Never throws.
   */
  async scanReadFailed(
    failed: readonly ScanBlockFailure[],
    reread: (blocks: readonly number[]) => Promise<ScanBlockFailure[]>,
    halted: () => boolean = () => false,
  ): Promise<ScanFailureVerdict> {
    if (failed.length === 0) return 'handled';
    if (this.closed) return 'closed';
    // An outage first: the scanner reads the chunk again later, and counts it then (not once per try).
    let suspicious = false;
    for (const f of failed) if (f.device === 'main' && this.detector.failure(f.block, f.errno)) suspicious = true;
    if (this.outage.active || (suspicious && (await this.outage.confirm()))) return 'outage';
    // Counted once decided (not for an 'undecided' try: the scanner reads the chunk again and comes back).
    const count = (): void => {
      this.engine.countErrors('read', failed.length);
      for (const f of failed) {
        if (f.device === 'spare') this.counters.spareIoErrors++;
        this.burst.note(`scan:${f.device}`, 'warn', `scan read errors on ${f.device}`, { blocks: [f.block], fields: { op: 'scan', device: f.device, errno: f.errno } });
      }
    };
    if (!this.policy.autoRemap) {
      count();
      return 'handled';
    }
    let failing = new Map(failed.map((f) => [f.block, f.device] as [number, 'main' | 'spare']));
    const back = new Map<number, 'main' | 'spare'>();
    try {
      for (let attempt = 0; failing.size > 0 && this.readRetryDue(attempt); attempt++) {
        await this.sleep(this.readBackoffMs(attempt));
        if (this.closed) return 'closed';
        this.counters.retries++;
        const again = await reread([...failing.keys()]);
        const still = new Map(again.filter((f) => failing.has(f.block)).map((f) => [f.block, f.device] as [number, 'main' | 'spare']));
        for (const [b, d] of failing) if (!still.has(b)) back.set(b, d);
        failing = still;
      }
    } catch (e) {
      // Halted by a scan command, refused by the device, or the table kept changing: nothing is decided,
      // and the scanner reads the chunk again later (it does not move past an undecided bad block).
      const now = Date.now();
      if (!(e instanceof ScanHalted) && (this.undecidedLogAt === null || now - this.undecidedLogAt >= 10_000)) {
        this.undecidedLogAt = now;
        this.log.warn({ err: String(e) }, 'scan: re-reading failed blocks failed; nothing decided, the scan reads them again later');
      }
      return 'undecided';
    }
    if (back.size > 0) {
      this.counters.recoveredReads++;
      this.recovered(back, true);
    }
    if (failing.size === 0) {
      count();
      return 'handled';
    }
    if (this.closed) return 'closed';
    // Marked SCAN_LOST_GROUP blocks at a time (one batch each, its confirm reads side by side): a user's
    // failed write queued meanwhile runs between two groups, and a scan command waits for one group.
    const all = [...failing];
    let errs: Error | null = null;
    for (let i = 0; i < all.length; i += SCAN_LOST_GROUP) {
      if (i > 0 && (halted() || this.closed)) return this.closed ? 'closed' : 'undecided';
      const e = await this.jobs('lost', { blocks: new Map(all.slice(i, i + SCAN_LOST_GROUP)) }, false, true);
      if (e instanceof OutageHold) return 'outage';
      // Closed meanwhile: the queued job was dropped, nothing was marked; the next daemon reads it again.
      if (e !== null && this.closed) return 'closed';
      if (e !== null && !(e instanceof ReadsNow)) errs ??= e;
      if (e instanceof ReadsNow) this.log.info({ blocks: all.slice(i, i + SCAN_LOST_GROUP).map(([b]) => b) }, 'scan: blocks read again just before they were marked pending; nothing marked');
    }
    count();
    this.counters.unrecoveredReads++;
    const blocks = [...failing.keys()];
    if (errs === null) this.burst.note('pending', 'error', 'scan: blocks did not read on any try: marked pending (lost until written)', { blocks, fields: { tries: this.policy.readRetries + 1 } });
    else this.log.error({ blocks: blocks.slice(0, 16), count: blocks.length, err: errs.message }, 'scan: marking unreadable blocks pending failed');
    return 'handled';
  }

  /** A block the scan found slow `slow_threshold` times: relocated with its data, as a recovered read's block is. */
  scanSlowBlock(block: number, device: 'main' | 'spare'): void {
    if (this.closed || !this.policy.autoRemap) return;
    void this.queue.add('background', 'relocate', { block, slotFailed: device === 'spare', errorCount: this.bumpSuspect(block), scan: true });
    this.persistSoon();
  }

  /**
   * Pending blocks a scan pass came to: read again on main (recheck of the blocks auto-remap or the scan
   * marked; not during an outage, nor with auto-remap off); those that read go back to main. Never throws.
   */
  async scanPendingSeen(blocks: readonly number[]): Promise<void> {
    if (this.closed || !this.policy.autoRemap || this.outage.active || blocks.length === 0) return;
    try {
      const r = await this.recheck(blocks, true);
      const back = r.filter((x) => x.result === 'recovered').map((x) => x.block);
      if (back.length > 0) this.log.info({ blocks: back.slice(0, 16), count: back.length }, 'scan: pending blocks read on main again and are back there');
    } catch (e) {
      this.log.warn({ err: String(e) }, 'scan: rechecking pending blocks failed');
    }
  }

  /** The scanner's sink: what a scan finds goes through this policy. */
  scanSink(): ScanFindingsSink {
    return {
      readFailed: (f, r, h) => this.scanReadFailed(f, r, h),
      slowBlock: (b, d) => this.scanSlowBlock(b, d),
      pendingSeen: (b) => this.scanPendingSeen(b),
    };
  }

  /** Waits `ms` (cut short by close). */
  private sleep(ms: number): Promise<void> {
    if (ms <= 0 || this.closed) return Promise.resolve();
    return new Promise((res) => {
      const wake = (): void => {
        this.wakers.delete(wake);
        res();
      };
      this.wakers.add(wake);
      this.later(ms, wake);
    });
  }

  private async runBatch(group: string, jobs: Array<{ kind: string; item: Job }>): Promise<Map<string, Error | null>> {
    const out = new Map<string, Error | null>();
    const put = (kind: string, m: Map<number, Error | null>): void => {
      for (const [b, e] of m) out.set(jobKey(kind, b), e);
    };
    const items = (kind: string): Job[] => jobs.filter((j) => j.kind === kind).map((j) => j.item);
    switch (group) {
      case 'lost': {
        // The last check before blocks are marked lost: main must answer a probe (faults being narrowed
        // when an outage began end up here; they are held, not marked).
        if (await this.outage.confirm()) {
          for (const it of items('lost')) out.set(jobKey('lost', it.block), new OutageHold('main is in an outage'));
          return out;
        }
        put('lost', await this.engine.markLost(items('lost').map((it) => ({ block: it.block, slotFailed: it.slotFailed, errorCount: it.errorCount, origin: it.scan === true ? 'scan' : 'auto', confirm: true }))));
        return out;
      }
      case 'write': {
        // No remap during an outage: the failed writes are held; writes already in slots are committed.
        // A write outage holds only writes that failed on main (a failed slot moves to a fresh one) and
        // whose hold has not ended yet.
        const all = items('redirect');
        let held = all.filter((it) => this.writeOutage.active && !it.slotFailed && it.pastHold !== true);
        let redirect = all.filter((it) => !held.includes(it));
        if (redirect.length > 0 && (await this.outage.confirm())) {
          held = all;
          redirect = [];
        }
        for (const it of held) out.set(jobKey('redirect', it.block), new OutageHold('main is in an outage'));
        const slotWrites = items('slot-write').map((i) => ({ block: i.block, slot: i.slot ?? -1 }));
        const r = await this.engine.writeBatch(redirect, slotWrites);
        put('redirect', r.redirected);
        for (const x of r.redrive) out.set(jobKey('slot-write', x.block, x.slot), new RedriveWrite(`block ${x.block} left slot ${x.slot}`));
        if (r.commitError !== null) for (const x of slotWrites) out.set(jobKey('slot-write', x.block, x.slot), r.commitError);
        return out;
      }
      case 'relocate': {
        if (this.outage.active) return out; // main does not answer: the block comes back at its next error
        const { readRetries, retryBackoffMs } = this.policy;
        for (const it of items('relocate')) {
          const r = await this.engine.relocate(it.block, it.slotFailed, it.errorCount, readRetries + 1, retryBackoffMs, it.scan === true ? 'scan' : 'auto');
          if (r === 'relocated') {
            this.counters.relocations++;
            this.suspects.delete(it.block);
            this.log.info({ block: it.block, from: it.slotFailed ? 'spare' : 'main' }, 'block relocated after a recovered error');
          } else if (r === 'unreadable') {
            this.counters.relocationFailures++;
            this.log.warn({ block: it.block }, 'relocation failed: the block did not read; it stays where it is');
          }
        }
        return out;
      }
      default:
        throw new DmrError('E_INTERNAL', `unknown job group ${group}`);
    }
  }
}
