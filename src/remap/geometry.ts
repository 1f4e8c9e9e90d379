// Where everything lives in the spare region [spareOffset, spareOffset + spareSize) of the spare device.
// The metadata area comes first and is sized from the slot count (each table copy can hold one entry per
// slot); slots follow it. Format version 2 caps the slot count at `maxSlots` (set at format time, default
// DEFAULT_MAX_SLOTS), so a whole-disk spare does not get a table copy sized for hundreds of millions of
// slots; version 1 (still read) used every slot that fits. Offsets below are relative to the start of the
// spare region unless named `abs...`. Format version 3 has version 2's layout and adds one flag bit (the scan
// origin); it exists so that a program reading only versions 1 and 2 refuses such a spare at its superblock.
// See docs/FORMAT.md.
import { DmrError } from '../errors.js';

/** Alignment of every metadata structure and of the first slot (suits O_DIRECT and 4 KiB sectors). */
export const META_ALIGN = 4096;
export const SUPERBLOCK_SIZE = 4096;
export const JOURNAL_RECORD_SIZE = 4096;
export const TABLE_HEADER_SIZE = 136;
export const ENTRY_SIZE = 24;
export const RETIRED_SIZE = 8;
export const DEFAULT_JOURNAL_RECORDS = 1024;
export const MIN_JOURNAL_RECORDS = 2;
export const MAX_JOURNAL_RECORDS = 1 << 20;
/** Format versions this program reads; it formats the newest. */
export const FORMAT_VERSIONS = [1, 2, 3] as const;
export type FormatVersion = (typeof FORMAT_VERSIONS)[number];
export const FORMAT_VERSION: FormatVersion = 3;

export const isFormatVersion = (v: number): v is FormatVersion => (FORMAT_VERSIONS as readonly number[]).includes(v);

/** The versions this program reads, for a message: "1, 2 and 3". */
export function formatVersionList(): string {
  const all = FORMAT_VERSIONS.map(String);
  return all.length < 2 ? all.join('') : `${all.slice(0, -1).join(', ')} and ${all[all.length - 1] as string}`;
}
/**
 * Default slot cap of a version-2 (and later) format: 4 Mi slots, so a table copy is at most 96 MiB (2 GiB of slots at
 * 512-byte blocks, 16 GiB at 4 KiB). Reasoning in docs/FORMAT.md ("Why the slot count is capped").
 */
export const DEFAULT_MAX_SLOTS = 1 << 22;
/** Slots are u48 on disk. */
export const MAX_SLOTS_LIMIT = 2 ** 48 - 1;

export interface Geometry {
  /** Format version of the metadata (1: every slot that fits; 2 and 3: at most maxSlots slots). */
  version: FormatVersion;
  /** Version 2 and later: the slot cap chosen at format time (stored in the superblock). Version 1: null (no cap). */
  maxSlots: number | null;
  /** Absolute byte offset of the spare region on the spare device. */
  spareOffset: number;
  /** Length of the spare region in bytes. */
  spareSize: number;
  blockSize: 512 | 4096;
  /** Records per journal (there are two journals, one per table copy). */
  journalRecords: number;
  slotCount: number;
  /** Bytes reserved for one table copy (header + one entry per slot, 4 KiB aligned). */
  tableCopyLen: number;
  /** Length of the metadata area; slot 0 starts here. */
  metaLen: number;
  superblockOffsets: readonly [number, number];
  tableOffsets: readonly [number, number];
  journalOffsets: readonly [number, number];
}

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

export function tableCopyLenFor(slotCount: number): number {
  return align(TABLE_HEADER_SIZE + ENTRY_SIZE * slotCount, META_ALIGN);
}

export function metaLenFor(slotCount: number, journalRecords: number): number {
  return 2 * SUPERBLOCK_SIZE + 2 * tableCopyLenFor(slotCount) + 2 * journalRecords * JOURNAL_RECORD_SIZE;
}

export function checkBlockSize(blockSize: number): asserts blockSize is 512 | 4096 {
  if (blockSize !== 512 && blockSize !== 4096) {
    throw new DmrError('E_BLOCK_SIZE', `block size must be 512 or 4096, got ${blockSize}`);
  }
}

