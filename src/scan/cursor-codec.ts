// The persisted form of the scan cursor: a framed record (record-frame.ts), magic "DMRSCUR1", version 1,
// a 64-byte payload, little-endian:
//
//   offset  size  field
//   0       1     state: 0 idle, 1 running, 2 paused, 3 done
//   1       3     zero
//   4       4     pass (u32)
//   8       8     position, bytes (u64)
//   16      8     deviceBytes (u64)
//   24      8     startedAt, ms since the epoch (i64; -1 = none)
//   32      8     finishedAt, ms since the epoch (i64; -1 = none)
//   40      8     errorsFound (u64)
//   48      8     slowFound (u64)
//   56      8     rateMib, the pass's --rate ceiling (f64; 0 = none: scan_rate_mib)
//
// 84 bytes in all. Decoding checks the frame, then that the fields are what scanCursorSchema allows.
import { DmrError } from '../errors.js';
import { frameRecord, ScanRecordError, unframeRecord } from './record-frame.js';
import { SCAN_STATES, scanCursorSchema, type ScanCursor } from './cursor.js';

export const CURSOR_MAGIC = 'DMRSCUR1';
export const CURSOR_VERSION = 1;
export const CURSOR_PAYLOAD_BYTES = 64;

const WHAT = 'scan cursor';

/** The record of `c` (validated first: what cannot be read back is never written). */
export function encodeCursor(c: ScanCursor): Buffer {
  const r = scanCursorSchema.safeParse(c);
  if (!r.success) throw new DmrError('E_INTERNAL', `scan cursor to save is invalid: ${r.error.issues[0]?.message ?? 'invalid'}`);
  const v = r.data;
  const p = Buffer.alloc(CURSOR_PAYLOAD_BYTES);
  p.writeUInt8(SCAN_STATES.indexOf(v.state), 0);
  p.writeUInt32LE(v.pass, 4);
  p.writeBigUInt64LE(BigInt(v.position), 8);
  p.writeBigUInt64LE(BigInt(v.deviceBytes), 16);
  p.writeBigInt64LE(BigInt(v.startedAt ?? -1), 24);
  p.writeBigInt64LE(BigInt(v.finishedAt ?? -1), 32);
  p.writeBigUInt64LE(BigInt(v.errorsFound), 40);
  p.writeBigUInt64LE(BigInt(v.slowFound), 48);
  p.writeDoubleLE(v.rateMib ?? 0, 56);
  return frameRecord(CURSOR_MAGIC, CURSOR_VERSION, p);
}

/** A u64/i64 as a number, or a ScanRecordError when it is not a safe integer. */
function safe(v: bigint, field: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new ScanRecordError('invalid', `${WHAT}: ${field} ${v} is out of range`);
  }
  return Number(v);
}

/** The cursor in `buf`; ScanRecordError (E_SCAN_RECORD) when it is short, corrupt, of another version or invalid. */
export function decodeCursor(buf: Uint8Array): ScanCursor {
  const p = unframeRecord(buf, CURSOR_MAGIC, CURSOR_VERSION, WHAT);
  if (p.length !== CURSOR_PAYLOAD_BYTES) {
    throw new ScanRecordError('invalid', `${WHAT}: payload is ${p.length} bytes, not ${CURSOR_PAYLOAD_BYTES}`);
  }
  const stateCode = p.readUInt8(0);
  const state = SCAN_STATES[stateCode];
  if (state === undefined) throw new ScanRecordError('invalid', `${WHAT}: unknown state ${stateCode}`);
  if (p.readUIntLE(1, 3) !== 0) throw new ScanRecordError('invalid', `${WHAT}: reserved bytes are not zero`);
  const optTime = (v: bigint, field: string): number | null => (v === -1n ? null : safe(v, field));
  const raw = {
    state,
    pass: p.readUInt32LE(4),
    position: safe(p.readBigUInt64LE(8), 'position'),
    deviceBytes: safe(p.readBigUInt64LE(16), 'deviceBytes'),
    startedAt: optTime(p.readBigInt64LE(24), 'startedAt'),
    finishedAt: optTime(p.readBigInt64LE(32), 'finishedAt'),
    errorsFound: safe(p.readBigUInt64LE(40), 'errorsFound'),
    slowFound: safe(p.readBigUInt64LE(48), 'slowFound'),
    rateMib: p.readDoubleLE(56) === 0 ? null : p.readDoubleLE(56),
  };
  const r = scanCursorSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue !== undefined && issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
    throw new ScanRecordError('invalid', `${WHAT}: ${where}${issue?.message ?? 'invalid'}`);
  }
  return r.data;
}
