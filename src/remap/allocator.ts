// Spare slot allocator: hands out the lowest free slot, takes slots back on unremap, and retires bad slots
// for good (retired slots are persisted with the table and never handed out again). Free space is a sorted
// list of [start, end) intervals, so memory is O(entries) whatever the slot count.
import { DmrError } from '../errors.js';
import { slotOffset, type Geometry } from './geometry.js';

export class SlotAllocator {
  readonly geometry: Geometry;
  readonly slotCount: number;
  /** Free intervals [starts[i], ends[i]), sorted, disjoint, never adjacent. */
  private starts: number[];
  private ends: number[];
  private freeCount: number;
  private readonly retired = new Set<number>();
  /** Slots handed out by reserve() and not yet committed or given back (never persisted). */
  private readonly reserved = new Set<number>();

  constructor(geometry: Geometry) {
    this.geometry = geometry;
    this.slotCount = geometry.slotCount;
    this.starts = [0];
    this.ends = [geometry.slotCount];
    this.freeCount = geometry.slotCount;
  }

  /**
   * Builds the allocator of a loaded table: `occupied` are the slots in use, `retired` the retired ones
   * (any order, each distinct and in range; throws E_SPARE_METADATA otherwise).
   */
  static fromState(geometry: Geometry, used: ArrayLike<number>, retired: ArrayLike<number>): SlotAllocator {
    const a = new SlotAllocator(geometry);
    const all = new Float64Array(used.length + retired.length);
    for (let i = 0; i < used.length; i++) all[i] = used[i] as number;
    for (let i = 0; i < retired.length; i++) all[used.length + i] = retired[i] as number;
    all.sort();
    const starts: number[] = [];
    const ends: number[] = [];
    let next = 0;
    for (let i = 0; i < all.length; i++) {
      const s = all[i] as number;
      if (!Number.isInteger(s) || s < next || s >= geometry.slotCount) {
        throw new DmrError('E_SPARE_METADATA', `slot ${s} is out of range or used twice`);
      }
      if (s > next) {
        starts.push(next);
        ends.push(s);
      }
      next = s + 1;
    }
    if (next < geometry.slotCount) {
      starts.push(next);
      ends.push(geometry.slotCount);
    }
    a.starts = starts;
    a.ends = ends;
    a.freeCount = geometry.slotCount - all.length;
    for (let i = 0; i < retired.length; i++) a.retired.add(retired[i] as number);
    return a;
  }

  get free(): number {
    return this.freeCount;
  }

  get retiredCount(): number {
    return this.retired.size;
  }

  /** Slots holding a remapped block. */
  get used(): number {
    return this.slotCount - this.freeCount - this.retired.size - this.reserved.size;
  }

  get reservedCount(): number {
    return this.reserved.size;
  }

  isReserved(slot: number): boolean {
    return this.reserved.has(slot);
  }

  /**
   * Takes the lowest free slot for a remap that is not committed yet (its data is copied first). The slot
   * stays out of reach of allocate() until a remap or move op names it (take() consumes the reservation) or
   * unreserve() gives it back. Reservations are not persisted: after a crash the slot is free again.
   */
  reserve(): number {
    const s = this.allocate();
    this.reserved.add(s);
    return s;
  }

  unreserve(slot: number): void {
    if (!this.reserved.delete(slot)) throw new DmrError('E_REMAP_STATE', `spare slot ${slot} is not reserved`);
    this.insertFree(slot);
  }

  isRetired(slot: number): boolean {
    return this.retired.has(slot);
  }

  isFree(slot: number): boolean {
    const i = this.find(slot);
    return i >= 0 && slot < (this.ends[i] as number);
  }

  /** Retired slots, ascending. */
  retiredSlots(): number[] {
    return [...this.retired].sort((x, y) => x - y);
  }

  /** Absolute byte offset of `slot` on the spare device. */
  offsetOf(slot: number): number {
    this.checkRange(slot);
    return slotOffset(this.geometry, slot);
  }

  /** The lowest free slot, without taking it; throws E_SPARE_FULL when there is none. */
  peek(): number {
    const s = this.starts[0];
    if (s === undefined) {
      throw new DmrError(
        'E_SPARE_FULL',
        `spare is full: all ${this.slotCount} slots are in use or retired (${this.retired.size} retired)`,
      );
    }
    return s;
  }

