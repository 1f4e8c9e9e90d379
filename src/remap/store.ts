// The remap store: the remap state's crash-safe home on the spare (layout in docs/FORMAT.md). open() finds,
// checks, repairs or formats the metadata and rebuilds the table; commit() makes ops durable with one
// journal write and one flush before it resolves (DESIGN.md invariant 2: a remap is durable before any I/O
// depends on it); when the journal is full a compaction writes the whole state as a new table copy.
//
// Crash safety rests on three rules: (1) the table copy being written is never the one the current state
// was loaded from; (2) journal records of generation g+1 are only written after table copy g+1 is flushed;
// (3) each journal record carries its generation, a consecutive sequence number and the CRC of the record
// before it (the first one: the CRC of its table copy), so replay stops exactly at the end of what was
// committed, whatever stale records follow.
import { createHash, randomBytes } from 'node:crypto';
import { DmrError } from '../errors.js';
import type { SlotAllocator } from './allocator.js';
import {
  decodeJournalRecord,
  decodeTableHeader,
  decodeSuperblock,
  encodeJournalRecord,
  encodeSuperblock,
  encodeTableCopy,
  FINGERPRINT_SIZE,
  hasMagic,
  MAX_OPS_PER_RECORD,
  SB_MAGIC,
  TableCopyDecoder,
  TB,
  type Decoded,
  type DecodedTableCopy,
  type Superblock,
} from './format.js';
import {
  computeGeometry,
  FORMAT_VERSION,
  type FormatVersion,
  JOURNAL_RECORD_SIZE,
  META_ALIGN,
  SUPERBLOCK_SIZE,
  type Geometry,
} from './geometry.js';
import type { SpareIo } from './io.js';
import { RemapState, type PersistentCounters, type RemapOp, type ResolvedOp, type Undo } from './state.js';
import type { EntryOrigin, RemapTable } from './table.js';

export interface MainIdentity {
  /** Size of the main device in bytes. */
  size: bigint;
  /**
   * 32 bytes the caller computes that identify the main device and stay the same for its whole life (see
   * mainFingerprint() and docs/FORMAT.md). A spare formatted for another fingerprint is refused.
   */
  fingerprint: Uint8Array;
}

export interface OpenOptions {
  main: MainIdentity;
  blockSize: 512 | 4096;
  /** Start of the spare region on the spare device, a multiple of 4096 (default 0). */
  spareOffset?: number | bigint;
  /** Length of the spare region (default: what the superblock says, or the rest of the device). */
  spareSize?: number | bigint;
  /** --force-format: format the spare instead of refusing it (another main's, or unusable metadata). */
  force?: boolean;
  /** The spare must already hold metadata (recovery of a running device): a fresh one is refused, never formatted. */
  mustExist?: boolean;
  /** The error's message when `mustExist` finds no metadata (default: the recovery's). */
  noTableMessage?: string;
  /** Records per journal when formatting (default 1024). */
  journalRecords?: number;
  /** Slot cap when formatting (format version 2 and later; default DEFAULT_MAX_SLOTS). */
  maxSlots?: number;
  /**
   * Format version to write when formatting (default: the newest, 3). Versions 1 and 2 exist so tests and
   * benchmarks can make the older layouts; open() reads all three whatever this says.
   */
  formatVersion?: FormatVersion;
  /** Clock for op times (unix ms); default Date.now. */
  now?: () => number;
}

export interface LoadReport {
  /** The spare was formatted by this open (fresh, or taken over with force). */
  formatted: boolean;
  /** Why it was formatted: 'fresh' spare or the refusal that `force` overrode. */
  formatReason: string | null;
  /** Generation of the table copy the state was loaded from, and which copy (0 = A, 1 = B). */
  loadedGeneration: number;
  loadedCopy: 0 | 1;
  replayedRecords: number;
  replayedOps: number;
  /** Why journal replay stopped (end of the committed records). */
  journalStop: string;
  /** Repairs written during open, in order (e.g. "superblock copy 1 rewritten from copy 0"). */
  repairs: string[];
}

export interface OpenResult {
  store: RemapStore;
  table: RemapTable;
  allocator: SlotAllocator;
  report: LoadReport;
}

