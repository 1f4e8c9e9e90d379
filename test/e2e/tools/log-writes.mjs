#!/usr/bin/env node
// @ts-check
// Reads a dm-log-writes log device and replays it (test tool; the format is the kernel's
// Documentation/admin-guide/device-mapper/log-writes.rst and drivers/md/dm-log-writes.c):
//
//   log sector 0        super block: u64 magic 0x6a736677736872, u64 version 1, u64 nr_entries,
//                       u32 sectorsize (the data device's logical block size); little-endian
//   then, per entry     one sectorsize block: u64 sector, u64 nr_sectors, u64 flags, u64 data_len,
//                       and for a MARK its name (data_len bytes) right after those 32 bytes;
//                       then nr_sectors blocks of the written data (none for a DISCARD or a MARK)
//
// sector and nr_sectors count sectorsize units of the data device. Entries are in the order the target
// logged them: writes once a later flush made them durable, then that FLUSH, and FUA writes and marks
// where they completed. So the data device after entries 0..N is what a power cut at entry N leaves.
//
// As a command:
//   node test/e2e/tools/log-writes.mjs <log> [--list]
//       one line "entries N sectorsize S", then the indexes of the FLUSH, FUA and MARK entries
//       ("flush 3 7", "fua 5", "mark 9 name"); --list prints every entry instead (one per line)
//   node test/e2e/tools/log-writes.mjs <log> --replay-through N --target <dev|file>
//       writes entries 0..N (inclusive) onto the target (a DISCARD writes zeros there)
// A log that does not parse: one line "log-writes: <what is wrong>" on stderr, exit 1; usage errors exit 2.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

export const LOG_MAGIC = 0x6a736677736872n;
export const LOG_VERSION = 1n;
export const FLAG_FLUSH = 1;
export const FLAG_FUA = 2;
export const FLAG_DISCARD = 4;
export const FLAG_MARK = 8;
export const FLAG_METADATA = 16;
const KNOWN_FLAGS = FLAG_FLUSH | FLAG_FUA | FLAG_DISCARD | FLAG_MARK | FLAG_METADATA;
const ENTRY_HEADER = 32;
const SUPER_LEN = 28;

/** A log that cannot be read as dm-log-writes wrote it. */
export class LogFormatError extends Error {
  /** Stable code for callers. */
  code = 'E_LOG_FORMAT';
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'LogFormatError';
  }
}

/**
 * Where the log's bytes come from: `read` returns up to `length` bytes at `offset` (fewer at the end).
 * @typedef {{ read(offset: number, length: number): Buffer }} LogSource
 */

/**
 * One logged entry. `logOffset` is the byte offset of its data on the log (valid when `nrSectors` > 0 and
 * it is not a discard); `sector`/`nrSectors` count `sectorSize` units of the data device.
 * @typedef {{ index: number, sector: number, nrSectors: number, flags: number, dataLen: number, logOffset: number, mark: string | null }} LogEntry
 */

/**
 * @typedef {{ sectorSize: number, entries: LogEntry[] }} ParsedLog
 */

/** @param {Buffer} b @param {number} at @param {string} what */
function u64(b, at, what) {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new LogFormatError(`${what} ${v} is out of range`);
  return Number(v);
}

/** @param {Buffer} buf @returns {LogSource} */
export function bufferSource(buf) {
  return { read: (offset, length) => buf.subarray(Math.min(offset, buf.length), Math.min(offset + length, buf.length)) };
}

/** A LogSource over an open file descriptor (a file or a block device). @param {number} fd @returns {LogSource} */
export function fdSource(fd) {
  return {
    read(offset, length) {
      const b = Buffer.alloc(length);
      let got = 0;
      while (got < length) {
        const n = fs.readSync(fd, b, got, length - got, offset + got);
        if (n === 0) break;
        got += n;
      }
      return b.subarray(0, got);
    },
  };
}

/**
 * Parses the super block and the `nr_entries` entries it counts (data is not read, only located).
 * @param {LogSource} src
 * @returns {ParsedLog}
 */
