// Byte layout of the spare's metadata (docs/FORMAT.md is the reference): superblock, table copy and journal
// record encoders and decoders. Everything is little-endian and checksummed with CRC32C. Decoders never
// throw on bad bytes: they report what is wrong, and the store decides (fall back, repair or refuse).
import { DmrError } from '../errors.js';
import { crc32c } from './crc32c.js';
import {
  computeGeometry,
  ENTRY_SIZE,
  FORMAT_VERSION,
  FORMAT_VERSIONS,
  formatVersionList,
  type FormatVersion,
  isFormatVersion,
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
  storedCounterCount,
  zeroCounters,
  type OpName,
  type PersistentCounters,
  type ResolvedOp,
} from './state.js';

export { FORMAT_VERSION, FORMAT_VERSIONS };
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

/**
 * Reads the counter slots at `off` as a spare of format version `v` stores them (storedCounterCount): the
 * slots past those are reserved and ignored (a counter a version does not store reads as 0), so a newer
 * program's counter in a reserved slot never makes this one refuse a record or a copy. null when a slot
 * holds a value beyond Number.MAX_SAFE_INTEGER.
 */
function readCounters(b: Buffer, off: number, v: FormatVersion): PersistentCounters | null {
  const c = zeroCounters();
  const stored = storedCounterCount(v);
  for (let i = 0; i < stored; i++) {
    const x = u64(b, off + 8 * i);
    if (x < 0) return null;
    c[COUNTER_NAMES[i] as keyof PersistentCounters] = x;
  }
  return c;
}

/** Writes every counter slot: those version `v` stores from `c`, the reserved ones as 0. */
function putCounters(b: Buffer, off: number, c: PersistentCounters, v: FormatVersion): void {
  const stored = storedCounterCount(v);
  for (let i = 0; i < COUNTER_SLOTS; i++) {
    const name = i < stored ? COUNTER_NAMES[i] : undefined;
    putU64(b, off + 8 * i, name === undefined ? 0 : c[name]);
  }
}

export type Decoded<T> = { ok: true; value: T } | { ok: false; why: string };
const bad = (why: string): { ok: false; why: string } => ({ ok: false, why });

// ---------------------------------------------------------------------------------------------------------
// Superblock: 4096 bytes, two copies at the start of the spare region; written at format time only.
// Version 2 added the slot cap at 168 and moved the CRC from 168 (version 1) to 176; version 3's superblock is
// version 2's (only its number differs: it is what makes an older program refuse a spare with scan entries).

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
  maxSlots: 168,
  crc: 176,
  end: 180,
  v1Crc: 168,
  v1End: 172,
} as const;

const sbCrcOffset = (v: FormatVersion): number => (v === 1 ? SB.v1Crc : SB.crc);

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
  b.writeUInt32LE(g.version, SB.version);
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
  if (g.version >= 2) putU64(b, SB.maxSlots, g.maxSlots ?? 0);
  const crcAt = sbCrcOffset(g.version);
  b.writeUInt32LE(crc32c(b, 0, crcAt), crcAt);
  return b;
}

export const hasMagic = (b: Buffer, magic: Buffer, off = 0): boolean =>
  b.length >= off + magic.length && b.subarray(off, off + magic.length).equals(magic);

/**
 * Decodes one superblock copy (format version 1, 2 or 3). Bad bytes → { ok: false }; a superblock of another
 * format version whose checksum holds (at either known CRC position) throws E_SPARE_METADATA: this program
 * cannot use it, and must not repair or reformat it.
 */
