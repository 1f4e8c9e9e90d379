// Byte layout of the spare's metadata (docs/FORMAT.md is the reference): superblock, table copy and journal
// record encoders and decoders. Everything is little-endian and checksummed with CRC32C. Decoders never
// throw on bad bytes: they report what is wrong, and the store decides (fall back, repair or refuse).
import { DmrError } from '../errors.js';
import { crc32c } from './crc32c.js';
import {
  computeGeometry,
  ENTRY_SIZE,
  JOURNAL_RECORD_SIZE,
  RETIRED_SIZE,
  SUPERBLOCK_SIZE,
  TABLE_HEADER_SIZE,
  type Geometry,
} from './geometry.js';
import { SlotAllocator } from './allocator.js';
import {
  COUNTER_NAMES,
  COUNTER_SLOTS,
  OP_CODES,
  RemapState,
  type OpName,
  type PersistentCounters,
  type ResolvedOp,
} from './state.js';

export const FORMAT_VERSION = 1;
export const SB_MAGIC = Buffer.from('DMRMAPSB', 'latin1');
export const TABLE_MAGIC = Buffer.from('DMRMAPTB', 'latin1');
export const JOURNAL_MAGIC = Buffer.from('DMRMAPJR', 'latin1');
export const UUID_SIZE = 16;
export const FINGERPRINT_SIZE = 32;

const TWO32 = 0x1_0000_0000;
const MAX_HI = 0x1fffff; // hi word of a u64 that is still a safe integer

/** Reads a u64 as a number, or -1 when it is beyond Number.MAX_SAFE_INTEGER. */
function u64(b: Buffer, off: number): number {
  const hi = b.readUInt32LE(off + 4);
  if (hi > MAX_HI) return -1;
  return hi * TWO32 + b.readUInt32LE(off);
}

function putU64(b: Buffer, off: number, v: number): void {
  b.writeUInt32LE(v >>> 0, off);
  b.writeUInt32LE(Math.floor(v / TWO32), off + 4);
}

function u48(b: Buffer, off: number): number {
  return b.readUInt16LE(off + 4) * TWO32 + b.readUInt32LE(off);
}

function putU48(b: Buffer, off: number, v: number): void {
  b.writeUInt32LE(v >>> 0, off);
  b.writeUInt16LE(Math.floor(v / TWO32), off + 4);
}

function readCounters(b: Buffer, off: number): PersistentCounters | null {
  const c: Record<string, number> = {};
  for (let i = 0; i < COUNTER_NAMES.length; i++) {
    const v = u64(b, off + 8 * i);
    if (v < 0) return null;
    c[COUNTER_NAMES[i] as string] = v;
  }
  return c as unknown as PersistentCounters;
}

function putCounters(b: Buffer, off: number, c: PersistentCounters): void {
  for (let i = 0; i < COUNTER_SLOTS; i++) {
    const name = COUNTER_NAMES[i];
    putU64(b, off + 8 * i, name === undefined ? 0 : c[name]);
  }
}

export type Decoded<T> = { ok: true; value: T } | { ok: false; why: string };
const bad = (why: string): { ok: false; why: string } => ({ ok: false, why });

// ---------------------------------------------------------------------------------------------------------
// Superblock: 4096 bytes, two copies at the start of the spare region; written at format time only.

export const SB = {
  magic: 0,
  version: 8,
  flags: 12,
  uuid: 16,
  mainSize: 32,
  fingerprint: 40,
  blockSize: 72,
  journalRecordSize: 76,
  spareOffset: 80,
  spareSize: 88,
  metaLen: 96,
  slotCount: 104,
  slotSize: 112,
  journalRecords: 116,
  tableCopyLen: 120,
  tableA: 128,
  tableB: 136,
  journalA: 144,
  journalB: 152,
  formatTime: 160,
  crc: 168,
  end: 172,
} as const;

export interface Superblock {
  uuid: Buffer;
  mainSize: bigint;
  fingerprint: Buffer;
  geometry: Geometry;
  formatTime: number;
}

