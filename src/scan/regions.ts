// The per-region record of a scan: the device split into at most 4096 regions, each holding the latency bins
// of the reads of the current pass as MHDD and Victoria draw them, and counts of the region's remapped, pending
// and relocated blocks. This is what the surface map draws, one cell per region.
//
// The region rule: regions are a whole number of MiB (so an aligned 1 MiB scan chunk never straddles two),
// at least 1 MiB, and as small as that allows with at most 4096 regions. A device of up to 4 GiB has 1 MiB
// regions (a 10 MiB device: 10 regions); 1 TiB has 4096 of 256 MiB. The last region is shorter when the
// device is not a multiple of the region size. Memory: 10 u32 per region, at most 160 KiB whatever the device.
//
// Counts are u32 and saturate at 2^32 - 1 (a full pass of 512-byte reads of a 2 TiB region would be needed).
import { DmrError } from '../errors.js';

export const MIB = 1024 * 1024;
export const MAX_REGIONS = 4096;
export const MIN_REGION_BYTES = MIB;

/** Upper bounds (exclusive, ms) of the latency bins below the slow one; MHDD/Victoria's steps. */
export const LATENCY_BIN_LIMITS_MS = [5, 20, 50, 150, 500] as const;
/** Bin names, in order: the five above, then >= 500 ms, then errors. */
export const LATENCY_BINS = ['lt5ms', 'lt20ms', 'lt50ms', 'lt150ms', 'lt500ms', 'ge500ms', 'error'] as const;
export type LatencyBin = (typeof LATENCY_BINS)[number];
export const BIN_COUNT = LATENCY_BINS.length;
export const ERROR_BIN = BIN_COUNT - 1;

export const BLOCK_KINDS = ['remapped', 'pending', 'relocated'] as const;
/** remapped: the block is served from the spare; pending: lost (reads fail until written); relocated: moved with its data because it was slow or needed retries. */
export type BlockKind = (typeof BLOCK_KINDS)[number];
/** u32 fields per region: the bins, then the block counts. */
export const FIELDS_PER_REGION = BIN_COUNT + BLOCK_KINDS.length;

const U32_MAX = 0xffffffff;

/** The region size for a device of `deviceBytes` (the rule above). */
export function regionBytesFor(deviceBytes: number): number {
  if (!Number.isSafeInteger(deviceBytes) || deviceBytes <= 0) {
    throw new DmrError('E_INTERNAL', `device size must be a positive whole number of bytes, got ${String(deviceBytes)}`);
  }
  const perRegion = Math.ceil(deviceBytes / MAX_REGIONS);
  return Math.max(MIN_REGION_BYTES, Math.ceil(perRegion / MIB) * MIB);
}

/** The bin of a read that took `latencyMs` (or failed). */
export function latencyBin(latencyMs: number, failed: boolean): number {
  if (failed) return ERROR_BIN;
  let i = 0;
  while (i < LATENCY_BIN_LIMITS_MS.length && latencyMs >= (LATENCY_BIN_LIMITS_MS[i] as number)) i++;
  return i;
}

/** One read of the scan (or of a user, if the data path reports them). */
export interface ReadResult {
  /** Byte offset on the device. */
  offset: number;
  /** Bytes read (> 0). */
  length: number;
  /** How long the read took, ms. */
  latencyMs: number;
  /** Whether it failed (an errno, whatever its latency). */
  failed: boolean;
}

/** One region as the map and --json show it. */
export interface RegionView {
  index: number;
  /** First byte of the region and one past its last. */
  start: number;
  end: number;
  /** Reads per bin, in LATENCY_BINS order. */
  bins: number[];
  remapped: number;
  pending: number;
  relocated: number;
  /** The highest bin with a read (ERROR_BIN when a read failed), or null when nothing was read. */
  worstBin: number | null;
}

export class RegionRecord {
  readonly deviceBytes: number;
  readonly regionBytes: number;
  readonly count: number;
  /** count x FIELDS_PER_REGION u32: per region the bins, then the block counts. */
  readonly fields: Uint32Array;

  private constructor(deviceBytes: number, fields?: Uint32Array) {
    this.deviceBytes = deviceBytes;
    this.regionBytes = regionBytesFor(deviceBytes);
    this.count = Math.ceil(deviceBytes / this.regionBytes);
    this.fields = fields ?? new Uint32Array(this.count * FIELDS_PER_REGION);
    if (this.fields.length !== this.count * FIELDS_PER_REGION) {
      throw new DmrError('E_INTERNAL', `region fields: ${this.fields.length} values for ${this.count} regions`);
    }
  }

