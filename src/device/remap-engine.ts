// The remap engine inside the daemon: the remap store on the spare (opened before the ublk device starts),
// the table the native data path consults, and the online manual operations remap / unremap / verify.
//
// Order of a manual remap (DESIGN.md invariants 2-4): reserve a slot → publish the block as MOVING (I/O
// touching it now waits in native) → drain (no earlier I/O still touches it) → copy main block → slot →
// flush the spare → commit the remap (journal write + flush) → publish it mapped. A main read failure
// during the copy commits the block as `lost` and publishes it LOST (reads fail, never stale data). Any
// other failure before the commit gives the slot back and publishes the table without the block.
// Operations run one at a time (a second request waits for the first).
import { DmrError, errnoName, errorCodeOf } from '../errors.js';
import type { BackingRole, NativeDevice, NativeEvent } from '../native.js';
import { isNativeError, REMAP_FLAG_LOST, REMAP_FLAG_MOVING, REMAP_FLAG_REMOVE } from '../native.js';
import type { Logger } from '../log.js';
import {
  RemapStore,
  remapBlock,
  slotOffset,
  type SpareIo,
  unremapBlock,
  type LoadReport,
  type MainIdentity,
  type RemapEntry,
  type RemapOp,
} from '../remap/index.js';
import { JOURNAL_RECORD_SIZE, MIN_JOURNAL_RECORDS, DEFAULT_JOURNAL_RECORDS } from '../remap/geometry.js';

export const SECTOR = 512;

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
   * main-stale: lost, but main's copy is not known to be its last data (see lastDataOnMain): it stays lost.
   */
  result: 'recovered' | 'unreadable' | 'not-lost' | 'main-stale';
  errno: string | null;
}

export interface TableEntryOut {
  block: number;
  sector: number;
  slot: number;
  state: 'mapped' | 'lost';
  origin: 'manual' | 'auto';
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
}

