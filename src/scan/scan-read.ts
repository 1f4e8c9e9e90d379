// What one native scanRead (NativeDevice.scanRead) means for the scan's record: each piece read becomes a
// ReadResult of the region record (regions.ts: a latency bin, or the error bin for a failed read), each piece
// native skipped (a block being moved, or a lost one) is listed for the scanner to revisit or count, and each
// failed piece is listed with its errno for the scanner to act on. Native decides nothing; this decides
// nothing either, it only translates, and refuses a result that does not cover exactly the range asked for.
import { DmrError } from '../errors.js';
import type { BackingRole, ScanReadResult } from '../native.js';
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
}

/**
 * The outcome of `result` on a device of `blockSize`-byte blocks. Throws E_INTERNAL when the pieces do not
 * cover the range asked for exactly, in order (a read the scanner would otherwise count wrongly).
 */
export function scanOutcome(result: ScanReadResult, blockSize: number): ScanOutcome {
  const start = Number(result.offset);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(blockSize) || blockSize <= 0) {
    throw new DmrError('E_INTERNAL', `scan read at ${String(result.offset)} with block size ${String(blockSize)}: not a usable range`);
  }
  const out: ScanOutcome = { reads: [], skipped: [], failed: [] };
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
  if (at !== start + result.bytes) {
    throw new DmrError('E_INTERNAL', `scan read at ${start}: pieces cover ${at - start} of ${result.bytes} bytes`);
  }
  return out;
}

/** Counts the outcome's reads in `record` (skipped pieces count nowhere: they were not read). */
export function recordScanReads(record: RegionRecord, outcome: ScanOutcome): void {
  for (const r of outcome.reads) record.addRead(r);
}