export function decodeSuperblock(b: Buffer): Decoded<Superblock> {
  if (b.length < SB.end) return bad('short');
  if (!hasMagic(b, SB_MAGIC)) return bad('no magic');
  const v = b.readUInt32LE(SB.version);
  if (!isFormatVersion(v)) {
    const checks = [SB.v1Crc, SB.crc].some((at) => b.readUInt32LE(at) === crc32c(b, 0, at));
    if (!checks) return bad('bad checksum');
    throw new DmrError(
      'E_SPARE_METADATA',
      `the spare's metadata has format version ${v}; this program reads versions ${formatVersionList()}`,
    );
  }
  const version: FormatVersion = v;
  const crcAt = sbCrcOffset(version);
  if (b.readUInt32LE(crcAt) !== crc32c(b, 0, crcAt)) return bad('bad checksum');
  const blockSize = b.readUInt32LE(SB.blockSize);
  const spareOffset = u64(b, SB.spareOffset);
  const spareSize = u64(b, SB.spareSize);
  const journalRecords = b.readUInt32LE(SB.journalRecords);
  let g: Geometry;
  try {
    g =
      version === 1
        ? computeGeometry({ spareOffset, spareSize, blockSize, journalRecords, version })
        : computeGeometry({ spareOffset, spareSize, blockSize, journalRecords, version, maxSlots: u64(b, SB.maxSlots) });
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
/** Format version 2 and later, with ENTRY_LOST: main still holds the lost block's last data. */
export const ENTRY_DATA_ON_MAIN = 4;
/** Format version 3 only, with ENTRY_AUTO: the entry's origin is the background scan (versions 1 and 2: auto). */
export const ENTRY_SCAN = 8;

/** The entry flag bits a table copy of format version `v` may hold. */
function entryFlagsOf(v: FormatVersion): number {
  if (v === 1) return ENTRY_LOST | ENTRY_AUTO;
  if (v === 2) return ENTRY_LOST | ENTRY_AUTO | ENTRY_DATA_ON_MAIN;
  return ENTRY_LOST | ENTRY_AUTO | ENTRY_DATA_ON_MAIN | ENTRY_SCAN;
}

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
  const version = state.allocator.geometry.version;
  const domBit = version >= 2 ? ENTRY_DATA_ON_MAIN : 0; // version 1 cannot store it
  const scanBit = version >= 3 ? ENTRY_SCAN : 0; // versions 1 and 2: stored as auto
  const len = TB.body + n * ENTRY_SIZE + retired.length * RETIRED_SIZE;
  const b = Buffer.alloc(len);
  TABLE_MAGIC.copy(b, TB.magic);
  b.writeUInt32LE(version, TB.version);
  uuid.copy(b, TB.uuid, 0, UUID_SIZE);
  putU64(b, TB.generation, generation);
  putU64(b, TB.journalStartSeq, journalStartSeq);
  putU64(b, TB.entryCount, n);
  putU64(b, TB.retiredCount, retired.length);
  putCounters(b, TB.counters, state.counters, version);
  let off = TB.body;
  for (let i = 0; i < n; i++, off += ENTRY_SIZE) {
    const block = blocks[i] as number;
    const e = state.table.get(block);
    if (e === undefined) throw new DmrError('E_INTERNAL', 'table changed while it was encoded');
    putU64(b, off + ENTRY.block, block);
    putU48(b, off + ENTRY.slot, e.slot);
    b[off + ENTRY.flags] =
      (e.state === 'lost' ? ENTRY_LOST : 0) |
      (e.origin !== 'manual' ? ENTRY_AUTO : 0) |
      (e.origin === 'scan' ? scanBit : 0) |
      (e.dataOnMain ? domBit : 0);
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
 * Decodes a whole table copy held in one buffer (`b` starts at the copy; at least its used bytes) into a
 * fresh RemapState; anything wrong (magic, pair UUID, checksum, a field out of range, a block or slot used
 * twice) → { ok: false }. The store streams copies through TableCopyDecoder instead (bounded memory).
 */
export function decodeTableCopy(
  b: Buffer,
  ctx: { uuid: Buffer; geometry: Geometry; mainBlocks: number },
): Decoded<TableCopy> {
  const h = decodeTableHeader(b, ctx);
  if (!h.ok) return h;
  // Check first, build only a copy whose checksum holds (the counts in the header are not trusted before).
  const check = new TableCopyDecoder(b, h.value, ctx, false);
  check.push(b.subarray(TB.body));
  const checked = check.finish();
  if (!checked.ok) return checked;
  const d = new TableCopyDecoder(b, h.value, ctx, true);
  d.push(b.subarray(TB.body));
  const r = d.finish();
  if (!r.ok) return r;
  const { generation, journalStartSeq, crc, state } = r.value;
  if (state === null) throw new DmrError('E_INTERNAL', 'table copy decoded without its state');
  return { ok: true, value: { generation, journalStartSeq, crc, state } };
}

export interface TableCopyHeader {
  generation: number;
  journalStartSeq: number;
  entryCount: number;
  retiredCount: number;
  /** Bytes of the copy in use: TB.body + 24n + 8r (the rest of its area is never read). */
  usedLength: number;
}

/**
 * Checks a table copy's header (the first TB.body bytes of its area): magic, version (the superblock's),
 * pair UUID, and counts that fit the area. The checksum covers the body too: TableCopyDecoder checks it.
 */
export function decodeTableHeader(
  b: Buffer,
  ctx: { uuid: Buffer; geometry: Geometry },
): Decoded<TableCopyHeader> {
  const g = ctx.geometry;
  if (b.length < TB.body) return bad('short');
  if (!hasMagic(b, TABLE_MAGIC)) return bad('no magic');
  if (b.readUInt32LE(TB.version) !== g.version) return bad('other version');
  if (!b.subarray(TB.uuid, TB.uuid + UUID_SIZE).equals(ctx.uuid)) return bad('other pair');
  const generation = u64(b, TB.generation);
  const journalStartSeq = u64(b, TB.journalStartSeq);
  const n = u64(b, TB.entryCount);
  const r = u64(b, TB.retiredCount);
  if (generation < 1 || journalStartSeq < 0 || n < 0 || r < 0) return bad('bad header');
  if (n + r > g.slotCount) return bad('more entries than slots');
  const usedLength = TB.body + n * ENTRY_SIZE + r * RETIRED_SIZE;
  if (usedLength > g.tableCopyLen) return bad('longer than its area');
  return { ok: true, value: { generation, journalStartSeq, entryCount: n, retiredCount: r, usedLength } };
}

/** What TableCopyDecoder.finish() gives: the copy's header fields, its CRC and (when built) its state. */
export interface DecodedTableCopy {
  generation: number;
  journalStartSeq: number;
  crc: number;
  state: RemapState | null;
}

/**
 * Decodes a table copy's body fed in order in chunks of any size (so a copy of millions of entries is never
 * one buffer): checksums it, checks every entry (blocks ascending and in range, slots in range, flags) and
 * retired slot (ascending, in range), and when `build` is set inserts them into a fresh RemapState. push()
 * returns false as soon as the copy is known bad (stop reading); finish() checks the checksum and, when
 * building, that no slot is used twice. Memory: the state being built plus one chunk. The header's counts
 * are only vouched for by the checksum at the end: build only a copy a check pass (`build` false) accepted.
 */
export class TableCopyDecoder {
  private readonly g: Geometry;
  private readonly mainBlocks: number;
  private readonly h: TableCopyHeader;
  private readonly state: RemapState | null;
  private readonly counters: PersistentCounters | null;
  private readonly storedCrc: number;
  private crc: number;
  /** Body bytes not fed yet. */
  private left: number;
  /** Bytes of an entry or retired slot split across two chunks. */
  private carry: Buffer = Buffer.alloc(0);
  private entriesSeen = 0;
  private retiredSeen = 0;
  private prevBlock = -1;
  private prevRetired = -1;
  private readonly slots: number[] = [];
  private readonly retired: number[] = [];
  private why: string | null = null;

  /** `header` holds at least the first TB.body bytes of the copy; `h` is its decodeTableHeader() result. */
  constructor(header: Buffer, h: TableCopyHeader, ctx: { geometry: Geometry; mainBlocks: number }, build: boolean) {
    this.g = ctx.geometry;
    this.mainBlocks = ctx.mainBlocks;
    this.h = h;
    this.state = build ? new RemapState(ctx.geometry, ctx.mainBlocks) : null;
    this.counters = readCounters(header, TB.counters, ctx.geometry.version);
    if (this.counters === null) this.why = 'bad counters';
    this.storedCrc = header.readUInt32LE(TB.crc);
    this.crc = crc32c(header, 0, TB.crc);
    this.left = h.usedLength - TB.body;
  }

  /** Body bytes still expected. */
  get remaining(): number {
    return this.left;
  }

  /** Feeds the next body bytes (anything past the used length is ignored); false once the copy is bad. */
  push(chunk: Buffer): boolean {
    if (this.why !== null) return false;
    const data0 = chunk.length > this.left ? chunk.subarray(0, this.left) : chunk;
    if (data0.length === 0) return true;
    this.crc = crc32c(data0, 0, data0.length, this.crc);
    this.left -= data0.length;
    const data = this.carry.length > 0 ? Buffer.concat([this.carry, data0]) : data0;
    let off = 0;
    while (this.why === null) {
      if (this.entriesSeen < this.h.entryCount) {
        if (data.length - off < ENTRY_SIZE) break;
        this.entry(data, off);
        off += ENTRY_SIZE;
      } else if (this.retiredSeen < this.h.retiredCount) {
        if (data.length - off < RETIRED_SIZE) break;
        this.retiredSlot(data, off);
        off += RETIRED_SIZE;
      } else break;
    }
    this.carry = off < data.length ? Buffer.from(data.subarray(off)) : Buffer.alloc(0);
    return this.why === null;
  }

  private entry(b: Buffer, off: number): void {
    const i = this.entriesSeen++;
    const block = u64(b, off + ENTRY.block);
    const slot = u48(b, off + ENTRY.slot);
    const flags = b[off + ENTRY.flags] as number;
    if (block <= this.prevBlock || block >= this.mainBlocks) {
      this.why = `entry ${i}: block out of order or range`;
      return;
    }
    const badFlags =
      (flags & ~entryFlagsOf(this.g.version)) !== 0 ||
      ((flags & ENTRY_DATA_ON_MAIN) !== 0 && (flags & ENTRY_LOST) === 0) ||
      ((flags & ENTRY_SCAN) !== 0 && (flags & ENTRY_AUTO) === 0);
    if (slot >= this.g.slotCount || badFlags || b[off + ENTRY.reserved] !== 0) {
      this.why = `entry ${i}: bad slot or flags`;
      return;
    }
    this.prevBlock = block;
    if (this.state === null) return;
    this.slots.push(slot);
    this.state.table.insertNew(
      block,
      slot,
      (flags & ENTRY_LOST) !== 0,
      (flags & ENTRY_AUTO) !== 0,
      u48(b, off + ENTRY.time),
      b.readUInt16LE(off + ENTRY.errorCount),
      (flags & ENTRY_DATA_ON_MAIN) !== 0,
      (flags & ENTRY_SCAN) !== 0,
    );
  }

  private retiredSlot(b: Buffer, off: number): void {
    const i = this.retiredSeen++;
    const s = u64(b, off);
    if (s <= this.prevRetired || s >= this.g.slotCount) {
      this.why = `retired slot ${i} out of order or range`;
      return;
    }
    this.prevRetired = s;
    if (this.state !== null) this.retired.push(s);
  }

  /** After the whole body was fed: the decoded copy, or why it is bad. */
  finish(): Decoded<DecodedTableCopy> {
    if (this.why !== null) return bad(this.why);
    if (this.left > 0 || this.carry.length > 0) return bad('short');
    if (this.crc !== this.storedCrc) return bad('bad checksum');
    const { generation, journalStartSeq } = this.h;
    const state = this.state;
    if (state !== null) {
      try {
        state.allocator = SlotAllocator.fromState(this.g, this.slots, this.retired);
      } catch {
        return bad('a slot is used twice');
      }
      state.counters = this.counters as PersistentCounters;
    }
    return { ok: true, value: { generation, journalStartSeq, crc: this.crc, state } };
  }
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
/** Format version 2 and later, on remap (with OP_LOST) and lost: main still holds the block's last data. */
export const OP_DATA_ON_MAIN = 4;
/** Format version 3 only, remap ops with OP_AUTO: the remap's origin is the background scan. */
export const OP_SCAN = 8;

/** The op flag bits a journal record of format version `v` may hold. */
function opFlagsOf(v: FormatVersion): number {
  if (v === 1) return OP_LOST | OP_AUTO;
  if (v === 2) return OP_LOST | OP_AUTO | OP_DATA_ON_MAIN;
  return OP_LOST | OP_AUTO | OP_DATA_ON_MAIN | OP_SCAN;
}
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

/**
 * Encodes a journal record of a spare of format version `version` into `into` at `at` (4096 bytes) and
 * returns its CRC. The version decides which counters are stored (a version-1/2 spare's scanRemaps slot is
 * reserved: written as 0).
 */
export function encodeJournalRecord(
  uuid: Buffer,
  rec: Omit<JournalRecord, 'crc'>,
  into: Buffer = Buffer.alloc(JOURNAL_RECORD_SIZE),
  at = 0,
  version: FormatVersion = FORMAT_VERSION,
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
  putCounters(b, at + JR.counters, rec.counters, version);
  let off = at + JR.ops;
  for (const op of rec.ops) {
    b[off + OP.code] = OP_CODES[op.op];
    b[off + OP.flags] = (op.lost ? OP_LOST : 0) | (op.auto ? OP_AUTO : 0) | (op.dataOnMain ? OP_DATA_ON_MAIN : 0) | (op.scan ? OP_SCAN : 0);
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

/**
 * Decodes the record at `b[at, at + 4096)` of a spare of format version `version`; bad bytes, another
 * pair's record, or a flag that version or opcode cannot carry → { ok: false }.
 */
export function decodeJournalRecord(
  b: Buffer,
  at: number,
  uuid: Buffer,
  version: FormatVersion = FORMAT_VERSION,
): Decoded<JournalRecord> {
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
  const counters = readCounters(b, at + JR.counters, version);
  if (generation < 0 || seq < 0 || counters === null) return bad('bad header');
  const ops: ResolvedOp[] = [];
  const allowed = opFlagsOf(version);
  for (let off = at + JR.ops; off < end; off += OP_SIZE) {
    const name = OP_NAMES[b[off + OP.code] as number];
    const flags = b[off + OP.flags] as number;
    const block = u64(b, off + OP.block);
    const slot = u64(b, off + OP.slot);
    const time = u64(b, off + OP.time);
    if (name === undefined || (flags & ~allowed) !== 0 || block < 0 || slot < 0 || time < 0) return bad('bad op');
    const dataOnMain = (flags & OP_DATA_ON_MAIN) !== 0;
    if (dataOnMain && !(name === 'lost' || (name === 'remap' && (flags & OP_LOST) !== 0))) return bad('bad op');
    const scan = (flags & OP_SCAN) !== 0;
    if (scan && !(name === 'remap' && (flags & OP_AUTO) !== 0)) return bad('bad op');
    ops.push({
      op: name,
      block,
      slot,
      lost: (flags & OP_LOST) !== 0,
      auto: (flags & OP_AUTO) !== 0,
      scan,
      dataOnMain,
      time,
      errorCount: b.readUInt16LE(off + OP.errorCount),
    });
  }
  return { ok: true, value: { generation, seq, prevCrc: b.readUInt32LE(at + JR.prevCrc), counters, ops, crc } };
}