  /** Takes the lowest free slot. */
  allocate(): number {
    const s = this.peek();
    this.takeFree(s);
    return s;
  }

  /**
   * Takes a specific slot that is free or reserved (throws E_REMAP_STATE otherwise); says which it was, for
   * giveBack().
   */
  take(slot: number): 'free' | 'reserved' {
    if (this.reserved.delete(slot)) return 'reserved';
    this.takeFree(slot);
    return 'free';
  }

  /** Undoes take(): the slot goes back to being free or reserved. */
  giveBack(slot: number, was: 'free' | 'reserved'): void {
    if (was === 'reserved') {
      if (this.isFree(slot) || this.retired.has(slot) || this.reserved.has(slot)) {
        throw new DmrError('E_INTERNAL', `spare slot ${slot} cannot go back to reserved`);
      }
      this.reserved.add(slot);
    } else {
      this.release(slot);
    }
  }

  private takeFree(slot: number): void {
    this.checkRange(slot);
    const i = this.find(slot);
    const end = i >= 0 ? (this.ends[i] as number) : -1;
    if (i < 0 || slot >= end) throw new DmrError('E_REMAP_STATE', `spare slot ${slot} is not free`);
    const start = this.starts[i] as number;
    if (start === slot && end === slot + 1) {
      this.starts.splice(i, 1);
      this.ends.splice(i, 1);
    } else if (start === slot) {
      this.starts[i] = slot + 1;
    } else if (end === slot + 1) {
      this.ends[i] = slot;
    } else {
      this.ends[i] = slot;
      this.starts.splice(i + 1, 0, slot + 1);
      this.ends.splice(i + 1, 0, end);
    }
    this.freeCount--;
  }

  /** Gives back a slot in use (unremap); throws E_REMAP_STATE if it is free or retired. */
  release(slot: number): void {
    this.checkRange(slot);
    if (this.retired.has(slot)) throw new DmrError('E_REMAP_STATE', `spare slot ${slot} is retired`);
    if (this.reserved.has(slot)) throw new DmrError('E_REMAP_STATE', `spare slot ${slot} is reserved, not in use`);
    this.insertFree(slot);
  }

  /** Retires a free slot for good; throws E_REMAP_STATE if it holds a block (move the block first). */
  retire(slot: number): void {
    this.checkRange(slot);
    if (this.retired.has(slot)) throw new DmrError('E_REMAP_STATE', `spare slot ${slot} is already retired`);
    if (this.reserved.has(slot)) throw new DmrError('E_REMAP_STATE', `spare slot ${slot} is reserved`);
    this.takeFree(slot);
    this.retired.add(slot);
  }

  /** Undoes retire() (used only to roll back an op that was never persisted). */
  unretire(slot: number): void {
    if (!this.retired.delete(slot)) throw new DmrError('E_INTERNAL', `spare slot ${slot} is not retired`);
    this.insertFree(slot);
  }

  private insertFree(slot: number): void {
    const i = this.find(slot); // interval starting at or before slot
    if (i >= 0 && slot < (this.ends[i] as number)) {
      throw new DmrError('E_REMAP_STATE', `spare slot ${slot} is already free`);
    }
    const joinLeft = i >= 0 && this.ends[i] === slot;
    const joinRight = i + 1 < this.starts.length && this.starts[i + 1] === slot + 1;
    if (joinLeft && joinRight) {
      this.ends[i] = this.ends[i + 1] as number;
      this.starts.splice(i + 1, 1);
      this.ends.splice(i + 1, 1);
    } else if (joinLeft) {
      this.ends[i] = slot + 1;
    } else if (joinRight) {
      this.starts[i + 1] = slot;
    } else {
      this.starts.splice(i + 1, 0, slot);
      this.ends.splice(i + 1, 0, slot + 1);
    }
    this.freeCount++;
  }

  /** Index of the last interval whose start is <= slot, or -1. */
  private find(slot: number): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    let r = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.starts[mid] as number) <= slot) {
        r = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return r;
  }

  private checkRange(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount) {
      throw new DmrError('E_REMAP_STATE', `spare slot ${slot} is out of range (0..${this.slotCount - 1})`);
    }
  }
}