const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function toNum(v: number | bigint, what: string): number {
  const b = typeof v === 'bigint' ? v : Number.isSafeInteger(v) ? BigInt(v) : -1n;
  if (b < 0n || b > SAFE) throw new DmrError('E_USAGE', `${what} must be a whole number of bytes, got ${String(v)}`);
  return Number(b);
}

interface Prepared {
  spareOffset: number;
  spareSize: number | undefined;
  deviceSize: number;
  mainSize: bigint;
  mainBlocks: number;
  fingerprint: Buffer;
  blockSize: 512 | 4096;
  journalRecords: number | undefined;
  maxSlots: number | undefined;
  formatVersion: FormatVersion | undefined;
  force: boolean;
  now: () => number;
}

function prepare(io: SpareIo, o: OpenOptions): Prepared {
  if (o.blockSize !== 512 && o.blockSize !== 4096) {
    throw new DmrError('E_BLOCK_SIZE', `block size must be 512 or 4096, got ${String(o.blockSize)}`);
  }
  if (o.main.fingerprint.length !== FINGERPRINT_SIZE) {
    throw new DmrError('E_INTERNAL', `main fingerprint must be ${FINGERPRINT_SIZE} bytes`);
  }
  const mainBlocks = o.main.size / BigInt(o.blockSize);
  if (mainBlocks < 1n || mainBlocks > SAFE) {
    throw new DmrError('E_DEVICE_INVALID', `main device size ${o.main.size} bytes is not usable with block size ${o.blockSize}`);
  }
  const spareOffset = toNum(o.spareOffset ?? 0, 'spare offset');
  if (spareOffset % META_ALIGN !== 0) {
    throw new DmrError('E_USAGE', `spare offset must be a multiple of ${META_ALIGN} bytes, got ${spareOffset}`);
  }
  const deviceSize = toNum(io.size, 'spare device size');
  const spareSize = o.spareSize === undefined ? undefined : toNum(o.spareSize, 'spare size');
  const end = spareOffset + (spareSize ?? 0);
  if (end > deviceSize || spareOffset + 2 * SUPERBLOCK_SIZE > deviceSize) {
    throw new DmrError(
      'E_SPARE_TOO_SMALL',
      `spare region [${spareOffset}, ${spareSize === undefined ? 'end' : end}) does not fit in the spare device (${deviceSize} bytes)`,
    );
  }
  return {
    spareOffset,
    spareSize,
    deviceSize,
    mainSize: o.main.size,
    mainBlocks: Number(mainBlocks),
    fingerprint: Buffer.from(o.main.fingerprint),
    blockSize: o.blockSize,
    journalRecords: o.journalRecords,
    maxSlots: o.maxSlots,
    formatVersion: o.formatVersion,
    force: o.force === true,
    now: o.now ?? Date.now,
  };
}

interface Replay {
  records: number;
  ops: number;
  nextSeq: number;
  lastCrc: number;
  stop: string;
}

/** Journal records read per I/O during replay: replay stops at the first bad record, reads stay small. */
const REPLAY_CHUNK_RECORDS = 64;
/** Bytes of a table copy read per I/O while loading it (a multiple of 4096). */
export const TABLE_READ_CHUNK = 4 * 1024 * 1024;

/**
 * Replays the journal at absolute offset `abs` (`records` records) of generation `gen` onto `state`:
 * records 0, 1, ... while each is valid, of that generation, numbered startSeq + i, chained to the CRC
 * before it (`prevCrc`; null: do not check the first record's link) and its ops fit the state. Reads the
 * journal in small chunks up to the first record that fails, so its cost is bounded by what is in it.
 */
