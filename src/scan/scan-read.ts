// What one native scanRead (NativeDevice.scanRead) means for the scan's record: each piece read becomes a
// ReadResult of the region record (regions.ts: a latency bin, or the error bin for a failed read), each piece
// native skipped (a block being moved, or a lost one) is listed for the scanner to revisit or count, and each
// failed piece is listed with its errno for the scanner to act on. Native decides nothing; this decides
// nothing either, it only translates, and refuses a result whose pieces do not cover exactly the part of the
// range native says it covered (a call may stop early: `coveredBytes`, `stopped`).
import { DmrError } from '../errors.js';
import type { BackingRole, NativeScanReadResult } from '../native.js';
import type { ReadResult, RegionRecord } from './regions.js';

/** A piece of the range that was not read. */
export interface ScanSkip {
  /** Byte offset on the device and length. */
  offset: number;
  length: number;
  /** 'moving': being moved (read it again later); 'lost': its data is gone (a pending block). */
  reason: 'moving' | 'lost';
}

/** A piece whose read failed. */
export interface ScanFailure {
  offset: number;
  length: number;
  /** Where the read went: main, or the blocks' spare slots. */
  device: BackingRole;
  /** Positive errno. */
  errno: number;
}

export interface ScanOutcome {
  /** One per piece read (ok or failed), in device order: what RegionRecord.addRead takes. */
  reads: ReadResult[];
  skipped: ScanSkip[];
  failed: ScanFailure[];
  /** Bytes from the range's start the pieces cover (> 0, whole blocks): the range's length unless native stopped early. */
  coveredBytes: number;
  /** The remap table generation the oldest piece was planned against (NativeScanReadResult.generation). */
  generation: number;
}

/**
 * The outcome of `result` on a device of `blockSize`-byte blocks. Throws E_INTERNAL when the pieces do not
 * cover [offset, offset + coveredBytes) exactly, in order, or when coveredBytes is not a whole number of
 * blocks in (0, bytes], or says the call stopped early without a reason (a read the scanner would otherwise
 * count wrongly, or a range it would skip).
 */
export function scanOutcome(result: NativeScanReadResult, blockSize: number): ScanOutcome {
  const start = Number(result.offset);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(blockSize) || blockSize <= 0) {
    throw new DmrError('E_INTERNAL', `scan read at ${String(result.offset)} with block size ${String(blockSize)}: not a usable range`);
  }
  const covered = result.coveredBytes;
  if (!Number.isSafeInteger(covered) || covered <= 0 || covered > result.bytes || covered % blockSize !== 0) {
    throw new DmrError('E_INTERNAL', `scan read at ${start}: covered ${String(covered)} of ${result.bytes} bytes, not whole blocks of ${blockSize} in range`);
  }
  if ((covered < result.bytes) !== (result.stopped !== null)) {
    throw new DmrError('E_INTERNAL', `scan read at ${start}: covered ${covered} of ${result.bytes} bytes with stopped=${String(result.stopped)}`);
  }
  const out: ScanOutcome = { reads: [], skipped: [], failed: [], coveredBytes: covered, generation: result.generation };
  let at = start;
  for (const s of result.segments) {
    const offset = s.block * blockSize;
    const length = s.blocks * blockSize;
    if (offset !== at || !Number.isSafeInteger(length) || length <= 0) {
      throw new DmrError('E_INTERNAL', `scan read at ${start}: piece at block ${s.block} (${s.blocks} blocks) does not continue from byte ${at}`);
    }
    at += length;
    if (s.skipped !== null) {
      out.skipped.push({ offset, length, reason: s.skipped });
      continue;
    }
    const failed = s.errno !== 0;
    out.reads.push({ offset, length, latencyMs: s.latencyUs / 1000, failed });
    if (failed) out.failed.push({ offset, length, device: s.device, errno: s.errno });
  }
  if (at !== start + covered) {
    throw new DmrError('E_INTERNAL', `scan read at ${start}: pieces cover ${at - start} bytes, native says ${covered}`);
  }
  return out;
}

/** Counts the outcome's reads in `record` (skipped pieces count nowhere: they were not read). */
export function recordScanReads(record: RegionRecord, outcome: ScanOutcome): void {
  for (const r of outcome.reads) record.addRead(r);
}

/**
 * native/scan_reader.h kScanAlignBytes: native never plans a wide piece across a multiple of it, so the
 * scanner's chunks (a multiple of it) each hold whole pieces.
 */
export const SCAN_ALIGN_BYTES = 1 << 20;

/** The part of a call's outcome in one chunk. */
export interface ChunkOutcome extends ScanOutcome {
  /** Where the call's range enters the chunk (the chunk's start, or the range's start in its first chunk). */
  offset: number;
}

/**
 * `outcome` of a call over [start, start + coveredBytes) cut at the multiples of `chunkBytes`: one outcome per
 * chunk the covered range touches (its `offset` is where the range enters the chunk, `coveredBytes` the part in
 * it), in order. Throws E_INTERNAL for a piece that crosses a chunk boundary: native never plans one, and a
 * read counted in two chunks would be judged twice.
 */
export function splitOutcome(outcome: ScanOutcome, start: number, chunkBytes: number): ChunkOutcome[] {
  const out: ChunkOutcome[] = [];
  const end = start + outcome.coveredBytes;
  for (let at = start; at < end; ) {
    const stop = Math.min(end, (Math.floor(at / chunkBytes) + 1) * chunkBytes);
    out.push({ offset: at, reads: [], skipped: [], failed: [], coveredBytes: stop - at, generation: outcome.generation });
    at = stop;
  }
  const first = Math.floor(start / chunkBytes);
  const place = (offset: number, length: number): ChunkOutcome => {
    const c = Math.floor(offset / chunkBytes);
    const entry = out[c - first];
    if (entry === undefined || Math.floor((offset + length - 1) / chunkBytes) !== c) {
      throw new DmrError('E_INTERNAL', `scan piece of ${length} bytes at ${offset} is not inside one ${chunkBytes}-byte chunk of [${start}, ${end})`);
    }
    return entry;
  };
  for (const r of outcome.reads) place(r.offset, r.length).reads.push(r);
  for (const k of outcome.skipped) place(k.offset, k.length).skipped.push(k);
  for (const f of outcome.failed) place(f.offset, f.length).failed.push(f);
  return out;
}