export function parseLog(src) {
  const sb = src.read(0, SUPER_LEN);
  if (sb.length < SUPER_LEN) throw new LogFormatError(`log is ${sb.length} bytes long, shorter than its super block`);
  const magic = sb.readBigUInt64LE(0);
  if (magic !== LOG_MAGIC) throw new LogFormatError(`not a dm-log-writes log: magic 0x${magic.toString(16)}, expected 0x${LOG_MAGIC.toString(16)}`);
  const version = sb.readBigUInt64LE(8);
  if (version !== LOG_VERSION) throw new LogFormatError(`log format version ${version} is not supported (only ${LOG_VERSION})`);
  const count = u64(sb, 16, 'entry count');
  const sectorSize = sb.readUInt32LE(24);
  if (sectorSize < 512 || sectorSize > 65536 || (sectorSize & (sectorSize - 1)) !== 0) {
    throw new LogFormatError(`log sector size ${sectorSize} is not a power of two from 512 to 65536`);
  }
  /** @type {LogEntry[]} */
  const entries = [];
  let pos = sectorSize;
  for (let index = 0; index < count; index++) {
    const h = src.read(pos, sectorSize);
    if (h.length < sectorSize) throw new LogFormatError(`log ends inside entry ${index} of ${count} (header at byte ${pos})`);
    const sector = u64(h, 0, `entry ${index}: sector`);
    const nrSectors = u64(h, 8, `entry ${index}: sector count`);
    const flags = u64(h, 16, `entry ${index}: flags`);
    const dataLen = u64(h, 24, `entry ${index}: data length`);
    if ((flags & ~KNOWN_FLAGS) !== 0) throw new LogFormatError(`entry ${index}: unknown flags 0x${flags.toString(16)}`);
    let mark = null;
    if ((flags & FLAG_MARK) !== 0) {
      if (nrSectors !== 0) throw new LogFormatError(`entry ${index}: a mark with ${nrSectors} sectors of data`);
      if (dataLen === 0 || dataLen > sectorSize - ENTRY_HEADER) {
        throw new LogFormatError(`entry ${index}: mark name length ${dataLen} is not from 1 to ${sectorSize - ENTRY_HEADER}`);
      }
      mark = h.subarray(ENTRY_HEADER, ENTRY_HEADER + dataLen).toString('latin1').replace(/\0+$/, '');
    }
    const carriesData = (flags & FLAG_DISCARD) === 0 && nrSectors > 0;
    const logOffset = pos + sectorSize;
    if (carriesData) {
      const end = logOffset + nrSectors * sectorSize;
      // Only check that the data is there (its last byte); replay reads it.
      if (src.read(end - 1, 1).length !== 1) throw new LogFormatError(`log ends inside the data of entry ${index} of ${count} (needs ${end} bytes)`);
    }
    entries.push({ index, sector, nrSectors, flags, dataLen, logOffset, mark });
    pos = logOffset + (carriesData ? nrSectors * sectorSize : 0);
  }
  return { sectorSize, entries };
}

/**
 * Where replayed entries go: `write` puts bytes at a byte offset of the data device, `discard` a range
 * (replayed as zeros: a discarded range may read as zeros afterwards, never as something else).
 * @typedef {{ write(offset: number, data: Buffer): void, discard(offset: number, length: number): void }} ReplayTarget
 */

/** @param {Buffer} buf @returns {ReplayTarget} */
export function bufferTarget(buf) {
  /** @param {number} offset @param {number} length */
  const check = (offset, length) => {
    if (offset + length > buf.length) throw new LogFormatError(`entry writes bytes [${offset}, ${offset + length}) past the end of the target (${buf.length} bytes)`);
  };
  return {
    write(offset, data) {
      check(offset, data.length);
      data.copy(buf, offset);
    },
    discard(offset, length) {
      check(offset, length);
      buf.fill(0, offset, offset + length);
    },
  };
}

/** A ReplayTarget over an open file descriptor. @param {number} fd @returns {ReplayTarget} */
export function fdTarget(fd) {
  /** @param {Buffer} b @param {number} offset */
  const writeAll = (b, offset) => {
    let done = 0;
    while (done < b.length) done += fs.writeSync(fd, b, done, b.length - done, offset + done);
  };
  return {
    write: (offset, data) => writeAll(data, offset),
    discard(offset, length) {
      const zeros = Buffer.alloc(Math.min(length, 1 << 20));
      for (let at = 0; at < length; at += zeros.length) writeAll(zeros.subarray(0, Math.min(zeros.length, length - at)), offset + at);
    },
  };
}

/**
 * Replays a parsed log forwards, entry by entry: `through(n)` applies every entry up to and including
 * index n that is not applied yet (n = -1: none). It never goes back: start another Replayer on a fresh
 * target for an earlier point.
 */
export class Replayer {
  /** @param {LogSource} src @param {ParsedLog} log @param {ReplayTarget} target */
  constructor(src, log, target) {
    this.src = src;
    this.log = log;
    this.target = target;
    /** Entries applied so far (the next entry to apply). */
    this.applied = 0;
  }

