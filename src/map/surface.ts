// The surface model the map draws: the scan's region record (latency bins of the latest pass: the one running, or the last one done or stopped) with the
// remapped, pending and relocated blocks of each region counted from the remap table at the time of the
// request (one walk over the table). Pure: the daemon hands in its scanner's record and table.
//
// The kinds of blocks (the legend and README say the same):
// - pending:   the entry is `lost` (any origin): its data is gone, reads fail with EIO until it is written.
// - remapped:  the entry is `mapped` (any origin): the block is served from the spare, with its data.
// - relocated: of the remapped ones, those with origin `auto` or `scan`: the error policy or the scan moved
//              them (a read a retry recovered, a block slow slow_threshold times, a failed write redirected,
//              a pending block healed by a write). The table keeps the origin, not which of these it was.
// A block counts in the region holding its first byte (regions are whole MiB, blocks at most 4 KiB: a block
// never straddles two regions).
import type { ScanStatusResult, SurfaceModel, SurfaceRegion } from '../control/protocol.js';
import { DmrError } from '../errors.js';
import type { EntryOrigin, EntryState } from '../remap/table.js';
import { RegionRecord } from '../scan/regions.js';

/** What the model needs of a table entry. */
export interface SurfaceEntry {
  readonly state: EntryState;
  readonly origin: EntryOrigin;
}

export interface SurfaceInput {
  device: string;
  name: string | null;
  deviceBytes: number;
  blockSize: number;
  /** The scanner's record (read, not changed); null: no scanner (every region not read). */
  regions: RegionRecord | null;
  /** The scan's status; null: no scanner (idle, nothing done). */
  scan: ScanStatusResult | null;
  /** The remap table's entries: [block, entry]. Walked once. */
  entries: Iterable<readonly [number, SurfaceEntry]>;
  /** ms since the epoch. */
  now: number;
}

/** The status of a device whose scan never ran (no scanner). */
export function idleScanStatus(deviceBytes: number): ScanStatusResult {
  return {
    state: 'idle',
    progress: 0,
    position: 0,
    deviceBytes,
    rateBps: 0,
    startedAt: null,
    finishedAt: null,
    errorsFound: 0,
    slowFound: 0,
    etaSeconds: null,
    pass: 0,
  };
}

export function surfaceModel(input: SurfaceInput): SurfaceModel {
  const { deviceBytes, blockSize } = input;
  if (!Number.isSafeInteger(blockSize) || blockSize <= 0) throw new DmrError('E_INTERNAL', `surface: block size ${String(blockSize)} is not a positive whole number`);
  if (input.regions !== null && input.regions.deviceBytes !== deviceBytes) {
    throw new DmrError('E_INTERNAL', `surface: the region record is of a ${input.regions.deviceBytes}-byte device, this one has ${deviceBytes}`);
  }
  // A copy: the scanner's own record (persisted with its cursor) is left as it is.
  const record =
    input.regions === null ? RegionRecord.forDevice(deviceBytes) : RegionRecord.fromFields(deviceBytes, input.regions.fields.slice());
  record.clearBlocks();
  for (const [block, e] of input.entries) {
    const offset = block * blockSize;
    if (offset >= deviceBytes) continue; // not a block of the device (cannot happen: the table is checked when loaded)
    if (e.state === 'lost') {
      record.noteBlock(offset, 'pending');
      continue;
    }
    record.noteBlock(offset, 'remapped');
    if (e.origin !== 'manual') record.noteBlock(offset, 'relocated');
  }
  const regions: SurfaceRegion[] = [];
  for (const r of record.regions()) regions.push(r);
  return {
    device: input.device,
    name: input.name,
    deviceBytes,
    blockSize,
    regionBytes: record.regionBytes,
    generatedAt: input.now,
    scan: input.scan ?? idleScanStatus(deviceBytes),
    regions,
  };
}
