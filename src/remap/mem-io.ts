// An in-memory spare for tests that behaves like a disk with a volatile write cache: writes land in the
// cache and become durable only at flush(). It can crash at a chosen I/O (dropping or keeping any subset of
// the unflushed writes, and tearing the write it crashed in), flip bits, and count writes and flushes.
// Sparse: only written 64 KiB chunks take memory, so a multi-terabyte spare costs nothing.
import { DmrError } from '../errors.js';
import type { SpareIo } from './io.js';

const CHUNK = 64 * 1024;

export class MemSpareIoCrash extends Error {
  constructor() {
    super('simulated crash');
    this.name = 'MemSpareIoCrash';
  }
}

export interface MemIoStats {
  reads: number;
  writes: number;
  flushes: number;
  bytesWritten: number;
}

export interface CrashPlan {
  /** Crash when the I/O with this index (writes and flushes, counted from 0 since arming) starts. */
  atIo: number;
  /** If that I/O is a write, how many of its bytes reach the cache before the crash (default 0). */
  tornBytes?: number;
}

export class MemSpareIo implements SpareIo {
  readonly size: bigint;
  private durable = new Map<number, Buffer>();
  private pending: Array<{ offset: number; data: Buffer }> = [];
  stats: MemIoStats = { reads: 0, writes: 0, flushes: 0, bytesWritten: 0 };
  /** A log of every write and flush (offset and length), for tests that check what was written. */
  log: Array<{ kind: 'write'; offset: number; length: number } | { kind: 'flush' }> = [];
  private plan: CrashPlan | null = null;
  private ioIndex = 0;
  crashed = false;

  constructor(size: number | bigint) {
    this.size = BigInt(size);
  }

  /** Arms a crash: the I/O number `atIo` (0 = the next write or flush) and every one after fails. */
  armCrash(plan: CrashPlan): void {
    this.plan = plan;
    this.ioIndex = 0;
  }

  resetStats(): void {
    this.stats = { reads: 0, writes: 0, flushes: 0, bytesWritten: 0 };
    this.log = [];
  }

  async read(offset: number | bigint, length: number): Promise<Buffer> {
    this.check(offset, length);
    this.stats.reads++;
    const off = Number(offset);
    const out = readChunks(this.durable, off, length);
    for (const w of this.pending) overlay(out, off, w.offset, w.data);
    return out;
  }

  async write(offset: number | bigint, data: Buffer): Promise<void> {
    this.check(offset, data.length);
    const off = Number(offset);
    if (this.crashNow()) {
      const torn = Math.min(this.plan?.tornBytes ?? 0, data.length);
      if (torn > 0) this.pending.push({ offset: off, data: Buffer.from(data.subarray(0, torn)) });
      throw new MemSpareIoCrash();
    }
    this.stats.writes++;
    this.stats.bytesWritten += data.length;
    this.log.push({ kind: 'write', offset: off, length: data.length });
    this.pending.push({ offset: off, data: Buffer.from(data) });
  }

  async flush(): Promise<void> {
    if (this.crashNow()) throw new MemSpareIoCrash();
    this.stats.flushes++;
    this.log.push({ kind: 'flush' });
    for (const w of this.pending) writeChunks(this.durable, w.offset, w.data);
    this.pending = [];
  }

  /**
   * What a disk holds after power comes back: the durable bytes plus the unflushed writes that `keep` picks
   * (a disk may have written back any of them, in any order; the torn write counts as one of them).
   */
  afterCrash(keep: 'none' | 'all' | ((index: number) => boolean) = 'none'): MemSpareIo {
    const m = new MemSpareIo(this.size);
    for (const [k, v] of this.durable) m.durable.set(k, Buffer.from(v));
    this.pending.forEach((w, i) => {
      if (keep === 'all' || (typeof keep === 'function' && keep(i))) writeChunks(m.durable, w.offset, w.data);
    });
    return m;
  }

  /** Number of writes not yet flushed. */
  get unflushed(): number {
    return this.pending.length;
  }

  /** A copy of the durable and cached contents as one disk (as if everything was flushed). */
  clone(): MemSpareIo {
    return this.afterCrash('all');
  }

  /** Flips bit `bit` (0..7) of the byte at `offset`, in the durable image (and any cached copy). */
  flipBit(offset: number, bit = 0): void {
    const b = readChunks(this.durable, offset, 1);
    b[0] = (b[0] as number) ^ (1 << bit);
    writeChunks(this.durable, offset, b);
    for (const w of this.pending) {
      if (offset >= w.offset && offset < w.offset + w.data.length) {
        const i = offset - w.offset;
        w.data[i] = (w.data[i] as number) ^ (1 << bit);
      }
    }
  }

  /** Writes bytes straight into the durable image (no stats, no crash): for corrupting or preparing tests. */
  poke(offset: number, data: Buffer): void {
    writeChunks(this.durable, offset, data);
  }

  /** Durable bytes (ignores the cache), for comparing images. */
  peek(offset: number, length: number): Buffer {
    return readChunks(this.durable, offset, length);
  }

  private crashNow(): boolean {
    if (this.crashed) return true;
    if (this.plan !== null && this.ioIndex++ === this.plan.atIo) {
      this.crashed = true;
      return true;
    }
    return false;
  }

  private check(offset: number | bigint, length: number): void {
    if (this.crashed) throw new MemSpareIoCrash();
    const off = Number(offset);
    if (!Number.isSafeInteger(off) || off < 0 || length < 0 || BigInt(off + length) > this.size) {
      throw new DmrError('E_SPARE_IO', `I/O of ${length} bytes at ${off} is beyond the spare (${this.size} bytes)`);
    }
  }
}

function readChunks(chunks: Map<number, Buffer>, off: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  let pos = off;
  while (pos < off + length) {
    const ci = Math.floor(pos / CHUNK);
    const inChunk = pos - ci * CHUNK;
    const n = Math.min(CHUNK - inChunk, off + length - pos);
    const c = chunks.get(ci);
    if (c !== undefined) c.copy(out, pos - off, inChunk, inChunk + n);
    pos += n;
  }
  return out;
}

function writeChunks(chunks: Map<number, Buffer>, off: number, data: Buffer): void {
  let pos = off;
  while (pos < off + data.length) {
    const ci = Math.floor(pos / CHUNK);
    const inChunk = pos - ci * CHUNK;
    const n = Math.min(CHUNK - inChunk, off + data.length - pos);
    let c = chunks.get(ci);
    if (c === undefined) {
      c = Buffer.alloc(CHUNK);
      chunks.set(ci, c);
    }
    data.copy(c, inChunk, pos - off, pos - off + n);
    pos += n;
  }
}

/** Copies the part of write (wOff, data) that overlaps [off, off + out.length) into out. */
function overlay(out: Buffer, off: number, wOff: number, data: Buffer): void {
  const s = Math.max(off, wOff);
  const e = Math.min(off + out.length, wOff + data.length);
  if (s < e) data.copy(out, s - off, s - wOff, e - wOff);
}