async function replay(
  io: SpareIo,
  abs: number,
  records: number,
  state: RemapState,
  uuid: Buffer,
  gen: number,
  startSeq: number,
  prevCrc: number | null,
): Promise<Replay> {
  let expectPrev = prevCrc;
  const version = state.allocator.geometry.version;
  let ops = 0;
  let i = 0;
  let stop: string | null = null;
  while (stop === null && i < records) {
    const n = Math.min(REPLAY_CHUNK_RECORDS, records - i);
    const jbuf = await io.read(abs + i * JOURNAL_RECORD_SIZE, n * JOURNAL_RECORD_SIZE);
    for (let k = 0; k < n; k++, i++) {
      const d = decodeJournalRecord(jbuf, k * JOURNAL_RECORD_SIZE, uuid, version);
      if (!d.ok) {
        stop = `record ${i}: ${d.why}`;
        break;
      }
      const r = d.value;
      if (r.generation !== gen) {
        stop = `record ${i}: generation ${r.generation}, not ${gen}`;
        break;
      }
      if (r.seq !== startSeq + i) {
        stop = `record ${i}: sequence ${r.seq}, not ${startSeq + i}`;
        break;
      }
      if (expectPrev !== null && r.prevCrc !== expectPrev) {
        stop = `record ${i}: not chained to the record before it`;
        break;
      }
      try {
        state.applyAll(r.ops);
      } catch (e) {
        if (!(e instanceof DmrError)) throw e;
        stop = `record ${i}: ${e.message}`;
        break;
      }
      state.counters = { ...r.counters };
      ops += r.ops.length;
      expectPrev = r.crc;
    }
  }
  return { records: i, ops, nextSeq: startSeq + i, lastCrc: expectPrev ?? 0, stop: stop ?? 'journal full' };
}

/**
 * Reads and decodes the table copy at absolute offset `abs`: its header, then only its used bytes
 * (TB.body + 24n + 8r) in TABLE_READ_CHUNK reads, stopping at the first bad entry. Cost and memory follow
 * the entries in the copy, not the size of its area. `build`: also build its state (else only check it).
 *
 * The counts in the header are only vouched for by the checksum at the end of the body, so nothing is built
 * before a check pass has verified it: a bit flip raising the entry count must not make the loader build
 * stale entries past the real ones (up to the slot count) before the checksum fails. The build pass then
 * feeds the bytes kept from the check pass (a copy of up to TABLE_READ_CHUNK bytes) or reads them again,
 * and checks the checksum once more.
 */
export async function readTableCopy(
  io: SpareIo,
  abs: number,
  ctx: { uuid: Buffer; geometry: Geometry; mainBlocks: number },
  build: boolean,
): Promise<Decoded<DecodedTableCopy>> {
  const first = await io.read(abs, Math.min(META_ALIGN, ctx.geometry.tableCopyLen));
  const h = decodeTableHeader(first, ctx);
  if (!h.ok) return h;
  let kept: Buffer[] | null = [];
  let keptBytes = first.length;
  const pass = async (dec: TableCopyDecoder, from: Buffer[] | null): Promise<Decoded<DecodedTableCopy>> => {
    let ok = dec.push(first.subarray(TB.body));
    if (from !== null) {
      for (const chunk of from) if (ok) ok = dec.push(chunk);
      return dec.finish();
    }
    let pos = first.length;
    while (ok && dec.remaining > 0) {
      const len = Math.min(TABLE_READ_CHUNK, Math.ceil(dec.remaining / META_ALIGN) * META_ALIGN);
      const chunk = await io.read(abs + pos, len);
      ok = dec.push(chunk);
      pos += len;
      if (kept !== null && keptBytes + len <= TABLE_READ_CHUNK) {
        kept.push(chunk);
        keptBytes += len;
      } else kept = null;
    }
    return dec.finish();
  };
  const checked = await pass(new TableCopyDecoder(first, h.value, ctx, false), null);
  if (!build || !checked.ok) return checked;
  return pass(new TableCopyDecoder(first, h.value, ctx, true), kept);
}

/** sha256 over the given parts: a convenient way to build a MainIdentity fingerprint. */
export function mainFingerprint(...parts: Array<string | Uint8Array | bigint | number>): Buffer {
  const h = createHash('sha256');
  for (const p of parts) {
    const b = typeof p === 'string' || typeof p === 'bigint' || typeof p === 'number' ? Buffer.from(String(p)) : p;
    h.update(Buffer.from(String(b.length) + ':'));
    h.update(b);
  }
  return h.digest();
}