  /** An empty record for a device of `deviceBytes`. */
  static forDevice(deviceBytes: number): RegionRecord {
    return new RegionRecord(deviceBytes);
  }

  /** A record over existing fields (the decoder's; `fields` is kept, not copied). */
  static fromFields(deviceBytes: number, fields: Uint32Array): RegionRecord {
    return new RegionRecord(deviceBytes, fields);
  }

  /** The region holding byte `offset`. */
  regionOf(offset: number): number {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset >= this.deviceBytes) {
      throw new DmrError('E_OUT_OF_RANGE', `offset ${String(offset)} is outside the device (${this.deviceBytes} bytes)`);
    }
    return Math.floor(offset / this.regionBytes);
  }

  private bump(i: number, delta: number): void {
    const v = (this.fields[i] as number) + delta;
    this.fields[i] = v < 0 ? 0 : v > U32_MAX ? U32_MAX : v;
  }

  /** Counts a read in its latency bin in every region it touches (a read spanning two regions counts in both). */
  addRead(r: ReadResult): void {
    if (!Number.isSafeInteger(r.length) || r.length <= 0) {
      throw new DmrError('E_INTERNAL', `read length must be a positive whole number of bytes, got ${String(r.length)}`);
    }
    if (!r.failed && !(Number.isFinite(r.latencyMs) && r.latencyMs >= 0)) {
      throw new DmrError('E_INTERNAL', `read latency must be a number of ms >= 0, got ${String(r.latencyMs)}`);
    }
    const first = this.regionOf(r.offset);
    const last = this.regionOf(r.offset + r.length - 1);
    const bin = latencyBin(r.latencyMs, r.failed);
    for (let g = first; g <= last; g++) this.bump(g * FIELDS_PER_REGION + bin, 1);
  }

  /** Adds `delta` (may be negative; counts stop at 0) to the count of `kind` blocks in the region of `offset`. */
  noteBlock(offset: number, kind: BlockKind, delta = 1): void {
    if (!Number.isSafeInteger(delta)) throw new DmrError('E_INTERNAL', `block count change must be a whole number, got ${String(delta)}`);
    this.bump(this.regionOf(offset) * FIELDS_PER_REGION + BIN_COUNT + BLOCK_KINDS.indexOf(kind), delta);
  }

  /** Forgets every read (a new pass starts). */
  clearReads(): void {
    for (let g = 0; g < this.count; g++) this.fields.fill(0, g * FIELDS_PER_REGION, g * FIELDS_PER_REGION + BIN_COUNT);
  }

  /** Forgets every block count (before counting them again from the remap table). */
  clearBlocks(): void {
    for (let g = 0; g < this.count; g++) this.fields.fill(0, g * FIELDS_PER_REGION + BIN_COUNT, (g + 1) * FIELDS_PER_REGION);
  }

  region(index: number): RegionView {
    if (!Number.isInteger(index) || index < 0 || index >= this.count) {
      throw new DmrError('E_OUT_OF_RANGE', `region ${String(index)} does not exist (the device has ${this.count})`);
    }
    const base = index * FIELDS_PER_REGION;
    const bins = Array.from(this.fields.subarray(base, base + BIN_COUNT));
    let worstBin: number | null = null;
    for (let b = BIN_COUNT - 1; b >= 0; b--) {
      if ((bins[b] as number) > 0) {
        worstBin = b;
        break;
      }
    }
    return {
      index,
      start: index * this.regionBytes,
      end: Math.min((index + 1) * this.regionBytes, this.deviceBytes),
      bins,
      remapped: this.fields[base + BIN_COUNT] as number,
      pending: this.fields[base + BIN_COUNT + 1] as number,
      relocated: this.fields[base + BIN_COUNT + 2] as number,
      worstBin,
    };
  }

  /** Every region, in order. */
  *regions(): IterableIterator<RegionView> {
    for (let g = 0; g < this.count; g++) yield this.region(g);
  }

  /** The bins and block counts summed over the device (not saturated). */
  totals(): { bins: number[]; remapped: number; pending: number; relocated: number } {
    const sums = new Array<number>(FIELDS_PER_REGION).fill(0);
    for (let i = 0; i < this.fields.length; i++) sums[i % FIELDS_PER_REGION] = (sums[i % FIELDS_PER_REGION] as number) + (this.fields[i] as number);
    return {
      bins: sums.slice(0, BIN_COUNT),
      remapped: sums[BIN_COUNT] as number,
      pending: sums[BIN_COUNT + 1] as number,
      relocated: sums[BIN_COUNT + 2] as number,
    };
  }
}
