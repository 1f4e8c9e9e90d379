// Users' reads slower than slow_io_ms (native's slow_io events), judged by user-slow-reads.ts with the rule
// the scan uses (slow-blocks.ts): a block slow once in a scan and once in a user read is relocated at
// slow_threshold 2; a main slow everywhere has nothing relocated; nothing is judged while users do I/O; the
// queue of suspects is bounded; a re-read across a table change is not used; scan and judge share native's
// one scan read at a time.
import { describe, expect, it } from 'vitest';
import type { NativeScanReadResult, ScanSegment } from '../../src/native.js';
import type { QueueCounters } from '../../src/scan/rate-control.js';
import { Scanner, type ScanDevice } from '../../src/scan/scanner.js';
import { serialScanReads } from '../../src/scan/serial-scan-reads.js';
import { DEFAULT_SCAN_SETTINGS } from '../../src/scan/settings.js';
import { SlowBlockRule } from '../../src/scan/slow-blocks.js';
import { MAX_USER_SUSPECTS, USER_SUSPECT_TRIES, UserSlowReads } from '../../src/scan/user-slow-reads.js';
import { quietLog } from './helpers.js';
import { scanPieces } from '../../src/testing/scan-pieces.js';

const MIB = 1 << 20;
const BS = 4096;

/** Every block's latency (µs) comes from `lat(block)`; nothing fails. Refuses overlapping scan reads as native does (EBUSY). */
class Dev implements ScanDevice {
  generation = 1;
  narrowCalls = 0;
  narrowBlocks: number[] = [];
  inFlight = false;
  onRead: (() => void) | null = null;
  /** Users do I/O: each read of the counters shows 100 more reads. */
  busy = false;
  userReads = 0;
  constructor(readonly deviceBytes: number, public lat: (b: number) => number) {}
  tableGeneration(): number { return this.generation; }
  stats(): QueueCounters[] {
    if (this.busy) this.userReads += 100;
    return [{ queue: 0, reads: this.userReads, writes: 0, flushes: 0, discards: 0, readBytes: 0, writeBytes: 0, inflight: 0 }];
  }
  async scanRead(offset: bigint, bytes: number, narrow = false): Promise<NativeScanReadResult> {
    if (this.inFlight) throw Object.assign(new Error('scanRead: busy'), { code: 'EBUSY' });
    this.inFlight = true;
    try {
      if (narrow) this.narrowCalls++;
      const gen = this.generation;
      await new Promise((r) => setImmediate(r));
      this.onRead?.();
      const first = Number(offset) / BS;
      const segments: ScanSegment[] = [];
      if (narrow) {
        for (let b = first; b < first + bytes / BS; b++) {
          this.narrowBlocks.push(b);
          segments.push({ device: 'main', block: b, blocks: 1, skipped: null, latencyUs: this.lat(b), errno: 0 });
        }
      } else {
        for (const p of scanPieces(first, first + bytes / BS, BS)) {
          let m = 0;
          for (let b = p.block; b < p.block + p.blocks; b++) m = Math.max(m, this.lat(b));
          segments.push({ device: 'main', block: p.block, blocks: p.blocks, skipped: null, latencyUs: m, errno: 0 });
        }
      }
      return { offset, bytes, segments, coveredBytes: bytes, stopped: null, generation: gen };
    } finally {
      this.inFlight = false;
    }
  }
}

/** A scanner and a user-read judge over `dev` sharing one slow-block rule (as the daemon makes them), on a fake clock. */
function rig(dev: Dev, opts: { share?: boolean } = {}) {
  let t = 1_000_000;
  const pending = new Map<number, { at: number; fn: () => void }>();
  let seq = 0;
  const time = { now: () => t, set: (fn: () => void, ms: number) => { const id = ++seq; pending.set(id, { at: t + ms, fn }); return id; }, clear: (h: unknown) => void pending.delete(h as number) };
  const relocated: number[] = [];
  const log = quietLog();
  const settings = { ...DEFAULT_SCAN_SETTINGS };
  const relocate = (b: number): void => void relocated.push(b);
  const rule = new SlowBlockRule({ slowThreshold: settings.slowThreshold, log, relocate });
  const reads = serialScanReads(dev);
  const sink = { readFailed: async () => 'handled' as const, slowBlock: relocate };
  const scanner = new Scanner({
    device: reads, blockSize: BS, deviceBytes: dev.deviceBytes, settings, log, clock: time, timer: time, sink, saved: null, save: () => undefined,
    ...(opts.share === false ? {} : { slowRule: rule }),
  });
  const confirmed = { n: 0 };
  const user = new UserSlowReads({ device: reads, blockSize: BS, deviceBytes: dev.deviceBytes, slowIoMs: settings.slowIoMs, rule, log, clock: time, timer: time, onConfirmed: () => void confirmed.n++ });
  const run = async (ms: number): Promise<void> => {
    const until = t + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | null = null;
      for (const e of pending) if (e[1].at <= until && (next === null || e[1].at < next[1].at)) next = e;
      if (next === null) break;
      pending.delete(next[0]);
      t = Math.max(t, next[1].at);
      next[1].fn();
      await scanner.idle();
      await user.idle();
      await new Promise((r) => setImmediate(r));
    }
    t = until;
  };
  /** A user's read of `blocks` blocks from `block`, slower than slow_io_ms (a slow_io event). */
  const slowRead = (block: number, blocks = 1, dropped = 0): void => user.suspect({ block, blocks, latencyUs: 800_000, dropped });
  return { scanner, user, rule, relocated, run, slowRead, confirmed };
}