export function encodeSuperblock(sb: Superblock): Buffer {
  const g = sb.geometry;
  const b = Buffer.alloc(SUPERBLOCK_SIZE);
  SB_MAGIC.copy(b, SB.magic);
  b.writeUInt32LE(FORMAT_VERSION, SB.version);
  sb.uuid.copy(b, SB.uuid, 0, UUID_SIZE);
  b.writeBigUInt64LE(sb.mainSize, SB.mainSize);
  sb.fingerprint.copy(b, SB.fingerprint, 0, FINGERPRINT_SIZE);
  b.writeUInt32LE(g.blockSize, SB.blockSize);
  b.writeUInt32LE(JOURNAL_RECORD_SIZE, SB.journalRecordSize);
  putU64(b, SB.spareOffset, g.spareOffset);
  putU64(b, SB.spareSize, g.spareSize);
  putU64(b, SB.metaLen, g.metaLen);
  putU64(b, SB.slotCount, g.slotCount);
  b.writeUInt32LE(g.blockSize, SB.slotSize);
  b.writeUInt32LE(g.journalRecords, SB.journalRecords);
  putU64(b, SB.tableCopyLen, g.tableCopyLen);
  putU64(b, SB.tableA, g.tableOffsets[0]);
  putU64(b, SB.tableB, g.tableOffsets[1]);
  putU64(b, SB.journalA, g.journalOffsets[0]);
  putU64(b, SB.journalB, g.journalOffsets[1]);
  putU64(b, SB.formatTime, sb.formatTime);
  b.writeUInt32LE(crc32c(b, 0, SB.crc), SB.crc);
  return b;
}

export const hasMagic = (b: Buffer, magic: Buffer, off = 0): boolean =>
  b.length >= off + magic.length && b.subarray(off, off + magic.length).equals(magic);

/**
 * Decodes one superblock copy. Bad bytes → { ok: false }; a valid superblock of a newer format version
 * throws E_SPARE_METADATA (this program cannot use it, and must not repair or reformat it).
 */
