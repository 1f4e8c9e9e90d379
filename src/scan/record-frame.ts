// The envelope of every persisted scan record (the cursor, the region record, the scan file holding both):
//
//   offset  size  field
//   0       8     magic: 8 ASCII bytes naming the record ("DMRSCUR1"...)
//   8       4     version (u32 LE)
//   12      4     payload length in bytes (u32 LE)
//   16      n     payload
//   16+n    4     CRC32C (src/remap/crc32c.ts) of bytes [0, 16+n) (u32 LE)
//
// Reading checks, in this order: length (short), magic, checksum, version, then the payload's own rules
// (the decoder's). A record that fails any is a ScanRecordError: never a wrong cursor.
import { DmrError } from '../errors.js';
import { crc32c } from '../remap/crc32c.js';

export const FRAME_HEADER_BYTES = 16;
export const FRAME_TRAILER_BYTES = 4;

/** Why a record cannot be used. */
export type ScanRecordProblem = 'short' | 'magic' | 'checksum' | 'version' | 'invalid' | 'device';

/** A persisted scan record that cannot be used (E_SCAN_RECORD); `problem` says why. */
export class ScanRecordError extends DmrError {
  readonly problem: ScanRecordProblem;

  constructor(problem: ScanRecordProblem, message: string) {
    super('E_SCAN_RECORD', message);
    this.name = 'ScanRecordError';
    this.problem = problem;
  }
}

function checkMagic(magic: string): Buffer {
  const m = Buffer.from(magic, 'latin1');
  if (m.length !== 8 || !/^[\x20-\x7e]{8}$/.test(magic)) throw new Error(`record magic must be 8 ASCII characters: ${magic}`);
  return m;
}

/** The framed record: header, payload, CRC32C. */
export function frameRecord(magic: string, version: number, payload: Uint8Array): Buffer {
  const out = Buffer.alloc(FRAME_HEADER_BYTES + payload.length + FRAME_TRAILER_BYTES);
  checkMagic(magic).copy(out, 0);
  out.writeUInt32LE(version, 8);
  out.writeUInt32LE(payload.length, 12);
  out.set(payload, FRAME_HEADER_BYTES);
  out.writeUInt32LE(crc32c(out, 0, FRAME_HEADER_BYTES + payload.length), FRAME_HEADER_BYTES + payload.length);
  return out;
}

/**
 * The payload of a framed record of `magic` and `version` (a view into `buf`); `what` names the record in
 * errors ("scan cursor"). The record must fill `buf` exactly.
 */
export function unframeRecord(buf: Uint8Array, magic: string, version: number, what: string): Buffer {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < FRAME_HEADER_BYTES + FRAME_TRAILER_BYTES) {
    throw new ScanRecordError('short', `${what}: record is short (${b.length} bytes)`);
  }
  if (!b.subarray(0, 8).equals(checkMagic(magic))) {
    throw new ScanRecordError('magic', `${what}: not a ${what} record (magic ${JSON.stringify(b.subarray(0, 8).toString('latin1'))})`);
  }
  const len = b.readUInt32LE(12);
  const total = FRAME_HEADER_BYTES + len + FRAME_TRAILER_BYTES;
  if (b.length < total) throw new ScanRecordError('short', `${what}: record is short (${b.length} of ${total} bytes)`);
  if (b.length > total) throw new ScanRecordError('invalid', `${what}: ${b.length - total} bytes after the record`);
  const stored = b.readUInt32LE(FRAME_HEADER_BYTES + len);
  if (crc32c(b, 0, FRAME_HEADER_BYTES + len) !== stored) throw new ScanRecordError('checksum', `${what}: checksum mismatch (corrupt record)`);
  const v = b.readUInt32LE(8);
  if (v !== version) throw new ScanRecordError('version', `${what}: record version ${v} is not supported (this version reads ${version})`);
  return b.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + len);
}