  /** @param {number} n */
  through(n) {
    if (!Number.isInteger(n) || n < -1 || n >= this.log.entries.length) {
      throw new LogFormatError(`entry ${n} is not in the log (it has ${this.log.entries.length} entries)`);
    }
    if (n + 1 < this.applied) throw new LogFormatError(`cannot replay back to entry ${n}: entries up to ${this.applied - 1} are applied`);
    const ss = this.log.sectorSize;
    for (; this.applied <= n; this.applied++) {
      const e = /** @type {LogEntry} */ (this.log.entries[this.applied]);
      if (e.nrSectors === 0) continue;
      const len = e.nrSectors * ss;
      if ((e.flags & FLAG_DISCARD) !== 0) {
        this.target.discard(e.sector * ss, len);
      } else {
        const data = this.src.read(e.logOffset, len);
        if (data.length !== len) throw new LogFormatError(`log ends inside the data of entry ${e.index}`);
        this.target.write(e.sector * ss, data);
      }
    }
  }
}

/** The indexes of the FLUSH, FUA and MARK entries. @param {ParsedLog} log */
export function syncPoints(log) {
  /** @type {number[]} */
  const flush = [];
  /** @type {number[]} */
  const fua = [];
  /** @type {Array<{ index: number, name: string }>} */
  const marks = [];
  for (const e of log.entries) {
    if ((e.flags & FLAG_FLUSH) !== 0) flush.push(e.index);
    if ((e.flags & FLAG_FUA) !== 0) fua.push(e.index);
    if (e.mark !== null) marks.push({ index: e.index, name: e.mark });
  }
  return { flush, fua, marks };
}

/** @param {number} flags */
export function flagNames(flags) {
  const names = [];
  if (flags & FLAG_FLUSH) names.push('FLUSH');
  if (flags & FLAG_FUA) names.push('FUA');
  if (flags & FLAG_DISCARD) names.push('DISCARD');
  if (flags & FLAG_MARK) names.push('MARK');
  if (flags & FLAG_METADATA) names.push('METADATA');
  return names.join('|');
}

/**
 * The command line; returns the exit code. @param {string[]} argv
 * @param {{ write(s: string): unknown }} out @param {{ write(s: string): unknown }} err
 */
export function cli(argv, out, err) {
  const usage = 'usage: log-writes.mjs <log> [--list] | <log> --replay-through N --target <dev|file>';
  /** @type {string | null} */
  let logPath = null;
  let list = false;
  /** @type {number | null} */
  let through = null;
  /** @type {string | null} */
  let target = null;
  for (let i = 0; i < argv.length; i++) {
    const a = /** @type {string} */ (argv[i]);
    if (a === '--list') list = true;
    else if (a === '--replay-through' || a === '--target') {
      const v = argv[++i];
      if (v === undefined) {
        err.write(`log-writes: ${a} needs a value\n${usage}\n`);
        return 2;
      }
      if (a === '--target') target = v;
      else if (/^(-1|\d+)$/.test(v)) through = Number(v);
      else {
        err.write(`log-writes: --replay-through takes an entry index, got ${JSON.stringify(v)}\n`);
        return 2;
      }
    } else if (a.startsWith('-') || logPath !== null) {
      err.write(`log-writes: unexpected argument ${JSON.stringify(a)}\n${usage}\n`);
      return 2;
    } else logPath = a;
  }
  if (logPath === null || (through === null) !== (target === null)) {
    err.write(`log-writes: ${logPath === null ? 'no log given' : '--replay-through and --target go together'}\n${usage}\n`);
    return 2;
  }
  /** @type {number | null} */
  let fd = null;
  /** @type {number | null} */
  let tfd = null;
  try {
    fd = fs.openSync(logPath, 'r');
    const src = fdSource(fd);
    const log = parseLog(src);
    if (through !== null && target !== null) {
      tfd = fs.openSync(target, 'r+');
      new Replayer(src, log, fdTarget(tfd)).through(through);
      fs.fsyncSync(tfd);
      out.write(`replayed entries 0..${through} of ${log.entries.length} onto ${target}\n`);
      return 0;
    }
    out.write(`entries ${log.entries.length} sectorsize ${log.sectorSize}\n`);
    if (list) {
      for (const e of log.entries) {
        const what = e.mark !== null ? `mark ${e.mark}` : `sector ${e.sector} count ${e.nrSectors}`;
        out.write(`${e.index} ${flagNames(e.flags) || 'WRITE'} ${what}\n`);
      }
      return 0;
    }
    const p = syncPoints(log);
    out.write(`flush ${p.flush.join(' ')}\n`);
    out.write(`fua ${p.fua.join(' ')}\n`);
    for (const m of p.marks) out.write(`mark ${m.index} ${m.name}\n`);
    return 0;
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    err.write(`log-writes: ${logPath}: ${msg.replace(/\s*\n\s*/g, ' ')}\n`);
    return 1;
  } finally {
    if (fd !== null) fs.closeSync(fd);
    if (tfd !== null) fs.closeSync(tfd);
  }
}

if (process.argv[1] !== undefined && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = cli(process.argv.slice(2), process.stdout, process.stderr);
}