describe('users\' slow reads count like the scan\'s', () => {
  it('a block of a bad zone slow once in a scan pass and once in a user read reaches slow_threshold 2 and is relocated', async () => {
    const dev = new Dev(8 * MIB, (b) => (b >= 512 && b < 768 ? 800_000 : 100));
    const r = rig(dev);
    await r.scanner.start();
    await r.run(600_000);
    expect(r.scanner.state).toBe('done');
    expect(r.rule.timesSlow(600)).toBe(1);
    expect(r.relocated).toEqual([]);
    r.slowRead(600);
    await r.run(5000);
    expect(r.user.stats()).toMatchObject({ slowReads: 1, judged: 1, unjudged: 0 });
    expect(r.relocated).toEqual([600]);
  });

  it('without the shared rule the same reads relocate nothing (the user read is the block\'s first count there)', async () => {
    const dev = new Dev(8 * MIB, (b) => (b >= 512 && b < 768 ? 800_000 : 100));
    const r = rig(dev, { share: false });
    await r.scanner.start();
    await r.run(600_000);
    r.slowRead(600);
    await r.run(5000);
    expect(r.relocated).toEqual([]);
  });

  it('no scan at all: a block slow in two users\' reads (each confirmed by its re-read) is relocated; its fast neighbours are not', async () => {
    const dev = new Dev(8 * MIB, (b) => (b === 700 ? 800_000 : 100));
    const r = rig(dev);
    r.slowRead(696, 8); // a 32 KiB read over the slow block
    await r.run(5000);
    expect(r.relocated).toEqual([]);
    expect(r.rule.timesSlow(700)).toBe(1);
    r.slowRead(700);
    await r.run(5000);
    expect(r.relocated).toEqual([700]);
    expect(r.rule.counters()).toMatchObject({ slowBlocks: 2, slowRelocations: 1, uniformSlowChunks: 0 });
    // Each confirmed slow read is told once (the daemon records it as the health model's slow_io).
    expect(r.confirmed.n).toBe(2);
  });

  it('a user read the re-read finds fast (it was slow for the queue, not the disk) counts nothing', async () => {
    const dev = new Dev(8 * MIB, () => 100);
    const r = rig(dev);
    r.slowRead(10, 4);
    r.slowRead(10, 4); // the same range waiting: judged once
    await r.run(5000);
    expect(r.user.stats()).toMatchObject({ slowReads: 2, judged: 2 }); // the reads, judged once as one range
    expect(r.rule.counters().slowBlocks).toBe(0);
    expect(r.confirmed.n).toBe(0); // not slow on the re-read: not the health model's either
  });
});

describe('main slow everywhere', () => {
  it('users\' slow reads all over a disk slow as a whole relocate nothing: the reference read elsewhere is slow too', async () => {
    const dev = new Dev(64 * MIB, () => 600_000);
    const r = rig(dev);
    for (let round = 0; round < 3; round++) {
      for (const b of [5, 1000, 5000, 9000, 16_000]) r.slowRead(b, round === 0 ? 1 : 8);
      await r.run(30_000);
    }
    expect(r.user.stats().judged).toBe(15);
    expect(r.relocated).toEqual([]);
    expect(r.rule.counters()).toMatchObject({ slowBlocks: 0, slowRelocations: 0, uniformSlowChunks: 15 });
    expect(r.confirmed.n).toBe(0);
  }, 30_000);
});