/**
 * Lays out a spare region: the largest slot count whose metadata area plus slots fit in `spareSize`, at most
 * `maxSlots` (version 2 and later; default DEFAULT_MAX_SLOTS; version 1 has no cap). Throws E_SPARE_TOO_SMALL when not
 * even one slot fits beside the metadata. Costs O(1) whatever the spare's size.
 */
export function computeGeometry(p: {
  spareOffset: number;
  spareSize: number;
  blockSize: number;
  journalRecords?: number;
  version?: FormatVersion;
  maxSlots?: number;
}): Geometry {
  const { spareOffset, spareSize, blockSize } = p;
  const journalRecords = p.journalRecords ?? DEFAULT_JOURNAL_RECORDS;
  const version = p.version ?? FORMAT_VERSION;
  if (!isFormatVersion(version)) throw new DmrError('E_INTERNAL', `unknown format version ${String(version)}`);
  let maxSlots: number | null = null;
  if (version >= 2) {
    maxSlots = p.maxSlots ?? DEFAULT_MAX_SLOTS;
    if (!Number.isSafeInteger(maxSlots) || maxSlots < 1 || maxSlots > MAX_SLOTS_LIMIT) {
      throw new DmrError('E_USAGE', `the slot cap must be from 1 to ${MAX_SLOTS_LIMIT}, got ${maxSlots}`);
    }
  } else if (p.maxSlots !== undefined) {
    throw new DmrError('E_INTERNAL', 'format version 1 has no slot cap');
  }
  checkBlockSize(blockSize);
  if (!Number.isSafeInteger(spareOffset) || spareOffset < 0 || spareOffset % META_ALIGN !== 0) {
    throw new DmrError('E_USAGE', `spare offset must be a multiple of ${META_ALIGN} bytes, got ${spareOffset}`);
  }
  if (!Number.isSafeInteger(spareSize) || spareSize < 0) {
    throw new DmrError('E_USAGE', `spare size must be a whole number of bytes, got ${spareSize}`);
  }
  if (!Number.isInteger(journalRecords) || journalRecords < MIN_JOURNAL_RECORDS || journalRecords > MAX_JOURNAL_RECORDS) {
    throw new DmrError('E_USAGE', `journal records must be from ${MIN_JOURNAL_RECORDS} to ${MAX_JOURNAL_RECORDS}, got ${journalRecords}`);
  }
  const fits = (n: number): boolean => metaLenFor(n, journalRecords) + n * blockSize <= spareSize;
  // Each slot costs blockSize bytes plus ENTRY_SIZE in each of the two table copies; start from that
  // estimate and correct for the 4 KiB rounding of the table copies.
  const fixed = 2 * SUPERBLOCK_SIZE + 2 * journalRecords * JOURNAL_RECORD_SIZE + 2 * (TABLE_HEADER_SIZE + META_ALIGN);
  let n = Math.max(0, Math.floor((spareSize - fixed) / (blockSize + 2 * ENTRY_SIZE)));
  while (fits(n + 1)) n++;
  while (n > 0 && !fits(n)) n--;
  if (maxSlots !== null) n = Math.min(n, maxSlots);
  if (n < 1) {
    const need = metaLenFor(1, journalRecords) + blockSize;
    throw new DmrError(
      'E_SPARE_TOO_SMALL',
      `spare region of ${spareSize} bytes is too small: its metadata and one ${blockSize}-byte slot need ${need} bytes`,
    );
  }
  const tableCopyLen = tableCopyLenFor(n);
  const t0 = 2 * SUPERBLOCK_SIZE;
  const j0 = t0 + 2 * tableCopyLen;
  const jl = journalRecords * JOURNAL_RECORD_SIZE;
  return {
    version,
    maxSlots,
    spareOffset,
    spareSize,
    blockSize,
    journalRecords,
    slotCount: n,
    tableCopyLen,
    metaLen: metaLenFor(n, journalRecords),
    superblockOffsets: [0, SUPERBLOCK_SIZE],
    tableOffsets: [t0, t0 + tableCopyLen],
    journalOffsets: [j0, j0 + jl],
  };
}

/** Absolute byte offset of `slot` on the spare device. */
export function slotOffset(g: Geometry, slot: number): number {
  return g.spareOffset + g.metaLen + slot * g.blockSize;
}