export function decodeSuperblock(b: Buffer): Decoded<Superblock> {
  if (b.length < SB.end) return bad('short');
  if (!hasMagic(b, SB_MAGIC)) return bad('no magic');
  if (b.readUInt32LE(SB.crc) !== crc32c(b, 0, SB.crc)) return bad('bad checksum');
  const version = b.readUInt32LE(SB.version);
  if (version !== FORMAT_VERSION) {
    throw new DmrError(
      'E_SPARE_METADATA',
      `the spare's metadata has format version ${version}; this program reads version ${FORMAT_VERSION}`,
    );
  }
  const blockSize = b.readUInt32LE(SB.blockSize);
  const spareOffset = u64(b, SB.spareOffset);
  const spareSize = u64(b, SB.spareSize);
  const journalRecords = b.readUInt32LE(SB.journalRecords);
  let g: Geometry;
  try {
    g = computeGeometry({ spareOffset, spareSize, blockSize, journalRecords });
  } catch {
    return bad('impossible geometry');
  }
  // Every stored derived field must be what the geometry computes.
  const derived: Array<[number, number]> = [
    [SB.journalRecordSize, JOURNAL_RECORD_SIZE],
    [SB.slotSize, g.blockSize],
  ];
  for (const [off, v] of derived) if (b.readUInt32LE(off) !== v) return bad('inconsistent geometry');
  const derived64: Array<[number, number]> = [
    [SB.metaLen, g.metaLen],
    [SB.slotCount, g.slotCount],
    [SB.tableCopyLen, g.tableCopyLen],
    [SB.tableA, g.tableOffsets[0]],
    [SB.tableB, g.tableOffsets[1]],
    [SB.journalA, g.journalOffsets[0]],
    [SB.journalB, g.journalOffsets[1]],
  ];
  for (const [off, v] of derived64) if (u64(b, off) !== v) return bad('inconsistent geometry');
  const formatTime = u64(b, SB.formatTime);
  if (formatTime < 0 || b.readUInt32LE(SB.flags) !== 0) return bad('bad field');
  return {
    ok: true,
    value: {
      uuid: Buffer.from(b.subarray(SB.uuid, SB.uuid + UUID_SIZE)),
      mainSize: b.readBigUInt64LE(SB.mainSize),
      fingerprint: Buffer.from(b.subarray(SB.fingerprint, SB.fingerprint + FINGERPRINT_SIZE)),
      geometry: g,
      formatTime,
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Table copy: header + entries sorted by block + retired slots sorted ascending, one CRC over all of it.

export const TB = {
  magic: 0,
  version: 8,
  reserved: 12,
  uuid: 16,
  generation: 32,
  journalStartSeq: 40,
  entryCount: 48,
  retiredCount: 56,
  counters: 64,
  crc: 128,
  reserved2: 132,
  body: TABLE_HEADER_SIZE,
} as const;

export const ENTRY = { block: 0, slot: 8, flags: 14, reserved: 15, time: 16, errorCount: 22 } as const;
export const ENTRY_LOST = 1;
export const ENTRY_AUTO = 2;

export interface TableCopy {
  generation: number;
  journalStartSeq: number;
  crc: number;
  state: RemapState;
}

/** Encodes the whole state as one table copy (exactly as long as its content, not padded). */
export function encodeTableCopy(
  state: RemapState,
  uuid: Buffer,
  generation: number,
  journalStartSeq: number,
): { buf: Buffer; crc: number } {
  const blocks = state.table.sortedBlocks();
  const retired = state.allocator.retiredSlots();
  const n = blocks.length;
  const len = TB.body + n * ENTRY_SIZE + retired.length * RETIRED_SIZE;
  const b = Buffer.alloc(len);
  TABLE_MAGIC.copy(b, TB.magic);
  b.writeUInt32LE(FORMAT_VERSION, TB.version);
  uuid.copy(b, TB.uuid, 0, UUID_SIZE);
  putU64(b, TB.generation, generation);
  putU64(b, TB.journalStartSeq, journalStartSeq);
  putU64(b, TB.entryCount, n);
  putU64(b, TB.retiredCount, retired.length);
  putCounters(b, TB.counters, state.counters);
  let off = TB.body;
  for (let i = 0; i < n; i++, off += ENTRY_SIZE) {
    const block = blocks[i] as number;
    const e = state.table.get(block);
    if (e === undefined) throw new DmrError('E_INTERNAL', 'table changed while it was encoded');
    putU64(b, off + ENTRY.block, block);
    putU48(b, off + ENTRY.slot, e.slot);
    b[off + ENTRY.flags] = (e.state === 'lost' ? ENTRY_LOST : 0) | (e.origin === 'auto' ? ENTRY_AUTO : 0);
    putU48(b, off + ENTRY.time, e.time);
    b.writeUInt16LE(e.errorCount, off + ENTRY.errorCount);
  }
  for (const s of retired) {
    putU64(b, off, s);
    off += RETIRED_SIZE;
  }
  const crc = crc32c(b, TB.body, len, crc32c(b, 0, TB.crc));
  b.writeUInt32LE(crc, TB.crc);
  return { buf: b, crc };
}

/**
 * Decodes a table copy read from its area (`b` is the whole area, `geometry.tableCopyLen` bytes) into a
 * fresh RemapState; anything wrong (magic, pair UUID, checksum, a field out of range, a block or slot used
 * twice) → { ok: false }.
 */
export function decodeTableCopy(
  b: Buffer,
  ctx: { uuid: Buffer; geometry: Geometry; mainBlocks: number },
): Decoded<TableCopy> {
  const h = checkTableCopy(b, ctx);
  return h.ok ? buildTableCopy(b, h.value, ctx) : h;
}

export interface TableCopyHeader {
  generation: number;
  journalStartSeq: number;
  entryCount: number;
  retiredCount: number;
  crc: number;
}

/** Checks a table copy's header and checksum (cheap next to building its state). */
export function checkTableCopy(
  b: Buffer,
  ctx: { uuid: Buffer; geometry: Geometry },
): Decoded<TableCopyHeader> {
  const g = ctx.geometry;
  if (b.length < TB.body) return bad('short');
  if (!hasMagic(b, TABLE_MAGIC)) return bad('no magic');
  if (b.readUInt32LE(TB.version) !== FORMAT_VERSION) return bad('other version');
  if (!b.subarray(TB.uuid, TB.uuid + UUID_SIZE).equals(ctx.uuid)) return bad('other pair');
  const generation = u64(b, TB.generation);
  const journalStartSeq = u64(b, TB.journalStartSeq);
  const n = u64(b, TB.entryCount);
  const r = u64(b, TB.retiredCount);
  if (generation < 1 || journalStartSeq < 0 || n < 0 || r < 0) return bad('bad header');
  if (n + r > g.slotCount) return bad('more entries than slots');
  const len = TB.body + n * ENTRY_SIZE + r * RETIRED_SIZE;
  if (len > b.length) return bad('longer than its area');
  const crc = crc32c(b, TB.body, len, crc32c(b, 0, TB.crc));
  if (b.readUInt32LE(TB.crc) !== crc) return bad('bad checksum');
  return { ok: true, value: { generation, journalStartSeq, entryCount: n, retiredCount: r, crc } };
}

/** Builds the state of a table copy that passed checkTableCopy(); a field out of range → { ok: false }. */
export function buildTableCopy(
  b: Buffer,
  h: TableCopyHeader,
  ctx: { geometry: Geometry; mainBlocks: number },
): Decoded<TableCopy> {
  const g = ctx.geometry;
  const { generation, journalStartSeq, crc } = h;
  const n = h.entryCount;
  const r = h.retiredCount;
  const counters = readCounters(b, TB.counters);
  if (counters === null) return bad('bad counters');
  const state = new RemapState(g, ctx.mainBlocks);
  const table = state.table;
  const slots = new Float64Array(n);
  let prev = -1;
  let off = TB.body;
  for (let i = 0; i < n; i++, off += ENTRY_SIZE) {
    const block = u64(b, off + ENTRY.block);
    const slot = u48(b, off + ENTRY.slot);
    const flags = b[off + ENTRY.flags] as number;
    if (block <= prev || block >= ctx.mainBlocks) return bad(`entry ${i}: block out of order or range`);
    if (slot >= g.slotCount || (flags & ~(ENTRY_LOST | ENTRY_AUTO)) !== 0 || b[off + ENTRY.reserved] !== 0) {
      return bad(`entry ${i}: bad slot or flags`);
    }
    prev = block;
    slots[i] = slot;
    table.insertNew(
      block,
      slot,
      (flags & ENTRY_LOST) !== 0,
      (flags & ENTRY_AUTO) !== 0,
      u48(b, off + ENTRY.time),
      b.readUInt16LE(off + ENTRY.errorCount),
    );
  }
  const retired: number[] = [];
  prev = -1;
  for (let i = 0; i < r; i++, off += RETIRED_SIZE) {
    const s = u64(b, off);
    if (s <= prev || s >= g.slotCount) return bad(`retired slot ${i} out of order or range`);
    retired.push(s);
    prev = s;
  }
  try {
    state.allocator = SlotAllocator.fromState(g, slots, retired);
  } catch {
    return bad('a slot is used twice');
  }
  state.counters = counters;
  return { ok: true, value: { generation, journalStartSeq, crc, state } };
}

// ---------------------------------------------------------------------------------------------------------
// Journal record: one 4096-byte sector holding up to MAX_OPS_PER_RECORD ops and the counters after them.

export const JR = {
  magic: 0,
  uuid: 8,
  generation: 24,
  seq: 32,
  prevCrc: 40,
  opCount: 44,
  reserved: 46,
  counters: 48,
  crc: 112,
  reserved2: 116,
  ops: 120,
} as const;

export const OP = { code: 0, flags: 1, errorCount: 2, reserved: 4, block: 8, slot: 16, time: 24 } as const;
export const OP_SIZE = 32;
export const OP_LOST = 1;
export const OP_AUTO = 2;
export const MAX_OPS_PER_RECORD = Math.floor((JOURNAL_RECORD_SIZE - JR.ops) / OP_SIZE);

const OP_NAMES: Record<number, OpName> = Object.fromEntries(
  Object.entries(OP_CODES).map(([k, v]) => [v, k as OpName]),
) as Record<number, OpName>;

export interface JournalRecord {
  generation: number;
  seq: number;
  prevCrc: number;
  counters: PersistentCounters;
  ops: ResolvedOp[];
  crc: number;
}

export function encodeJournalRecord(
  uuid: Buffer,
  rec: Omit<JournalRecord, 'crc'>,
  into: Buffer = Buffer.alloc(JOURNAL_RECORD_SIZE),
  at = 0,
): number {
  if (rec.ops.length > MAX_OPS_PER_RECORD) throw new DmrError('E_INTERNAL', 'too many ops for one journal record');
  const b = into;
  b.fill(0, at, at + JOURNAL_RECORD_SIZE);
  JOURNAL_MAGIC.copy(b, at + JR.magic);
  uuid.copy(b, at + JR.uuid, 0, UUID_SIZE);
  putU64(b, at + JR.generation, rec.generation);
  putU64(b, at + JR.seq, rec.seq);
  b.writeUInt32LE(rec.prevCrc >>> 0, at + JR.prevCrc);
  b.writeUInt16LE(rec.ops.length, at + JR.opCount);
  putCounters(b, at + JR.counters, rec.counters);
  let off = at + JR.ops;
  for (const op of rec.ops) {
    b[off + OP.code] = OP_CODES[op.op];
    b[off + OP.flags] = (op.lost ? OP_LOST : 0) | (op.auto ? OP_AUTO : 0);
    b.writeUInt16LE(op.errorCount, off + OP.errorCount);
    putU64(b, off + OP.block, op.block);
    putU64(b, off + OP.slot, op.slot);
    putU64(b, off + OP.time, op.time);
    off += OP_SIZE;
  }
  const crc = crc32c(b, at + JR.ops, off, crc32c(b, at, at + JR.crc));
  b.writeUInt32LE(crc, at + JR.crc);
  return crc;
}

/** Decodes the record at `b[at, at + 4096)`; bad bytes or another pair's record → { ok: false }. */
export function decodeJournalRecord(b: Buffer, at: number, uuid: Buffer): Decoded<JournalRecord> {
  if (at < 0 || b.length < at + JOURNAL_RECORD_SIZE) return bad('short');
  if (!hasMagic(b, JOURNAL_MAGIC, at)) return bad('no magic');
  if (!b.subarray(at + JR.uuid, at + JR.uuid + UUID_SIZE).equals(uuid)) return bad('other pair');
  const opCount = b.readUInt16LE(at + JR.opCount);
  if (opCount > MAX_OPS_PER_RECORD) return bad('too many ops');
  const end = at + JR.ops + opCount * OP_SIZE;
  const crc = crc32c(b, at + JR.ops, end, crc32c(b, at, at + JR.crc));
  if (b.readUInt32LE(at + JR.crc) !== crc) return bad('bad checksum');
  const generation = u64(b, at + JR.generation);
  const seq = u64(b, at + JR.seq);
  const counters = readCounters(b, at + JR.counters);
  if (generation < 0 || seq < 0 || counters === null) return bad('bad header');
  const ops: ResolvedOp[] = [];
  for (let off = at + JR.ops; off < end; off += OP_SIZE) {
    const name = OP_NAMES[b[off + OP.code] as number];
    const flags = b[off + OP.flags] as number;
    const block = u64(b, off + OP.block);
    const slot = u64(b, off + OP.slot);
    const time = u64(b, off + OP.time);
    if (name === undefined || (flags & ~(OP_LOST | OP_AUTO)) !== 0 || block < 0 || slot < 0 || time < 0) {
      return bad('bad op');
    }
    ops.push({
      op: name,
      block,
      slot,
      lost: (flags & OP_LOST) !== 0,
      auto: (flags & OP_AUTO) !== 0,
      time,
      errorCount: b.readUInt16LE(off + OP.errorCount),
    });
  }
  return { ok: true, value: { generation, seq, prevCrc: b.readUInt32LE(at + JR.prevCrc), counters, ops, crc } };
}
