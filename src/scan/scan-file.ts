// Where a device's scan is kept between daemons: <state dir>/<pairId>.scan, one file holding the cursor and
// the region record together, so that the bins always describe the reads before the cursor (two files could
// be caught half-updated by a crash). Replaced atomically (atomic-file.ts) at each save.
//
// The file is a framed record (record-frame.ts), magic "DMRSCAN1", version 1, payload:
//
//   offset  size  field
//   0       16    the main/spare pair's UUID (the spare metadata's; the file name says it too)
//   16      4     length c of the cursor record (u32 LE)
//   20      c     the cursor record (cursor-codec.ts)
//   20+c    ...   the region record (region-codec.ts), to the end of the payload
//
// Loading checks each record, that both describe the same device size, and that the UUID and size are the
// device's (a `device` ScanRecordError otherwise: the file belongs to another pair or the device changed size).
import path from 'node:path';
import { readStateFile, writeStateFile } from '../atomic-file.js';
import { DmrError } from '../errors.js';
import { CURSOR_PAYLOAD_BYTES, decodeCursor, encodeCursor } from './cursor-codec.js';
import type { ScanCursor } from './cursor.js';
import { frameRecord, FRAME_HEADER_BYTES, FRAME_TRAILER_BYTES, ScanRecordError, unframeRecord } from './record-frame.js';
import { decodeRegions, encodeRegions, MAX_REGIONS_RECORD_BYTES } from './region-codec.js';
import type { RegionRecord } from './regions.js';

export const SCAN_FILE_MAGIC = 'DMRSCAN1';
export const SCAN_FILE_VERSION = 1;
const WHAT = 'scan file';
const CURSOR_RECORD_BYTES = FRAME_HEADER_BYTES + CURSOR_PAYLOAD_BYTES + FRAME_TRAILER_BYTES;
/** No scan file is larger (a larger file is refused unread). */
export const MAX_SCAN_FILE_BYTES = FRAME_HEADER_BYTES + 20 + CURSOR_RECORD_BYTES + MAX_REGIONS_RECORD_BYTES + FRAME_TRAILER_BYTES;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface SavedScan {
  cursor: ScanCursor;
  regions: RegionRecord;
}

function uuidBytes(pairId: string): Buffer {
  if (!UUID_RE.test(pairId)) throw new DmrError('E_INTERNAL', `pair id ${JSON.stringify(pairId)} is not a UUID`);
  return Buffer.from(pairId.replaceAll('-', ''), 'hex');
}

/** The file of the pair `pairId` (a UUID as RemapStore.pairId gives it). */
export function scanFilePath(dir: string, pairId: string): string {
  uuidBytes(pairId);
  return path.join(dir, `${pairId}.scan`);
}

export function encodeScanFile(pairId: string, saved: SavedScan): Buffer {
  if (saved.cursor.deviceBytes !== saved.regions.deviceBytes) {
    throw new DmrError('E_INTERNAL', `scan cursor (${saved.cursor.deviceBytes} bytes) and region record (${saved.regions.deviceBytes} bytes) are of different devices`);
  }
  const cursor = encodeCursor(saved.cursor);
  const head = Buffer.alloc(20);
  uuidBytes(pairId).copy(head, 0);
  head.writeUInt32LE(cursor.length, 16);
  return frameRecord(SCAN_FILE_MAGIC, SCAN_FILE_VERSION, Buffer.concat([head, cursor, encodeRegions(saved.regions)]));
}

/** The scan in `buf`, checked to be of pair `pairId` and a device of `deviceBytes`. */
export function decodeScanFile(buf: Uint8Array, pairId: string, deviceBytes: number): SavedScan {
  const p = unframeRecord(buf, SCAN_FILE_MAGIC, SCAN_FILE_VERSION, WHAT);
  if (p.length < 20) throw new ScanRecordError('invalid', `${WHAT}: payload is ${p.length} bytes, shorter than its header`);
  const cursorLen = p.readUInt32LE(16);
  if (20 + cursorLen > p.length) throw new ScanRecordError('invalid', `${WHAT}: cursor length ${cursorLen} runs past the payload`);
  const cursor = decodeCursor(p.subarray(20, 20 + cursorLen));
  const regions = decodeRegions(p.subarray(20 + cursorLen));
  if (cursor.deviceBytes !== regions.deviceBytes) {
    throw new ScanRecordError('invalid', `${WHAT}: cursor (${cursor.deviceBytes} bytes) and region record (${regions.deviceBytes} bytes) disagree on the device size`);
  }
  if (!p.subarray(0, 16).equals(uuidBytes(pairId))) {
    throw new ScanRecordError('device', `${WHAT}: belongs to another main/spare pair than ${pairId}`);
  }
  if (cursor.deviceBytes !== deviceBytes) {
    throw new ScanRecordError('device', `${WHAT}: is of a ${cursor.deviceBytes}-byte device, this one has ${deviceBytes} bytes`);
  }
  return { cursor, regions };
}

/** Saves the scan of `pairId` in `dir` (created, mode 0700, if missing), atomically. E_STATE when it cannot. */
export function saveScan(dir: string, pairId: string, saved: SavedScan): void {
  writeStateFile(dir, scanFilePath(dir, pairId), encodeScanFile(pairId, saved));
}

/**
 * The saved scan of `pairId`, or null when there is none. E_STATE when the file cannot be read; a
 * ScanRecordError (E_SCAN_RECORD) when what it holds cannot be used: the caller decides (log it, start over).
 */
export function loadScan(dir: string, pairId: string, deviceBytes: number): SavedScan | null {
  const file = scanFilePath(dir, pairId);
  const buf = readStateFile(file, MAX_SCAN_FILE_BYTES, (size) => new ScanRecordError('invalid', `${WHAT}: ${file} is ${size} bytes, more than a scan file can be`));
  if (buf === null) return null;
  return decodeScanFile(buf, pairId, deviceBytes);
}