describe('judged only while users are idle', () => {
  it('suspects while users are active are deferred, not read again; judged once users are idle', async () => {
    const dev = new Dev(8 * MIB, (b) => (b === 100 ? 800_000 : 100));
    const r = rig(dev);
    dev.busy = true;
    r.slowRead(100);
    await r.run(20_000);
    expect(dev.narrowCalls).toBe(0);
    expect(r.user.stats()).toMatchObject({ judged: 0, unjudged: 0 });
    expect(r.user.stats().deferred).toBeGreaterThan(10);
    expect(r.user.waiting).toBe(1);
    dev.busy = false;
    await r.run(5000);
    expect(r.user.stats().judged).toBe(1);
    expect(r.rule.timesSlow(100)).toBe(1);
  });

  it('users who start I/O during the re-read void it: the range waits again, and is judged at an idle time', async () => {
    const dev = new Dev(8 * MIB, (b) => (b === 100 ? 800_000 : 100));
    const r = rig(dev);
    let reads = 0;
    dev.onRead = () => { if (++reads === 1) dev.userReads += 1; };
    r.slowRead(100);
    await r.run(2500);
    expect(r.user.stats().judged).toBe(0);
    expect(r.rule.timesSlow(100)).toBe(0);
    await r.run(5000);
    expect(r.user.stats().judged).toBe(1);
    expect(r.rule.timesSlow(100)).toBe(1);
  });
});

describe('bounded', () => {
  it(`the queue of suspects holds ${MAX_USER_SUSPECTS} ranges: more are dropped and counted, with the reads native did not report`, async () => {
    const dev = new Dev(8 * MIB, () => 100);
    const r = rig(dev);
    dev.busy = true;
    for (let i = 0; i < MAX_USER_SUSPECTS + 10; i++) r.slowRead(i * 8, 8);
    r.slowRead(2000, 1, 5); // native's limit left 5 slow reads unreported before this one
    expect(r.user.waiting).toBe(MAX_USER_SUSPECTS);
    expect(r.user.stats()).toMatchObject({ slowReads: MAX_USER_SUSPECTS + 10 + 6, unjudged: 10 + 1 + 5 });
  });

  it(`a range whose re-reads keep being voided (the table changes under each) is dropped after ${USER_SUSPECT_TRIES} tries, never counted`, async () => {
    const dev = new Dev(8 * MIB, () => 800_000);
    const r = rig(dev);
    dev.onRead = () => { dev.generation++; };
    r.slowRead(300);
    await r.run(60_000);
    expect(r.user.waiting).toBe(0);
    expect(r.user.stats()).toMatchObject({ judged: 0, unjudged: 1 });
    expect(r.rule.counters().slowBlocks).toBe(0);
  });
});

describe('one scan read at a time', () => {
  it('the scan and the judge read through one queue: native\'s EBUSY never reaches either', async () => {
    const dev = new Dev(8 * MIB, (b) => (b >= 512 && b < 768 ? 800_000 : 100));
    const reads = serialScanReads(dev);
    const all = await Promise.allSettled([reads.scanRead(0n, MIB), reads.scanRead(BigInt(MIB), BS, true), reads.scanRead(0n, BS, true)]);
    expect(all.map((x) => x.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
    // Straight to the device, the second call is refused.
    const raw = await Promise.allSettled([dev.scanRead(0n, MIB), dev.scanRead(BigInt(MIB), BS, true)]);
    expect(raw.map((x) => x.status)).toEqual(['fulfilled', 'rejected']);
  });

  it('a user\'s slow read judged while a scan pass runs: both go on, the pass finishes and the block is counted by both', async () => {
    const dev = new Dev(8 * MIB, (b) => (b >= 512 && b < 768 ? 800_000 : 100));
    const r = rig(dev);
    await r.scanner.start();
    r.slowRead(1800); // not in the zone: fast on the re-read
    r.slowRead(700);
    await r.run(600_000);
    expect(r.scanner.state).toBe('done');
    expect(r.user.stats()).toMatchObject({ judged: 2, unjudged: 0 });
    expect(r.relocated).toEqual([700]);
  });

  it('close ends the judge after its read in flight: nothing more is read or counted', async () => {
    const dev = new Dev(8 * MIB, () => 800_000);
    const r = rig(dev);
    let closing: Promise<void> | null = null;
    dev.onRead = () => { closing ??= r.user.close(); };
    r.slowRead(5, 64); // 2 narrow calls, then a reference read
    await r.run(5000);
    await closing;
    expect(dev.narrowCalls).toBe(1);
    expect(r.rule.counters().slowBlocks).toBe(0);
    expect(r.user.waiting).toBe(0);
  });
});