/** A committed op, with the origin its caller gave a remap (a version-1/2 spare stores `scan` as `auto`). */
export interface CommittedOp {
  op: ResolvedOp;
  origin: EntryOrigin | null;
}

export class RemapStore {
  readonly io: SpareIo;
  readonly geometry: Geometry;
  readonly uuid: Buffer;
  readonly state: RemapState;
  private readonly now: () => number;
  /** Generation of the current table copy and which copy holds it; its journal is the one appended to. */
  private gen: number;
  private curCopy: 0 | 1;
  /** Records written to the current journal, next sequence number, CRC the next record chains to. */
  private pos = 0;
  private nextSeq: number;
  private prevCrc: number;
  private tail: Promise<unknown> = Promise.resolve();
  private failure: DmrError | null = null;
  /**
   * Told of every op once it is durable and applied (not of a journal replayed at open): the one place a
   * new remap-table entry is known, with the origin its caller asked for (the health model's new bad blocks).
   * Must not throw (a throw is caught and ignored: the commit is done).
   */
  onCommitted: ((ops: readonly CommittedOp[]) => void) | null = null;

  private constructor(io: SpareIo, g: Geometry, uuid: Buffer, state: RemapState, now: () => number, cur: {
    gen: number;
    copy: 0 | 1;
    pos: number;
    nextSeq: number;
    prevCrc: number;
  }) {
    this.io = io;
    this.geometry = g;
    this.uuid = uuid;
    this.state = state;
    this.now = now;
    this.gen = cur.gen;
    this.curCopy = cur.copy;
    this.pos = cur.pos;
    this.nextSeq = cur.nextSeq;
    this.prevCrc = cur.prevCrc;
  }

