// How native splits a wide scan read's run of like blocks into pieces (native/scan_reader.cc PlanScan): at
// most `maxBlocks` blocks each, and never across a multiple of kScanAlignBytes of the device, so that each
// piece lies in one of the scanner's chunks. The fakes of native's scanRead (fake-native.ts, the unit tests'
// scan devices) plan with it.

import { SCAN_ALIGN_BYTES } from '../scan/scan-read.js';

/**
 * Where a wide call over blocks [first, end) whose first failed read is at `failedBlock` stops, as native's
 * does: a run (a call over more than one chunk) at the end of that read's chunk; a call inside one chunk at
 * its end (reading on).
 */
export function runStop(first: number, end: number, failedBlock: number, blockSize: number): number {
  const align = SCAN_ALIGN_BYTES / blockSize;
  if (Math.floor(first / align) === Math.floor((end - 1) / align)) return end;
  return Math.min(end, (Math.floor(failedBlock / align) + 1) * align);
}

/** The pieces of blocks [first, end) of `blockSize` bytes: [first block, block count] each, in order. */
export function scanPieces(first: number, end: number, blockSize: number, maxBlocks = Number.POSITIVE_INFINITY): Array<{ block: number; blocks: number }> {
  const align = SCAN_ALIGN_BYTES / blockSize;
  const out: Array<{ block: number; blocks: number }> = [];
  for (let b = first; b < end; ) {
    const n = Math.min(end - b, maxBlocks, align - (b % align));
    out.push({ block: b, blocks: n });
    b += n;
  }
  return out;
}
