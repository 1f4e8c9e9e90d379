// The remap table: main-device logical block → spare slot, with the entry's state (mapped, or lost: its data
// could not be recovered and it has not been written since), origin, time and error count. Blocks and slots
// are plain numbers (integers below 2^53). TypeScript owns this table; the native index mirror gets
// `exportSorted()`.
import { DmrError } from '../errors.js';

export type EntryState = 'mapped' | 'lost';
/** manual: a remap command; auto: the data path's error handling; scan: what the background scan found. */
export type EntryOrigin = 'manual' | 'auto' | 'scan';

/** A remap's origin from its op's flags: automatic (found by the scan, or by a user request) or by hand. */
export function entryOrigin(auto: boolean, scan: boolean): EntryOrigin {
  return auto ? (scan ? 'scan' : 'auto') : 'manual';
}

export interface RemapEntry {
  readonly slot: number;
  readonly state: EntryState;
  readonly origin: EntryOrigin;
  /** Unix time in ms when the block was remapped. */
  readonly time: number;
  /** Errors seen on this block; saturates at MAX_ERROR_COUNT (what the on-disk format holds). */
  readonly errorCount: number;
  /**
   * The entry is `lost` and main still holds the block's last data: it was marked lost because main could
   * not read it, and nothing was written to it since (what `recheck` may return to main). Always false for a
   * `mapped` entry, and on a format-version-1 spare (which cannot store it).
   */
  readonly dataOnMain: boolean;
}

export const MAX_ERROR_COUNT = 0xffff;

/** Counts derived from the table (kept up to date on every change, O(1) to read). */
export interface TableCounts {
  /** Every entry, mapped or lost. */
  remapped: number;
  mapped: number;
  lost: number;
  manual: number;
  /** Entries not made by hand: origin auto or scan. */
  auto: number;
  /** Lost entries not made by hand (`stats`' pendingBlocks: unreadable, healed by the next write). */
  lostAuto: number;
}

/** The table sorted by block, as flat arrays for the native index mirror. */
export interface SortedTable {
  count: number;
  blocks: BigUint64Array;
  slots: BigUint64Array;
  /** 1 where the entry is `lost`, 0 where it is `mapped`. */
  lost: Uint8Array;
}

const TWO32 = 0x1_0000_0000;

/** Fills a BigUint64Array from numbers without creating a BigInt per element (host is little-endian). */
function fillU64(view: Uint32Array, i: number, v: number): void {
  view[i * 2] = v >>> 0;
  view[i * 2 + 1] = Math.floor(v / TWO32);
}

export class RemapTable {
  private readonly map = new Map<number, RemapEntry>();
  private c: TableCounts = { remapped: 0, mapped: 0, lost: 0, manual: 0, auto: 0, lostAuto: 0 };
  /**
   * Every block, ascending, built once after a change of the set of blocks and kept until the next: `table`
   * pages and the native mirror read it without sorting per request. null: out of date.
   */
  private sorted: Float64Array | null = null;
  /** Blocks whose entry was set or deleted since the last takeChanges() (null: not tracked). */
  private changed: Set<number> | null = null;
  /** The table was cleared since the last takeChanges(): every block may have changed. */
  private changedAll = false;

  get size(): number {
    return this.map.size;
  }

  get(block: number): RemapEntry | undefined {
    return this.map.get(block);
  }

  has(block: number): boolean {
    return this.map.has(block);
  }

  counts(): TableCounts {
    return { ...this.c };
  }

  /** Inserts or replaces the entry of `block`. */
  set(block: number, entry: RemapEntry): void {
    const old = this.map.get(block);
    if (old !== undefined) this.count(old, -1);
    else this.sorted = null;
    // A fresh object of one shape (entries are never mutated in place: callers replace them).
    const e: RemapEntry = {
      slot: entry.slot,
      state: entry.state,
      origin: entry.origin,
      time: entry.time,
      errorCount: entry.errorCount > MAX_ERROR_COUNT ? MAX_ERROR_COUNT : entry.errorCount,
      dataOnMain: entry.state === 'lost' && entry.dataOnMain,
    };
    this.map.set(block, e);
    this.count(e, 1);
    this.changed?.add(block);
  }