  /**
   * Opens the remap metadata of the spare region: checks it belongs to this main device, loads the newest
   * valid table copy, replays the journal, repairs a corrupt superblock or table copy, and formats a fresh
   * spare. Refuses (typed error, nothing written) a spare of another main (E_SPARE_FOREIGN), of another block
   * size (E_BLOCK_SIZE) or spare size, or whose metadata is ours but unusable (E_SPARE_METADATA); `force`
   * formats it instead.
   */
  static async open(io: SpareIo, opts: OpenOptions): Promise<OpenResult> {
    const p = prepare(io, opts);
    const sbs = await io.read(p.spareOffset, 2 * SUPERBLOCK_SIZE);
    const raw = [sbs.subarray(0, SUPERBLOCK_SIZE), sbs.subarray(SUPERBLOCK_SIZE)] as const;
    const d0 = decodeSuperblock(raw[0]);
    const d1 = decodeSuperblock(raw[1]);
    const refuse = async (e: DmrError): Promise<OpenResult> => {
      if (!p.force) throw e;
      return RemapStore.doFormat(io, p, `forced over: ${e.message}`);
    };
    const sbOk = d0.ok ? d0 : d1.ok ? d1 : null;
    if (sbOk === null) {
      if (!hasMagic(raw[0], SB_MAGIC) && !hasMagic(raw[1], SB_MAGIC)) {
        if (opts.mustExist === true) {
          throw new DmrError('E_SPARE_METADATA', opts.noTableMessage ?? 'the spare holds no dmremap-ublk metadata, but the device being recovered keeps its remap table there');
        }
        return RemapStore.doFormat(io, p, 'fresh');
      }
      return refuse(
        new DmrError(
          'E_SPARE_METADATA',
          'both superblock copies on the spare are corrupt; refusing to format over what may be remapped data (use --force-format to format it)',
        ),
      );
    }
    const sb = sbOk.value;
    const g = sb.geometry;
    if (sb.mainSize !== p.mainSize || !sb.fingerprint.equals(p.fingerprint)) {
      return refuse(
        new DmrError(
          'E_SPARE_FOREIGN',
          `the spare holds the remap table of another main device (formatted for a main of ${sb.mainSize} bytes, ` +
            `fingerprint ${sb.fingerprint.subarray(0, 8).toString('hex')}; this main is ${p.mainSize} bytes, ` +
            `fingerprint ${p.fingerprint.subarray(0, 8).toString('hex')}); use --force-format to take it over`,
        ),
      );
    }
    if (g.blockSize !== p.blockSize) {
      return refuse(
        new DmrError('E_BLOCK_SIZE', `the spare was formatted for block size ${g.blockSize}, not ${p.blockSize} (use --force-format to format it again)`),
      );
    }
    if (g.spareOffset !== p.spareOffset || (p.spareSize !== undefined && p.spareSize !== g.spareSize)) {
      return refuse(
        new DmrError(
          'E_SPARE_METADATA',
          `the spare was formatted with spare offset ${g.spareOffset} and size ${g.spareSize}, not offset ${p.spareOffset}` +
            (p.spareSize === undefined ? '' : ` and size ${p.spareSize}`) + ' (use --force-format to format it again)',
        ),
      );
    }
    if (g.spareOffset + g.spareSize > p.deviceSize) {
      return refuse(
        new DmrError('E_SPARE_TOO_SMALL', `the spare region (${g.spareSize} bytes at ${g.spareOffset}) no longer fits in the spare device (${p.deviceSize} bytes)`),
      );
    }

    // Table copies: the newest valid one.
    const at = (rel: number): number => g.spareOffset + rel;
    const ctx = { uuid: sb.uuid, geometry: g, mainBlocks: p.mainBlocks };
    // Both headers first (4 KiB each) to order the copies by generation; then the newest is read, checked
    // and built (only its used bytes); if it does not validate, the other one is tried. The copy not loaded
    // is still checked (its used bytes, no state built) so that a corrupt one is repaired below.
    const tableAt = [at(g.tableOffsets[0]), at(g.tableOffsets[1])] as const;
    const heads = [
      decodeTableHeader(await io.read(tableAt[0], META_ALIGN), ctx),
      decodeTableHeader(await io.read(tableAt[1], META_ALIGN), ctx),
    ] as const;
    /** Why each copy is unusable ('' = valid as far as checked). */
    const whyBad: [string, string] = [heads[0].ok ? '' : heads[0].why, heads[1].ok ? '' : heads[1].why];
    const order: Array<0 | 1> =
      heads[0].ok && heads[1].ok && heads[1].value.generation > heads[0].value.generation ? [1, 0] : [0, 1];
    let copy: 0 | 1 | null = null;
    let loadedCopy: DecodedTableCopy | null = null;
    for (const c of order) {
      if (whyBad[c] !== '') continue;
      const built = await readTableCopy(io, tableAt[c], ctx, true);
      if (built.ok && built.value.state !== null) {
        copy = c;
        loadedCopy = built.value;
        break;
      }
      whyBad[c] = built.ok ? 'not built' : built.why;
    }
    if (copy === null || loadedCopy === null || loadedCopy.state === null) {
      return refuse(
        new DmrError(
          'E_SPARE_METADATA',
          `both copies of the remap table on the spare are corrupt (A: ${whyBad[0]}; B: ${whyBad[1]}); refusing to format over them (use --force-format to format it)`,
        ),
      );
    }
    const other: 0 | 1 = copy === 0 ? 1 : 0;
    if (whyBad[other] === '' && order[0] === copy) {
      const checked = await readTableCopy(io, tableAt[other], ctx, false);
      if (!checked.ok) whyBad[other] = checked.why;
    }
    const state = loadedCopy.state;
    let gen = loadedCopy.generation;
    const J = g.journalRecords;
    const r1 = await replay(io, at(g.journalOffsets[copy]), J, state, sb.uuid, gen, loadedCopy.journalStartSeq, loadedCopy.crc);
    let cur = { gen, copy, pos: r1.records, nextSeq: r1.nextSeq, prevCrc: r1.lastCrc };
    let replayedRecords = r1.records;
    let replayedOps = r1.ops;
    let journalStop = r1.stop;
    const otherBad = whyBad[other] !== '';
    if (otherBad) {
      // The other copy may be a newer generation that got corrupt after records were journaled behind it:
      // its journal then continues this one (its first record cannot be checked against the lost copy's CRC).
      const r2 = await replay(io, at(g.journalOffsets[other]), J, state, sb.uuid, gen + 1, r1.nextSeq, null);
      if (r2.records > 0) {
        gen += 1;
        cur = { gen, copy: other, pos: r2.records, nextSeq: r2.nextSeq, prevCrc: r2.lastCrc };
        replayedRecords += r2.records;
        replayedOps += r2.ops;
        journalStop = r2.stop;
      }
    }

    const store = new RemapStore(io, g, sb.uuid, state, p.now, cur);
    const repairs: string[] = [];
    // Superblock: copy 0 wins (a format writes it first); make the other copy identical.
    const good = d0.ok ? 0 : 1;
    const goodRaw = Buffer.from(raw[good]);
    if (!goodRaw.equals(raw[1 - good] as Buffer)) {
      await store.guard(async () => {
        await io.write(at(g.superblockOffsets[1 - good] as number), goodRaw);
        await io.flush();
      });
      repairs.push(`superblock copy ${1 - good} rewritten from copy ${good}`);
    }
    if (otherBad) {
      const why = whyBad[other];
      await store.guard(() => store.doCompact(other));
      repairs.push(`table copy ${'AB'[other]} (${why}) rewritten as generation ${store.gen}`);
    }
    return {
      store,
      table: state.table,
      allocator: state.allocator,
      report: {
        formatted: false,
        formatReason: null,
        loadedGeneration: loadedCopy.generation,
        loadedCopy: copy,
        replayedRecords,
        replayedOps,
        journalStop,
        repairs,
      },
    };
  }

