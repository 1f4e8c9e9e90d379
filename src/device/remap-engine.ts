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
import { isNativeError, REMAP_FLAG_LOST, REMAP_FLAG_MOVING } from '../native.js';
import type { Logger } from '../log.js';
import {
  FileSpareIo,
  RemapStore,
  remapBlock,
  slotOffset,
  unremapBlock,
  type LoadReport,
  type MainIdentity,
  type RemapEntry,
} from '../remap/index.js';
import { JOURNAL_RECORD_SIZE, MIN_JOURNAL_RECORDS, DEFAULT_JOURNAL_RECORDS } from '../remap/geometry.js';

export const SECTOR = 512;

export interface EngineOptions {
  sparePath: string;
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

/** A 512-byte sector number given as a JSON number or decimal text; E_USAGE when it is not one. */
export function parseSector(s: string): number {
  if (!/^[0-9]{1,16}$/.test(s)) throw new DmrError('E_USAGE', `sector must be a whole number of 512-byte sectors, got ${JSON.stringify(s)}`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new DmrError('E_USAGE', `sector ${s} is too large`);
  return n;
}

function isReadFailure(e: unknown): boolean {
  return isNativeError(e) && e.command.startsWith('read');
}

function ioFailure(e: unknown, doing: string): DmrError {
  if (e instanceof DmrError) return e;
  const code = errorCodeOf(e);
  const msg = e instanceof Error ? e.message : String(e);
  return new DmrError('E_IO', `${doing}: ${msg}${code !== undefined && !msg.includes(code) ? ` (${code})` : ''}`, { cause: e });
}

export class RemapEngine {
  private device: NativeDevice | null = null;
  /** The block being moved right now (published MOVING), if any. */
  private moving: number | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  /** Error totals changed since the last commit (persisted at the next commit or on close). */
  private countersDirty = false;
  private closing = false;

  private constructor(
    readonly store: RemapStore,
    private readonly io: FileSpareIo,
    readonly report: LoadReport,
    readonly blockSize: 512 | 4096,
    readonly deviceBytes: bigint,
    private readonly log: Logger,
  ) {}

  /** Opens (or formats) the spare's metadata. Refusals are typed errors and leave the spare untouched. */
  static async open(o: EngineOptions): Promise<RemapEngine> {
    const io = await FileSpareIo.open(o.sparePath);
    try {
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
    } catch (e) {
      await io.close().catch(() => undefined);
      throw e;
    }
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
    this.publish();
  }

  /** Counts a backing I/O error (persisted with the next commit and on close). */
  recordIoError(ev: Extract<NativeEvent, { type: 'io_error' }>): void {
    const c = this.store.counters();
    if (ev.op === 'read') this.store.setCounters({ readErrors: c.readErrors + 1 });
    else this.store.setCounters({ writeErrors: c.writeErrors + 1 });
    this.countersDirty = true;
  }

  /** Persists pending counters and waits for every commit; then closes the spare. Call after the device stopped. */
  async close(): Promise<void> {
    await this.chain.catch(() => undefined);
    if (this.countersDirty) {
      await this.store.commitBatch([]).catch((e: unknown) => this.log.error({ err: String(e) }, 'cannot persist the error counters'));
    }
    await this.store.idle();
    await this.io.close().catch(() => undefined);
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
    if (this.moving === block) {
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
   * Publishes the committed table to the native index, with `moving` (if given) flagged MOVING at `slot`
   * (added when the block has no entry yet).
   */
  private publish(moving?: { block: number; slot: number }): void {
    const t = this.store.table.exportSorted();
    let { blocks, slots } = t;
    let flags = Uint8Array.from(t.lost, (l) => (l ? REMAP_FLAG_LOST : 0));
    if (moving !== undefined) {
      const b = BigInt(moving.block);
      let lo = 0;
      let hi = t.count;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if ((blocks[mid] as bigint) < b) lo = mid + 1;
        else hi = mid;
      }
      if (lo < t.count && blocks[lo] === b) {
        flags[lo] = (flags[lo] as number) | REMAP_FLAG_MOVING;
      } else {
        const nb = new BigUint64Array(t.count + 1);
        const ns = new BigUint64Array(t.count + 1);
        const nf = new Uint8Array(t.count + 1);
        nb.set(blocks.subarray(0, lo));
        ns.set(slots.subarray(0, lo));
        nf.set(flags.subarray(0, lo));
        nb[lo] = b;
        ns[lo] = BigInt(moving.slot);
        nf[lo] = REMAP_FLAG_MOVING;
        nb.set(blocks.subarray(lo), lo + 1);
        ns.set(slots.subarray(lo), lo + 1);
        nf.set(flags.subarray(lo), lo + 1);
        blocks = nb;
        slots = ns;
        flags = nf;
      }
    }
    this.dev().setRemapTable(blocks, slots, flags);
  }

  private async doRemap(sector: number, block: number): Promise<RemapResult> {
    const dev = this.dev();
    let readErrno: string | null = null;
    try {
      const op = await remapBlock(this.store, block, 'manual', {
        copy: async (_b, slot, offset) => {
          this.moving = block;
          this.publish({ block, slot });
          await dev.drain();
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
      this.log.info({ block, slot: op.slot, lost: op.lost }, 'block remapped');
      return { sector, block, slot: op.slot, state: op.lost ? 'lost' : 'mapped', readErrno };
    } finally {
      // Committed: the entry (mapped or lost) replaces MOVING. Not committed: the block is back on main.
      // (Refused before anything was published: nothing to undo.)
      if (this.moving !== null) {
        this.moving = null;
        this.publish();
      }
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
          this.moving = block;
          this.publish({ block, slot });
          await dev.drain();
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
      if (this.moving !== null) {
        this.moving = null;
        this.publish();
      }
    }
  }
}
