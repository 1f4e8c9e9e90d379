// The remap state a store persists: the table, the slot allocator and the counters that must survive a
// restart. Every change is an op; applying an op validates it against the current state (typed error,
// nothing changed, when it does not fit) and returns its undo. Replay of the journal applies the same ops.
import { DmrError } from '../errors.js';
import { SlotAllocator } from './allocator.js';
import type { Geometry } from './geometry.js';
import { entryOrigin, MAX_ERROR_COUNT, RemapTable, type EntryOrigin } from './table.js';

/** Counters persisted with the table copy and in every journal record (the snapshot after the record). */
export interface PersistentCounters {
  /** Remaps ever made by hand / automatically (not decremented by unremap). */
  manualRemaps: number;
  autoRemaps: number;
  unremaps: number;
  /** I/O error totals the daemon reports through RemapStore.setCounters(). */
  readErrors: number;
  writeErrors: number;
  /**
   * Of autoRemaps, those of origin scan (what the background scan found); not decremented by unremap.
   * Only a format-version-3 spare stores the scan origin: on versions 1 and 2 it stays 0.
   */
  scanRemaps: number;
}

/** The counters in their on-disk slot order (docs/FORMAT.md, *Counters*). */
export const COUNTER_NAMES = ['manualRemaps', 'autoRemaps', 'unremaps', 'readErrors', 'writeErrors', 'scanRemaps'] as const;
/** On-disk counter slots (the ones a spare's format version does not store are reserved, written as 0). */
export const COUNTER_SLOTS = 8;

/**
 * How many of COUNTER_NAMES (from the first) a spare of format version `v` stores: version 3 also stores
 * scanRemaps (slot 5); on versions 1 and 2 that slot is reserved (written as 0, ignored when read).
 */
export const storedCounterCount = (v: number): number => (v >= 3 ? 6 : 5);

export const zeroCounters = (): PersistentCounters => ({
  manualRemaps: 0,
  autoRemaps: 0,
  unremaps: 0,
  readErrors: 0,
  writeErrors: 0,
  scanRemaps: 0,
});

export const OP_CODES = { remap: 1, unremap: 2, lost: 3, mapped: 4, retire: 5, move: 6, errors: 7 } as const;
export type OpName = keyof typeof OP_CODES;

/**
 * An op as the caller gives it: a missing slot on remap/move means "the lowest free slot". `dataOnMain`
 * (remap with `lost`, and lost; default false) records that main still holds the block's last data (see
 * RemapEntry.dataOnMain); mapped, move and unremap clear it; a version-1 spare never keeps it.
 */
export type RemapOp =
  | {
      op: 'remap';
      block: number;
      slot?: number;
      origin: EntryOrigin;
      lost?: boolean;
      dataOnMain?: boolean;
      time?: number;
      errorCount?: number;
    }
  | { op: 'unremap'; block: number; time?: number }
  | { op: 'lost'; block: number; dataOnMain?: boolean; time?: number }
  | { op: 'mapped'; block: number; time?: number }
  | { op: 'retire'; slot: number; time?: number }
  | { op: 'move'; block: number; slot?: number; time?: number }
  | { op: 'errors'; block: number; errorCount: number; time?: number };

/** An op with every field concrete: what a journal record holds. Unused fields are 0/false. */
export interface ResolvedOp {
  op: OpName;
  block: number;
  slot: number;
  lost: boolean;
  auto: boolean;
  /** remap with auto only (format version 3): the remap's origin is the background scan. */
  scan: boolean;
  /** remap (with lost) and lost only: main still holds the block's last data. */
  dataOnMain: boolean;
  time: number;
  errorCount: number;
}

export type Undo = () => void;

/** Times are unix ms in 48 bits on disk (good until the year 10889). */
export const MAX_TIME = 2 ** 48 - 1;

const isUint = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

export class RemapState {
  readonly table = new RemapTable();
  allocator: SlotAllocator;
  counters: PersistentCounters = zeroCounters();
  readonly mainBlocks: number;

  constructor(geometry: Geometry, mainBlocks: number) {
    this.allocator = new SlotAllocator(geometry);
    this.mainBlocks = mainBlocks;
  }

  /** Fills in the slot and time of `op` from the current state (a missing slot → lowest free slot). */
  resolve(op: RemapOp, now: number): ResolvedOp {
    const time = op.time ?? now;
    if (op.op !== 'retire') this.checkBlock(op.block); // before picking a slot: "beyond the device" wins over "full"
    const base = { block: 0, slot: 0, lost: false, auto: false, scan: false, dataOnMain: false, time, errorCount: 0 };
    // A version-1 spare cannot store "data on main": its entries always say false (recheck keeps them lost).
    const storesDataOnMain = this.allocator.geometry.version >= 2;
    // Versions 1 and 2 cannot store the scan origin: the entry is auto there.
    const storesScan = this.allocator.geometry.version >= 3;
    switch (op.op) {
      case 'remap':
        return {
          ...base,
          op: 'remap',
          block: op.block,
          slot: op.slot ?? this.allocator.peek(),
          lost: op.lost === true,
          auto: op.origin !== 'manual',
          scan: storesScan && op.origin === 'scan',
          dataOnMain: storesDataOnMain && op.dataOnMain === true, // apply() refuses it without lost
          errorCount: Math.min(op.errorCount ?? 0, MAX_ERROR_COUNT),
        };
      case 'move':
        return { ...base, op: 'move', block: op.block, slot: op.slot ?? this.allocator.peek() };
      case 'retire':
        return { ...base, op: 'retire', slot: op.slot };
      case 'errors':
        return { ...base, op: 'errors', block: op.block, errorCount: Math.min(op.errorCount, MAX_ERROR_COUNT) };
      case 'lost':
        return { ...base, op: 'lost', block: op.block, dataOnMain: storesDataOnMain && op.dataOnMain === true };
      case 'unremap':
      case 'mapped':
        return { ...base, op: op.op, block: op.block };
      default:
        throw new DmrError('E_INTERNAL', `unknown remap op ${JSON.stringify((op as { op: unknown }).op)}`);
    }
  }