  /**
   * Formats the spare region for this main device: an empty table. Refuses (E_SPARE_METADATA) a spare that
   * already holds dmremap-ublk metadata unless `force` is set.
   */
  static async format(io: SpareIo, opts: OpenOptions): Promise<OpenResult> {
    const p = prepare(io, opts);
    const sbs = await io.read(p.spareOffset, 2 * SUPERBLOCK_SIZE);
    if (!p.force && (hasMagic(sbs, SB_MAGIC) || hasMagic(sbs, SB_MAGIC, SUPERBLOCK_SIZE))) {
      throw new DmrError('E_SPARE_METADATA', 'the spare already holds dmremap-ublk metadata (use --force-format to format it)');
    }
    return RemapStore.doFormat(io, p, p.force ? 'forced' : 'fresh');
  }

  private static async doFormat(io: SpareIo, p: Prepared, reason: string): Promise<OpenResult> {
    const spareSize = p.spareSize ?? p.deviceSize - p.spareOffset;
    const g =
      p.formatVersion === 1
        ? computeGeometry({ spareOffset: p.spareOffset, spareSize, blockSize: p.blockSize, journalRecords: p.journalRecords, version: 1 })
        : computeGeometry({
            spareOffset: p.spareOffset,
            spareSize,
            blockSize: p.blockSize,
            journalRecords: p.journalRecords,
            version: p.formatVersion ?? FORMAT_VERSION,
            maxSlots: p.maxSlots,
          });
    const uuid = randomBytes(16);
    const state = new RemapState(g, p.mainBlocks);
    const at = (rel: number): number => g.spareOffset + rel;
    // Two empty table copies (generations 1 and 2; the journal of B, generation 2, is the current one),
    // flushed, then the superblock copies one at a time. Stale records and copies of an earlier format carry
    // another UUID and are never read as ours.
    const a = encodeTableCopy(state, uuid, 1, 0);
    const b = encodeTableCopy(state, uuid, 2, 0);
    const sb: Superblock = { uuid, mainSize: p.mainSize, fingerprint: p.fingerprint, geometry: g, formatTime: p.now() };
    const sbBuf = encodeSuperblock(sb);
    try {
      await io.write(at(g.tableOffsets[0]), padded(a.buf));
      await io.write(at(g.tableOffsets[1]), padded(b.buf));
      await io.flush();
      await io.write(at(g.superblockOffsets[0]), sbBuf);
      await io.flush();
      await io.write(at(g.superblockOffsets[1]), sbBuf);
      await io.flush();
    } catch (e) {
      throw asIoError(e, 'formatting the spare failed');
    }
    const store = new RemapStore(io, g, uuid, state, p.now, { gen: 2, copy: 1, pos: 0, nextSeq: 0, prevCrc: b.crc });
    return {
      store,
      table: state.table,
      allocator: state.allocator,
      report: {
        formatted: true,
        formatReason: reason,
        loadedGeneration: 2,
        loadedCopy: 1,
        replayedRecords: 0,
        replayedOps: 0,
        journalStop: 'formatted',
        repairs: [],
      },
    };
  }

