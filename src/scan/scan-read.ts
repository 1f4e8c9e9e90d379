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

/** The reads of one chunk of a scanned range. */
export interface ChunkReads {
  /** The part of the range in this chunk: from max(range start, chunk start) to the chunk's end or the range's. */
  offset: number;
  reads: ReadResult[];
}

/**
 * The reads of [start, start + bytes) (in device order, as scanOutcome lists them) grouped by the
 * `chunkBytes`-aligned chunk they lie in, one entry per chunk the range touches (a chunk whose pieces were all
 * skipped has no reads). Throws E_INTERNAL for a read that crosses a chunk boundary: native never plans one
 * (kScanAlignBytes), and a read counted in two chunks would be judged twice.
 */
export function chunkReads(reads: readonly ReadResult[], start: number, bytes: number, chunkBytes: number): ChunkReads[] {
  const out: ChunkReads[] = [];
  if (bytes <= 0) return out;
  const firstChunk = Math.floor(start / chunkBytes);
  const lastChunk = Math.floor((start + bytes - 1) / chunkBytes);
  for (let c = firstChunk; c <= lastChunk; c++) out.push({ offset: Math.max(start, c * chunkBytes), reads: [] });
  for (const r of reads) {
    const c = Math.floor(r.offset / chunkBytes);
    const entry = out[c - firstChunk];
    if (entry === undefined || Math.floor((r.offset + r.length - 1) / chunkBytes) !== c) {
      throw new DmrError('E_INTERNAL', `scan read of ${r.length} bytes at ${r.offset} is not inside one ${chunkBytes}-byte chunk of [${start}, ${start + bytes})`);
    }
    entry.reads.push(r);
  }
  return out;
}