  /** Applies `op`; throws a DmrError and changes nothing when it does not fit the state. */
  apply(op: ResolvedOp): Undo {
    const { table, allocator } = this;
    if (!isUint(op.time) || op.time > MAX_TIME || !isUint(op.errorCount) || op.errorCount > MAX_ERROR_COUNT) {
      throw new DmrError('E_REMAP_STATE', `bad time or error count in ${op.op} op`);
    }
    if (op.op !== 'retire') this.checkBlock(op.block);
    if (op.dataOnMain) {
      if (!((op.op === 'remap' && op.lost) || op.op === 'lost')) {
        throw new DmrError('E_REMAP_STATE', `data on main is only for a lost block (${op.op} op on block ${op.block})`);
      }
      if (this.allocator.geometry.version === 1) {
        throw new DmrError('E_REMAP_STATE', 'a format-version-1 spare cannot record that a lost block\'s data is on main');
      }
    }
    switch (op.op) {
      case 'remap': {
        if (table.has(op.block)) throw new DmrError('E_REMAP_STATE', `block ${op.block} is already remapped`);
        // Checked before the slot is taken: a refused op changes nothing.
        if (op.scan && (!op.auto || this.allocator.geometry.version < 3)) {
          throw new DmrError('E_REMAP_STATE', `the scan origin is for an automatic remap on a format-version-3 spare (block ${op.block})`);
        }
        const was = allocator.take(op.slot);
        const origin: EntryOrigin = entryOrigin(op.auto, op.scan);
        table.set(op.block, {
          slot: op.slot,
          state: op.lost ? 'lost' : 'mapped',
          origin,
          time: op.time,
          errorCount: op.errorCount,
          dataOnMain: op.dataOnMain,
        });
        // A scan remap is an automatic one too: it counts in autoRemaps and, apart, in scanRemaps.
        const key = op.auto ? 'autoRemaps' : 'manualRemaps';
        this.counters[key]++;
        if (op.scan) this.counters.scanRemaps++;
        return () => {
          this.counters[key]--;
          if (op.scan) this.counters.scanRemaps--;
          table.delete(op.block);
          allocator.giveBack(op.slot, was);
        };
      }
      case 'unremap': {
        const old = this.entry(op.block);
        allocator.release(old.slot);
        table.delete(op.block);
        this.counters.unremaps++;
        return () => {
          this.counters.unremaps--;
          allocator.take(old.slot);
          table.set(op.block, old);
        };
      }
      case 'lost':
      case 'mapped':
      case 'errors': {
        const old = this.entry(op.block);
        if (op.op === 'errors') table.set(op.block, { ...old, errorCount: op.errorCount });
        else table.set(op.block, { ...old, state: op.op, dataOnMain: op.dataOnMain });
        return () => table.set(op.block, old);
      }
      case 'move': {
        const old = this.entry(op.block);
        const was = allocator.take(op.slot);
        try {
          allocator.release(old.slot);
        } catch (e) {
          allocator.giveBack(op.slot, was);
          throw e;
        }
        table.set(op.block, { ...old, slot: op.slot, dataOnMain: false });
        return () => {
          table.set(op.block, old);
          allocator.take(old.slot);
          allocator.giveBack(op.slot, was);
        };
      }
      case 'retire':
        allocator.retire(op.slot);
        return () => allocator.unretire(op.slot);
      default:
        throw new DmrError('E_REMAP_STATE', `unknown op ${String((op as { op: unknown }).op)}`);
    }
  }

  /**
   * Applies `ops` in order, all or nothing: on the first op that does not fit, undoes the ones before it
   * and rethrows. Returns the undo of the whole list.
   */
  applyAll(ops: readonly ResolvedOp[]): Undo {
    const undos: Undo[] = [];
    try {
      for (const op of ops) undos.push(this.apply(op));
    } catch (e) {
      for (let i = undos.length - 1; i >= 0; i--) (undos[i] as Undo)();
      throw e;
    }
    return () => {
      for (let i = undos.length - 1; i >= 0; i--) (undos[i] as Undo)();
    };
  }

  private entry(block: number) {
    const e = this.table.get(block);
    if (e === undefined) throw new DmrError('E_REMAP_STATE', `block ${block} is not remapped`);
    return e;
  }

  private checkBlock(block: number): void {
    if (!isUint(block) || block >= this.mainBlocks) {
      throw new DmrError('E_REMAP_STATE', `block ${block} is beyond the main device (${this.mainBlocks} blocks)`);
    }
  }
}