  /**
   * Adds an entry for a block known not to be in the table (the decoder of a table copy, whose blocks are
   * strictly ascending): no lookup of an old entry.
   */
  insertNew(
    block: number,
    slot: number,
    lost: boolean,
    auto: boolean,
    time: number,
    errorCount: number,
    dataOnMain = false,
    scan = false,
  ): void {
    this.map.set(block, {
      slot,
      state: lost ? 'lost' : 'mapped',
      origin: entryOrigin(auto, scan),
      time,
      errorCount: errorCount > MAX_ERROR_COUNT ? MAX_ERROR_COUNT : errorCount,
      dataOnMain: lost && dataOnMain,
    });
    this.changed?.add(block);
    this.sorted = null;
    const c = this.c;
    c.remapped++;
    if (lost) c.lost++;
    else c.mapped++;
    if (auto) c.auto++;
    else c.manual++;
    if (lost && auto) c.lostAuto++;
  }

  /** Removes `block`'s entry and returns it; throws E_REMAP_STATE when the block is not remapped. */
  delete(block: number): RemapEntry {
    const old = this.map.get(block);
    if (old === undefined) throw new DmrError('E_REMAP_STATE', `block ${block} is not remapped`);
    this.map.delete(block);
    this.sorted = null;
    this.count(old, -1);
    this.changed?.add(block);
    return old;
  }

  clear(): void {
    this.map.clear();
    this.c = { remapped: 0, mapped: 0, lost: 0, manual: 0, auto: 0, lostAuto: 0 };
    this.sorted = null;
    this.changedAll = true;
    this.changed?.clear();
  }

  /**
   * The blocks whose entry was set or deleted since the previous call (in no particular order), or 'all'
   * on the first call and after a clear(); starts the tracking. What a mirror of the table (the native
   * index) needs to update instead of copying it whole.
   */
  takeChanges(): number[] | 'all' {
    if (this.changed === null || this.changedAll) {
      this.changed = new Set();
      this.changedAll = false;
      return 'all';
    }
    const out = [...this.changed];
    this.changed.clear();
    return out;
  }

  entries(): IterableIterator<[number, RemapEntry]> {
    return this.map.entries();
  }

  /**
   * Every remapped block, ascending. Sorted once after the set of blocks changed and shared until the next
   * change (a change of an entry's slot or state keeps it): callers must not modify it.
   */
  sortedBlocks(): Float64Array {
    if (this.sorted !== null) return this.sorted;
    const keys = new Float64Array(this.map.size);
    let i = 0;
    for (const k of this.map.keys()) keys[i++] = k;
    this.sorted = keys.sort();
    return this.sorted;
  }

  /** The table sorted by block, as typed arrays (what the native index mirror takes). */
  exportSorted(): SortedTable {
    const keys = this.sortedBlocks();
    const n = keys.length;
    const blocks = new BigUint64Array(n);
    const slots = new BigUint64Array(n);
    const lost = new Uint8Array(n);
    const bv = new Uint32Array(blocks.buffer, blocks.byteOffset, n * 2);
    const sv = new Uint32Array(slots.buffer, slots.byteOffset, n * 2);
    for (let i = 0; i < n; i++) {
      const b = keys[i] as number;
      const e = this.map.get(b) as RemapEntry;
      fillU64(bv, i, b);
      fillU64(sv, i, e.slot);
      lost[i] = e.state === 'lost' ? 1 : 0;
    }
    return { count: n, blocks, slots, lost };
  }

  /** Plain-object copy, sorted by block (for tests, `table` output and comparisons). */
  toJSON(): Array<{ block: number } & RemapEntry> {
    const keys = this.sortedBlocks();
    const out: Array<{ block: number } & RemapEntry> = [];
    for (const b of keys) out.push({ block: b, ...(this.map.get(b) as RemapEntry) });
    return out;
  }

  private count(e: RemapEntry, d: 1 | -1): void {
    this.c.remapped += d;
    if (e.state === 'lost') this.c.lost += d;
    else this.c.mapped += d;
    if (e.origin !== 'manual') this.c.auto += d;
    else this.c.manual += d;
    if (e.state === 'lost' && e.origin !== 'manual') this.c.lostAuto += d;
  }
}