  get table(): RemapTable {
    return this.state.table;
  }

  get allocator(): SlotAllocator {
    return this.state.allocator;
  }

  /** Generation of the current table copy. */
  get generation(): number {
    return this.gen;
  }

  /** Records in the current journal, and how many it holds before a compaction. */
  get journalUsed(): number {
    return this.pos;
  }

  get journalCapacity(): number {
    return this.geometry.journalRecords;
  }

  /** The UUID of the main/spare pair, as text. */
  get pairId(): string {
    const h = this.uuid.toString('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /** The persistent counters (including error totals set but not yet committed). */
  counters(): PersistentCounters {
    return { ...this.state.counters };
  }

  /**
   * Sets the I/O error totals. They are persisted with the next commit (or commitBatch([]) to persist them
   * now) and with every compaction.
   */
  setCounters(c: Partial<Pick<PersistentCounters, 'readErrors' | 'writeErrors'>>): void {
    for (const k of ['readErrors', 'writeErrors'] as const) {
      const v = c[k];
      if (v === undefined) continue;
      if (!Number.isSafeInteger(v) || v < 0) throw new DmrError('E_INTERNAL', `counter ${k} must be a whole number`);
      this.state.counters[k] = v;
    }
  }

  /**
   * Makes `op` durable: validates it against the table (typed error, nothing written, when it does not fit),
   * writes one journal record, flushes, and only then applies it to the table and resolves with the op as
   * written (a remap or move without a slot gets the lowest free one). Commits run one at a time, in call
   * order. After an I/O error the store refuses every further commit (reopen it).
   */
  async commit(op: RemapOp): Promise<ResolvedOp> {
    const r = await this.commitBatch([op]);
    return r[0] as ResolvedOp;
  }

  /**
   * Commits several ops with one write and one flush (up to MAX_OPS_PER_RECORD ops per 4 KiB record; a
   * longer batch takes several records, still one write unless the journal fills). Validated as a whole
   * first: if any op does not fit, nothing is written. An empty batch persists the counters.
   */
  commitBatch(ops: readonly RemapOp[]): Promise<ResolvedOp[]> {
    return this.enqueue(() => this.doCommit(ops));
  }

  /**
   * Reserves the lowest free slot for a remap whose data is copied before it is committed (see
   * durability.ts). Runs in the commit queue, so no commit in flight can pick the same slot. E_SPARE_FULL
   * when there is none.
   */
  reserveSlot(): Promise<number> {
    return this.enqueue(async () => this.state.allocator.reserve());
  }

  /** Gives back a slot from reserveSlot() that will not be committed. */
  unreserveSlot(slot: number): Promise<void> {
    return this.enqueue(async () => this.state.allocator.unreserve(slot));
  }

  /** Writes the whole state as a new table copy now (also done automatically when the journal is full). */
  compact(): Promise<void> {
    return this.enqueue(() => this.guard(() => this.doCompact(this.curCopy === 0 ? 1 : 0)));
  }

  /** Waits for every queued commit. */
  async idle(): Promise<void> {
    await this.tail;
  }

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async doCommit(ops: readonly RemapOp[]): Promise<ResolvedOp[]> {
    if (this.failure !== null) throw this.failure;
    const now = this.now();
    // Dry run: resolve and apply every op (each sees the ones before it), snapshot the counters after each
    // record's ops, then undo everything. The table changes only once the records are durable.
    const records: Array<{ ops: ResolvedOp[]; counters: PersistentCounters }> = [];
    const undos: Undo[] = [];
    const all: ResolvedOp[] = [];
    try {
      let i = 0;
      do {
        const chunk: ResolvedOp[] = [];
        for (; i < ops.length && chunk.length < MAX_OPS_PER_RECORD; i++) {
          const r = this.state.resolve(ops[i] as RemapOp, now);
          undos.push(this.state.apply(r));
          chunk.push(r);
          all.push(r);
        }
        records.push({ ops: chunk, counters: { ...this.state.counters } });
      } while (i < ops.length);
    } finally {
      for (let k = undos.length - 1; k >= 0; k--) (undos[k] as Undo)();
    }
    const origins = ops.map((o) => (o.op === 'remap' ? o.origin : null));
    await this.guard(async () => {
      let k = 0;
      while (k < records.length) {
        if (this.pos >= this.geometry.journalRecords) await this.doCompact(this.curCopy === 0 ? 1 : 0);
        const n = Math.min(records.length - k, this.geometry.journalRecords - this.pos);
        const buf = Buffer.alloc(n * JOURNAL_RECORD_SIZE);
        const crcs: number[] = [];
        let prev = this.prevCrc;
        for (let j = 0; j < n; j++) {
          const rec = records[k + j] as { ops: ResolvedOp[]; counters: PersistentCounters };
          prev = encodeJournalRecord(
            this.uuid,
            { generation: this.gen, seq: this.nextSeq + j, prevCrc: prev, counters: rec.counters, ops: rec.ops },
            buf,
            j * JOURNAL_RECORD_SIZE,
            this.geometry.version,
          );
          crcs.push(prev);
        }
        const off = this.geometry.spareOffset + (this.geometry.journalOffsets[this.curCopy] as number) + this.pos * JOURNAL_RECORD_SIZE;
        await this.io.write(off, buf);
        await this.io.flush();
        // Durable: apply for real (cannot fail: the dry run applied exactly these ops to this state).
        for (let j = 0; j < n; j++) {
          const rec = records[k + j] as { ops: ResolvedOp[]; counters: PersistentCounters };
          // The counters end up as in the record's snapshot (error totals set meanwhile are newer: kept).
          this.state.applyAll(rec.ops);
        }
        this.pos += n;
        this.nextSeq += n;
        this.prevCrc = prev;
        k += n;
      }
    });
    if (this.onCommitted !== null && all.length > 0) {
      try {
        this.onCommitted(all.map((op, i) => ({ op, origin: origins[i] ?? null })));
      } catch {
        // An observer's failure is not the commit's.
      }
    }
    return all;
  }

  /**
   * Writes the state as table copy `target` with the next generation, flushes, and switches to it and its
   * (implicitly empty) journal. Until the flush returns, the copy the state came from and its journal are
   * untouched, so a crash at any point reloads the same state.
   */
  private async doCompact(target: 0 | 1): Promise<void> {
    const gen = this.gen + 1;
    const { buf, crc } = encodeTableCopy(this.state, this.uuid, gen, this.nextSeq);
    if (buf.length > this.geometry.tableCopyLen) throw new DmrError('E_INTERNAL', 'table copy larger than its area');
    await this.io.write(this.geometry.spareOffset + (this.geometry.tableOffsets[target] as number), padded(buf));
    await this.io.flush();
    this.gen = gen;
    this.curCopy = target;
    this.pos = 0;
    this.prevCrc = crc;
  }

  /** Runs spare I/O; the first failure poisons the store (what reached the disk is unknown). */
  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    if (this.failure !== null) throw this.failure;
    try {
      return await fn();
    } catch (e) {
      const err = asIoError(e, 'writing the remap metadata to the spare failed');
      this.failure = new DmrError('E_SPARE_IO', `${err.message}; the remap store is stopped until it is opened again`, { cause: e });
      throw this.failure;
    }
  }
}

function asIoError(e: unknown, doing: string): DmrError {
  if (e instanceof DmrError && e.code === 'E_SPARE_IO') return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new DmrError('E_SPARE_IO', `${doing}: ${msg}`, { cause: e });
}

/** Pads to a multiple of 4096 bytes (whole sectors, O_DIRECT friendly). */
function padded(b: Buffer): Buffer {
  const len = Math.ceil(b.length / META_ALIGN) * META_ALIGN;
  if (len === b.length) return b;
  const out = Buffer.alloc(len);
  b.copy(out);
  return out;
}