/** A write's data for `block` went to spare slot `slot` (from a 'lost_written' report). */
export interface SlotWrite {
  block: number;
  slot: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function isReadFailure(e: unknown): boolean {
  return isNativeError(e) && e.command.startsWith('read');
}

function ioFailure(e: unknown, doing: string): DmrError {
  if (e instanceof DmrError) return e;
  const code = errorCodeOf(e);
  const msg = e instanceof Error ? e.message : String(e);
  return new DmrError('E_IO', `${doing}: ${msg}${code !== undefined && !msg.includes(code) ? ` (${code})` : ''}`, { cause: e });
}

/** A provisional or moving block as published over the committed table. */
interface Overlay {
  slot: number;
  flags: number;
  /** Provisional (a redirected write's reserved slot), possibly moving too. */
  provisional: boolean;
}

export class RemapEngine {
  private device: NativeDevice | null = null;
  /** Blocks being moved right now (published MOVING), block → slot. */
  private readonly moving = new Map<number, number>();
  /**
   * Blocks whose failed write is being redirected to a reserved slot, not committed yet (published LOST:
   * the retried write lands in the slot, reads fail). Committed `mapped` when the write reports its data
   * in the slot; dropped (the block is back on main, the slot free) if the write fails for good.
   */
  private readonly provisional = new Map<number, { slot: number; errorCount: number }>();
  /**
   * Lost blocks whose last data is on main (marked lost because main could not read them, not because
   * their slot failed): the only ones recheck may return to main. Kept in memory: a block marked lost
   * before this daemon started is not known to be one (its data may have been in a slot that failed, with
   * main holding older data), so recheck leaves it lost.
   */
  private readonly lastDataOnMain = new Set<number>();
  /** The overlay (provisional and moving blocks) as last published, block → entry. */
  private publishedOverlay = new Map<number, Overlay>();
  /** The next publish sends the whole table (first publish, or a failed update left native unknown). */
  private publishAll = true;
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
  ) {}

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
    this.device = device;
    this.publishAll = true;
    this.publish();
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
    return this.serial(() => this.doRemap(sector, block));
  }

  unremap(sector: number): Promise<{ sector: number; block: number; slot: number }> {
    const block = this.blockOf(sector);
    return this.serial(() => this.doUnremap(sector, block));
  }

  async verify(sector: number): Promise<VerifyResult> {
    const block = this.blockOf(sector);
    const e = this.store.table.get(block);
    const mainOff = block * this.blockSize;
    if (this.moving.has(block) || this.provisional.has(block)) {
      return { sector, block, state: 'moving', device: e ? 'spare' : 'main', slot: e?.slot ?? null, offset: e ? this.store.allocator.offsetOf(e.slot) : mainOff, readable: false, errno: null };
    }
    if (e?.state === 'lost') {
      // Its data is gone: the device fails reads of it with EIO until it is written.
      return { sector, block, state: 'lost', device: 'spare', slot: e.slot, offset: this.store.allocator.offsetOf(e.slot), readable: false, errno: 'EIO' };
    }
    const device: BackingRole = e ? 'spare' : 'main';
    const offset = e ? this.store.allocator.offsetOf(e.slot) : mainOff;
    let errno: string | null = null;
    try {
      await this.dev().readRange(device, BigInt(offset), this.blockSize);
    } catch (err) {
      errno = errorCodeOf(err) ?? (isNativeError(err) ? errnoName(err.errno) : 'EIO');
    }
    return { sector, block, state: e ? 'mapped' : 'unmapped', device, slot: e?.slot ?? null, offset, readable: errno === null, errno };
  }

  table(offset: number, limit: number): { total: number; offset: number; entries: TableEntryOut[] } {
    const keys = this.store.table.sortedBlocks();
    const entries: TableEntryOut[] = [];
    const end = Math.min(keys.length, offset + limit);
    for (let i = offset; i < end; i++) {
      const block = keys[i] as number;
      const e = this.store.table.get(block) as RemapEntry;
      entries.push({
        block,
        sector: (block * this.blockSize) / SECTOR,
        slot: e.slot,
        state: e.state,
        origin: e.origin,
        time: e.time,
        errorCount: e.errorCount,
      });
    }
    return { total: keys.length, offset, entries };
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

  /**
   * Makes each block `lost` (origin auto) at a slot of its own, in one batch: the blocks are published
   * MOVING and drained first (no request still in flight touches them), then one journal commit, then the
   * table is published with them LOST. A block on main gets a fresh slot; a block whose slot failed
   * (`slotFailed`) moves to a fresh slot and the bad slot is retired. A block already lost (and not with a
   * failed slot) is left as it is. Resolves per block with null (done) or the error (E_SPARE_FULL when no
   * slot is free, E_IO when the commit failed).
   */
  markLost(items: ReadonlyArray<FaultItem>): Promise<Map<number, DmrError | null>> {
    return this.serial(() => this.doMarkLost(items));
  }

  /**
   * Redirects failed writes (issue 6): each block on main gets a reserved slot and is published LOST
   * without a commit (a crash now leaves it on main, where the write never completed: nothing acknowledged
   * depends on it); the caller retries the write, which lands in the slot, and doCommitSlotWrites() then commits the
   * remap. No drain is needed: a write still in flight to the block on main is concurrent with the one
   * being redirected, so either's data is a valid result, and the redirected one completes last. A
   * provisional block whose slot failed gets another slot (the bad one is retired); a committed block whose
   * slot failed moves like markLost(). A block redirected or remapped meanwhile needs nothing.
   */
  private async doRedirect(items: ReadonlyArray<FaultItem>): Promise<{ out: Map<number, DmrError | null>; changed: boolean }> {
    const out = new Map<number, DmrError | null>();
    const committedBadSlots: FaultItem[] = [];
    const retire: RemapOp[] = [];
    let changed = false;
    for (const it of items) {
      const p = this.provisional.get(it.block);
      const e = this.store.table.get(it.block);
      if (p === undefined && e !== undefined) {
        if (it.slotFailed) committedBadSlots.push(it);
        else out.set(it.block, null);
        continue;
      }
      if (p !== undefined && !it.slotFailed) {
        out.set(it.block, null);
        continue;
      }
      const slot = await this.reserveFor(it.block, out);
      if (slot === null) continue;
      // The failed slot stays reserved until every block of the batch has its new slot: given back now,
      // it would be the next reserve's lowest free slot, handed to another block, and refused by retire.
      if (p !== undefined) retire.push({ op: 'retire', slot: p.slot });
      this.provisional.set(it.block, { slot, errorCount: it.errorCount });
      changed = true;
      out.set(it.block, null);
    }
    if (retire.length > 0) {
      for (const r of retire) if (r.op === 'retire') await this.store.unreserveSlot(r.slot);
      // A slot that failed a write is never used again (committed: a restart must not hand it out).
      await this.store.commitBatch(retire).catch((err: unknown) => this.log.error({ err: String(err) }, 'cannot retire failed spare slots'));
    }
    if (committedBadSlots.length > 0) {
      if (changed) this.publish(); // doMarkLost publishes the table it moves blocks in
      for (const [b, r] of await this.doMarkLost(committedBadSlots)) out.set(b, r);
    }
    return { out, changed };
  }

  /** The redirected writes to `blocks` failed for good: they go back to main and their slots are freed. */
  abandonRedirects(blocks: readonly number[]): Promise<void> {
    return this.serial(async () => {
      let changed = false;
      for (const b of blocks) {
        const p = this.provisional.get(b);
        if (p === undefined) continue;
        this.provisional.delete(b);
        await this.store.unreserveSlot(p.slot).catch(() => undefined);
        changed = true;
      }
      if (changed) this.publish();
    });
  }

  /** Reserves a slot for `block`; on failure (E_SPARE_FULL, ...) records the error in `out` and gives null. */
  private async reserveFor(block: number, out: Map<number, DmrError | null>): Promise<number | null> {
    try {
      return await this.store.reserveSlot();
    } catch (err) {
      out.set(block, err instanceof DmrError ? err : ioFailure(err, 'reserving a spare slot failed'));
      return null;
    }
  }

  private async doMarkLost(items: ReadonlyArray<FaultItem>): Promise<Map<number, DmrError | null>> {
    const out = new Map<number, DmrError | null>();
    const todo: Array<{ block: number; slot: number; oldSlot: number | null; errorCount: number }> = [];
    for (const it of items) {
      if (out.has(it.block) || todo.some((t) => t.block === it.block)) continue;
      const e = this.store.table.get(it.block);
      if (e !== undefined && !it.slotFailed) {
        out.set(it.block, null); // already lost, or remapped since the failure: its retry goes to the slot
        continue;
      }
      if (e === undefined && it.slotFailed) {
        out.set(it.block, null); // unremapped since: the retry goes to main
        continue;
      }
      const slot = await this.reserveFor(it.block, out);
      if (slot === null) continue;
      todo.push({ block: it.block, slot, oldSlot: e?.slot ?? null, errorCount: it.errorCount });
    }
    if (todo.length === 0) return out;
    const moving = new Map(todo.map((t) => [t.block, t.oldSlot ?? t.slot] as [number, number]));
    let committed = false;
    try {
      await this.startMoving(moving);
      const ops: RemapOp[] = [];
      for (const t of todo) {
        if (t.oldSlot === null) {
          ops.push({ op: 'remap', block: t.block, slot: t.slot, origin: 'auto', lost: true, errorCount: t.errorCount });
        } else {
          ops.push({ op: 'move', block: t.block, slot: t.slot }, { op: 'retire', slot: t.oldSlot });
          if (this.store.table.get(t.block)?.state !== 'lost') ops.push({ op: 'lost', block: t.block });
        }
      }
      await this.store.commitBatch(ops);
      committed = true;
      this.countersDirty = false;
      for (const t of todo) {
        out.set(t.block, null);
        if (t.oldSlot === null) this.lastDataOnMain.add(t.block); // a slot-failed one keeps what it was
      }
    } catch (err) {
      const e = ioFailure(err, 'committing lost blocks failed');
      for (const t of todo) out.set(t.block, e);
    } finally {
      if (!committed) {
        for (const t of todo) if (this.store.allocator.isReserved(t.slot)) await this.store.unreserveSlot(t.slot).catch(() => undefined);
      }
      this.endMoving(moving.keys());
    }
    return out;
  }

  /**
   * Writes put their new data in spare slots (native reported them 'lost_written', each block with the slot
   * its data went to): commit those the table still places at that slot (one journal write + flush, which
   * also makes the slot data durable): a redirected block (provisional at that slot) as remapped, a lost
   * block at that slot as mapped; a block already mapped there needs only the flush. A block the table now
   * places elsewhere (its slot failed and it moved, another redirect) or nowhere (its redirect was abandoned,
   * the slot freed) is not committed: its write must be driven again to land where the table says
   * (`redrive`). Rejects on a commit failure: lost blocks stay lost, redirected ones go back to main, and the
   * writes must fail. `changed`: the table to publish changed.
   */
  private async doCommitSlotWrites(writes: ReadonlyArray<SlotWrite>): Promise<{ changed: boolean; redrive: SlotWrite[] }> {
    const ops: RemapOp[] = [];
    const redirected: Array<{ block: number; slot: number }> = [];
    const redrive: SlotWrite[] = [];
    const seen = new Set<string>();
    for (const w of writes) {
      const key = `${w.block}@${w.slot}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const p = this.provisional.get(w.block);
      const e = this.store.table.get(w.block);
      if (p !== undefined && p.slot === w.slot) {
        ops.push({ op: 'remap', block: w.block, slot: w.slot, origin: 'auto', errorCount: p.errorCount });
        redirected.push({ block: w.block, slot: w.slot });
      } else if (p === undefined && e !== undefined && e.slot === w.slot) {
        if (e.state === 'lost') ops.push({ op: 'mapped', block: w.block });
      } else {
        redrive.push(w);
      }
    }
    try {
      if (ops.length > 0) {
        await this.store.commitBatch(ops);
        this.countersDirty = false;
        for (const op of ops) if (op.op === 'mapped' || op.op === 'remap') this.lastDataOnMain.delete(op.block);
      } else if (redrive.length < seen.size) {
        await this.dev().flush('spare');
      }
    } catch (err) {
      throw ioFailure(err, 'committing writes in spare slots failed');
    } finally {
      // Committed: the entries replace the overlay. Not committed: the writes fail, and the redirected
      // blocks go back to main (their write never completed there either).
      for (const r of redirected) {
        const p = this.provisional.get(r.block);
        if (p?.slot !== r.slot) continue;
        this.provisional.delete(r.block);
        if (this.store.allocator.isReserved(p.slot)) await this.store.unreserveSlot(p.slot).catch(() => undefined);
      }
    }
    return { changed: ops.length > 0 || redirected.length > 0, redrive };
  }

  /**
   * One batch of failed-write work: commits the writes that have their data in spare slots
   * (doCommitSlotWrites), redirects newly failed writes (doRedirect), then publishes once. Resolves with
   * each redirect's outcome, the writes to drive again (their slot is no longer the block's) and the
   * commit's error, if it failed (those writes must fail).
   */
  writeBatch(
    redirects: ReadonlyArray<FaultItem>,
    slotWrites: ReadonlyArray<SlotWrite>,
  ): Promise<{ redirected: Map<number, DmrError | null>; redrive: SlotWrite[]; commitError: DmrError | null }> {
    return this.serial(async () => {
      let commitError: DmrError | null = null;
      let redrive: SlotWrite[] = [];
      let changed = false;
      if (slotWrites.length > 0) {
        try {
          const c = await this.doCommitSlotWrites(slotWrites);
          changed = c.changed;
          redrive = c.redrive;
        } catch (e) {
          commitError = e instanceof DmrError ? e : ioFailure(e, 'committing writes in spare slots failed');
          changed = true;
        }
      }
      const r = redirects.length > 0 ? await this.doRedirect(redirects) : { out: new Map<number, DmrError | null>(), changed: false };
      if (changed || r.changed) this.publish();
      return { redirected: r.out, redrive, commitError };
    });
  }

  /**
   * Relocates a block whose read failed and then succeeded on a retry: from main to a fresh slot (origin
   * auto), or from a failing slot to a fresh one (the old slot is retired). The copy is tried `tries` times;
   * if it never reads, the block stays where it is ('unreadable': it keeps serving from there and the next
   * error reports it again). 'skipped' when the block's place changed meanwhile.
   */
  relocate(block: number, fromSpare: boolean, errorCount: number, tries: number, backoffMs: number): Promise<'relocated' | 'unreadable' | 'skipped'> {
    return this.serial(async () => {
      const dev = this.dev();
      const e = this.store.table.get(block);
      if (fromSpare ? e === undefined || e.state !== 'mapped' : e !== undefined) return 'skipped';
      const copyWithRetries = async (from: BackingRole, fromOff: number, toOff: number): Promise<boolean> => {
        for (let i = 0; i < Math.max(1, tries); i++) {
          if (i > 0) await sleep(backoffMs * 2 ** (i - 1));
          try {
            await dev.copyRange(from, BigInt(fromOff), 'spare', BigInt(toOff), this.blockSize);
            return true;
          } catch (err) {
            if (!isReadFailure(err)) throw ioFailure(err, `relocating block ${block} failed`);
          }
        }
        return false;
      };
      if (!fromSpare) {
        let unreadable = false;
        try {
          await remapBlock(this.store, block, 'auto', {
            copy: async (_b, slot, offset) => {
              await this.startMoving(new Map([[block, slot]]));
              if (await copyWithRetries('main', block * this.blockSize, offset)) return 'copied';
              unreadable = true;
              throw new DmrError('E_IO', `block ${block} did not read in ${tries} tries`);
            },
            flushSpare: () => dev.flush('spare'),
          }, errorCount);
          this.countersDirty = false;
          return 'relocated';
        } catch (err) {
          if (unreadable) return 'unreadable';
          throw err;
        } finally {
          this.endMoving([block]);
        }
      }
      const old = (e as RemapEntry).slot;
      const slot = await this.store.reserveSlot();
      let committed = false;
      try {
        await this.startMoving(new Map([[block, old]]));
        if (!(await copyWithRetries('spare', this.store.allocator.offsetOf(old), this.store.allocator.offsetOf(slot)))) return 'unreadable';
        await dev.flush('spare');
        await this.store.commitBatch([
          { op: 'move', block, slot },
          { op: 'retire', slot: old },
          { op: 'errors', block, errorCount },
        ]);
        committed = true;
        this.countersDirty = false;
        return 'relocated';
      } finally {
        if (!committed && this.store.allocator.isReserved(slot)) await this.store.unreserveSlot(slot).catch(() => undefined);
        this.endMoving([block]);
      }
    });
  }

  /**
   * Re-reads lost blocks on main (`blocks`, or every lost block; with `autoOnly`, only those auto-remap
   * marked pending): a block whose main copy reads now holds its last data there (nothing was written
   * since: a write would have made it mapped), so it returns to main: published MOVING and drained (no
   * request touches it meanwhile), read again, then one journal commit removes the entries and frees their
   * slots, and the table is published. A block that still does not read stays lost. A write that landed
   * in the slot of a block returned meanwhile is driven again to main (doCommitSlotWrites).
   */
  recheck(blocks: readonly number[] | null, autoOnly = false): Promise<RecheckResult[]> {
    return this.serial(async () => {
      const dev = this.dev();
      const out: RecheckResult[] = [];
      const candidates: number[] = [];
      const consider = (b: number, listed: boolean): void => {
        const e = this.store.table.get(b);
        if (e?.state !== 'lost' || this.provisional.has(b)) {
          if (listed) out.push({ block: b, result: 'not-lost', errno: null });
        } else if (autoOnly && e.origin !== 'auto') {
          // not asked for
        } else if (!this.lastDataOnMain.has(b)) {
          out.push({ block: b, result: 'main-stale', errno: null });
        } else {
          candidates.push(b);
        }
      };
      if (blocks === null) {
        const all = [...this.store.table.entries()].filter(([, e]) => e.state === 'lost').map(([b]) => b);
        for (const b of all.sort((a, b) => a - b)) consider(b, false);
      } else {
        for (const b of new Set(blocks)) consider(b, true);
      }
      const readMain = async (b: number): Promise<string | null> => {
        try {
          await dev.readRange('main', BigInt(b) * BigInt(this.blockSize), this.blockSize);
          return null;
        } catch (err) {
          if (!isNativeError(err)) throw ioFailure(err, `reading block ${b} of main failed`);
          return errorCodeOf(err) ?? (isNativeError(err) ? errnoName(err.errno) : 'EIO');
        }
      };
      const readable: number[] = [];
      for (const b of candidates) {
        const errno = await readMain(b);
        if (errno === null) readable.push(b);
        else out.push({ block: b, result: 'unreadable', errno });
      }
      if (readable.length === 0) return out;
      const moving = new Map(readable.map((b) => [b, (this.store.table.get(b) as RemapEntry).slot] as [number, number]));
      try {
        await this.startMoving(moving);
        const back: number[] = [];
        for (const b of readable) {
          const e = this.store.table.get(b);
          if (e?.state !== 'lost') {
            out.push({ block: b, result: 'not-lost', errno: null }); // written (mapped) before it was MOVING
            continue;
          }
          const errno = await readMain(b);
          if (errno === null) back.push(b);
          else out.push({ block: b, result: 'unreadable', errno });
        }
        if (back.length > 0) {
          try {
            await this.store.commitBatch(back.map((block) => ({ op: 'unremap', block }) as RemapOp));
          } catch (err) {
            throw ioFailure(err, 'committing rechecked blocks failed');
          }
          this.countersDirty = false;
          for (const b of back) {
            this.lastDataOnMain.delete(b);
            out.push({ block: b, result: 'recovered', errno: null });
          }
          this.log.info({ blocks: back.slice(0, 16), count: back.length }, 'lost blocks read again on main: back on main, slots freed');
        }
      } finally {
        this.endMoving(moving.keys());
      }
      return out;
    });
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

  private dev(): NativeDevice {
    if (this.device === null) throw new DmrError('E_INTERNAL', 'the remap engine has no device attached');
    return this.device;
  }

  /**
   * Publishes the committed table to the native index, overlaid with the writes being redirected
   * (`provisional`, flagged LOST: a write goes to the slot, a read fails) and the blocks being moved
   * (`moving`, flagged MOVING: requests touching them wait in native; added at their slot where a block has
   * no entry yet). Sends only what changed since the last publish (the table's changed blocks and the
   * old and new overlays, a batch's worth), so a publish costs O(changes) here whatever the table's size.
   */
  private publish(): void {
    const changes = this.store.table.takeChanges();
    const overlay = this.overlay();
    if (this.publishAll || changes === 'all') {
      this.publishAll = true; // until the whole table is in place
      this.publishWhole(overlay);
      this.publishAll = false;
      this.publishedOverlay = overlay;
      return;
    }
    const dirty = new Set<number>(changes);
    for (const b of this.publishedOverlay.keys()) dirty.add(b);
    for (const b of overlay.keys()) dirty.add(b);
    if (dirty.size === 0) return;
    try {
      this.dev().updateRemapTable(...this.entriesOf(Float64Array.from(dirty).sort(), overlay));
    } catch (e) {
      this.publishAll = true; // what native holds is unknown now: the next publish sends everything
      throw e;
    }
    this.publishedOverlay = overlay;
  }

  /** The provisional and moving blocks as published: provisional LOST at its new slot, moving MOVING. */
  private overlay(): Map<number, Overlay> {
    const over = new Map<number, Overlay>();
    for (const [b, p] of this.provisional) over.set(b, { slot: p.slot, flags: REMAP_FLAG_LOST, provisional: true });
    for (const [b, slot] of this.moving) {
      const p = over.get(b);
      over.set(b, { slot: p?.slot ?? slot, flags: REMAP_FLAG_MOVING, provisional: p !== undefined });
    }
    return over;
  }

  /**
   * What the native index holds for `block`: the committed entry with an overlaid block's flags added (its
   * committed slot kept unless it is provisional, LOST at its new slot), the overlay alone where the block
   * has no entry, null where it has neither.
   */
  private publishedEntry(block: number, overlay: Map<number, Overlay>): { slot: number; flags: number } | null {
    const e = this.store.table.get(block);
    const o = overlay.get(block);
    if (e === undefined) return o === undefined ? null : { slot: o.slot, flags: o.flags };
    const lost = e.state === 'lost' ? REMAP_FLAG_LOST : 0;
    if (o === undefined) return { slot: e.slot, flags: lost };
    return { slot: o.provisional ? o.slot : e.slot, flags: lost | o.flags };
  }

  /** Publishes the whole table with `overlay` (on attach; O(table)). */
  private publishWhole(overlay: Map<number, Overlay>): void {
    const t = this.store.table.exportSorted();
    if (overlay.size === 0) {
      this.dev().setRemapTable(t.blocks, t.slots, Uint8Array.from(t.lost, (l) => (l ? REMAP_FLAG_LOST : 0)));
      return;
    }
    const order = Float64Array.from(new Set([...t.blocks].map(Number).concat([...overlay.keys()]))).sort();
    this.dev().setRemapTable(...this.entriesOf(order, overlay));
  }

  /** The published entries of `order` (ascending blocks) as the native index takes them; REMOVE where a block has none. */
  private entriesOf(order: Float64Array, overlay: Map<number, Overlay>): [BigUint64Array, BigUint64Array, Uint8Array] {
    const n = order.length;
    const blocks = new BigUint64Array(n);
    const slots = new BigUint64Array(n);
    const flags = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const b = order[i] as number;
      const e = this.publishedEntry(b, overlay);
      blocks[i] = BigInt(b);
      slots[i] = BigInt(e?.slot ?? 0);
      flags[i] = e === null ? REMAP_FLAG_REMOVE : e.flags;
    }
    return [blocks, slots, flags];
  }

  /** Publishes `moving` (block → slot) as MOVING and waits until no request dispatched before touches them. */
  private async startMoving(moving: Map<number, number>): Promise<void> {
    for (const [b, slot] of moving) this.moving.set(b, slot);
    this.publish();
    await this.dev().drain();
  }

  /** Ends the moves of `blocks` and publishes the committed table (with any other moves still going on). */
  private endMoving(blocks: Iterable<number>): void {
    let any = false;
    for (const b of blocks) any = this.moving.delete(b) || any;
    if (any) this.publish();
  }

  private async doRemap(sector: number, block: number): Promise<RemapResult> {
    const dev = this.dev();
    if (this.provisional.has(block)) {
      throw new DmrError('E_REMAP_STATE', `sector ${sector} (block ${block}) is being remapped automatically (a failed write is redirected to the spare)`);
    }
    let readErrno: string | null = null;
    try {
      const op = await remapBlock(this.store, block, 'manual', {
        copy: async (_b, slot, offset) => {
          await this.startMoving(new Map([[block, slot]]));
          try {
            await dev.copyRange('main', BigInt(block * this.blockSize), 'spare', BigInt(offset), this.blockSize);
            return 'copied';
          } catch (e) {
            if (!isReadFailure(e)) throw ioFailure(e, `copying block ${block} to spare slot ${slot} failed`);
            readErrno = errorCodeOf(e) ?? 'EIO';
            this.log.warn({ block, slot, errno: readErrno }, 'main block unreadable: remapped as lost');
            return 'unreadable';
          }
        },
        flushSpare: () => dev.flush('spare').catch((e: unknown) => Promise.reject(ioFailure(e, 'flushing the spare failed'))),
      });
      this.countersDirty = false;
      if (op.lost) this.lastDataOnMain.add(block);
      this.log.info({ block, slot: op.slot, lost: op.lost }, 'block remapped');
      return { sector, block, slot: op.slot, state: op.lost ? 'lost' : 'mapped', readErrno };
    } finally {
      // Committed: the entry (mapped or lost) replaces MOVING. Not committed: the block is back on main.
      // (Refused before anything was published: nothing to undo.)
      this.endMoving([block]);
    }
  }

  private async doUnremap(sector: number, block: number): Promise<{ sector: number; block: number; slot: number }> {
    const dev = this.dev();
    const e = this.store.table.get(block);
    if (e === undefined) throw new DmrError('E_REMAP_STATE', `sector ${sector} (block ${block}) is not remapped`);
    if (e.state === 'lost') {
      throw new DmrError(
        'E_REMAP_STATE',
        `sector ${sector} (block ${block}) is lost: its data is gone, and moving it back would make main's stale contents readable; write the block first`,
      );
    }
    try {
      await unremapBlock(this.store, block, {
        copyBack: async (_b, slot, offset) => {
          await this.startMoving(new Map([[block, slot]]));
          await dev
            .copyRange('spare', BigInt(offset), 'main', BigInt(block * this.blockSize), this.blockSize)
            .catch((err: unknown) => Promise.reject(ioFailure(err, `copying spare slot ${slot} back to block ${block} failed`)));
        },
        flushMain: () => dev.flush('main').catch((err: unknown) => Promise.reject(ioFailure(err, 'flushing main failed'))),
      });
      this.countersDirty = false;
      this.log.info({ block, slot: e.slot }, 'block unremapped');
      return { sector, block, slot: e.slot };
    } finally {
      this.endMoving([block]);
    }
  }
}
