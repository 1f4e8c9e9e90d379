// The scan loop (src/scan/scanner.ts) driven tick by tick: an injected clock and timer, and a device whose
// blocks fail, are slow or are being moved on demand (planned like native's scanRead: a piece read whole
// fails whole, narrow reads name the block).
import { describe, expect, it } from 'vitest';
import { DmrError } from '../../src/errors.js';
import type { NativeScanReadResult, ScanSegment } from '../../src/native.js';
import type { QueueCounters } from '../../src/scan/rate-control.js';
import type { SavedScan } from '../../src/scan/scan-file.js';
import {
  IDLE_RUN_CHUNKS,
  MAX_REVISIT_TRIES,
  Scanner,
  type ScanBlockFailure,
  type ScanDevice,
  type ScanFindingsSink,
  type ScanTimer,
} from '../../src/scan/scanner.js';
import { DEFAULT_SCAN_SETTINGS, type ScanSettings } from '../../src/scan/settings.js';
import { quietLog } from './helpers.js';
import { createLogger, type Logger } from '../../src/log.js';
import { runStop } from '../../src/testing/scan-pieces.js';

const MIB = 1 << 20;
const BS = 4096;

class FakeScanDevice implements ScanDevice {
  readonly failing = new Map<number, number>();
  readonly slowUs = new Map<number, number>();
  readonly moving = new Set<number>();
  readonly lost = new Set<number>();
  readonly reads: Array<{ offset: number; bytes: number; narrow: boolean }> = [];
  inflight = 0;
  maxInflight = 0;
  userInflight = 0;
  userReads = 0;
  /** When set, the next scanRead waits for this before it answers. */
  gate: Promise<void> | null = null;
  /** The remap table generation (tableGeneration()); a read answers the one it started with. */
  generation = 1;
  /** Called as each read starts (after its generation is taken): a table published while it runs. */
  duringRead: ((r: { offset: number; bytes: number; narrow: boolean }) => void) | null = null;
  /** As native: a call stops after this many failed pieces (when more of the range remains). */
  maxFailures = 32;
  /** The generation the last answered read was planned against. */
  lastGeneration = 0;

  tableGeneration(): number {
    return this.generation;
  }

  constructor(readonly deviceBytes: number) {}

  stats(): QueueCounters[] {
    return [{ queue: 0, reads: this.userReads, writes: 0, flushes: 0, discards: 0, readBytes: this.userReads * BS, writeBytes: 0, inflight: this.userInflight }];
  }

  private kind(b: number): string {
    return this.moving.has(b) ? 'moving' : this.lost.has(b) ? 'lost' : 'read';
  }

  async scanRead(offset: bigint, bytes: number, narrow = false): Promise<NativeScanReadResult> {
    const off = Number(offset);
    if (off % BS !== 0 || bytes % BS !== 0 || bytes <= 0 || off + bytes > this.deviceBytes) throw new Error(`bad range ${off}+${bytes}`);
    this.reads.push({ offset: off, bytes, narrow });
    const generation = this.generation;
    this.duringRead?.({ offset: off, bytes, narrow });
    this.inflight++;
    this.maxInflight = Math.max(this.maxInflight, this.inflight);
    try {
      if (this.gate !== null) {
        const g = this.gate;
        this.gate = null;
        await g;
      }
      await Promise.resolve();
      const segments: ScanSegment[] = [];
      const first = off / BS;
      const end = first + bytes / BS;
      let failures = 0;
      let covered = end;
      let limit = end;
      for (let b = first; b < end; ) {
        const k = this.kind(b);
        let n = 1;
        if (!narrow) while (b + n < end && this.kind(b + n) === k && (b + n) % (MIB / BS) !== 0) n++;
        const seg: ScanSegment = { device: 'main', block: b, blocks: n, skipped: k === 'read' ? null : (k as 'moving' | 'lost'), latencyUs: 0, errno: 0 };
        if (k === 'read') {
          for (let i = b; i < b + n; i++) {
            seg.latencyUs = Math.max(seg.latencyUs, this.slowUs.get(i) ?? 100);
            if (this.failing.has(i) && seg.errno === 0) seg.errno = this.failing.get(i) as number;
          }
        }
        segments.push(seg);
        b += n;
        if (seg.errno !== 0 && ++failures >= this.maxFailures && b < end) {
          covered = b;
          break;
        }
        // As native: a run ends with the chunk of its first failed read.
        if (seg.errno !== 0 && !narrow && limit === end) limit = runStop(first, end, seg.block, BS);
        if (b >= limit && b < end) {
          covered = b;
          break;
        }
      }
      this.lastGeneration = generation;
      return { offset, bytes, segments, coveredBytes: (covered - first) * BS, stopped: covered < end ? 'failures' : null, generation };
    } finally {
      this.inflight--;
    }
  }
}

/** A manual timer over a manual clock. */
class FakeTime implements ScanTimer {
  t = 1_000_000;
  private seq = 0;
  readonly pending = new Map<number, { at: number; fn: () => void }>();
  now = (): number => this.t;
  set(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.pending.set(id, { at: this.t + ms, fn });
    return id;
  }
  clear(h: unknown): void {
    this.pending.delete(h as number);
  }
}

interface Rig {
  dev: FakeScanDevice;
  time: FakeTime;
  scanner: Scanner;
  saves: SavedScan[];
  failures: ScanBlockFailure[][];
  slowBlocks: number[];
  /** Runs due timers (and the ticks they start) for `ms` of fake time. */
  run(ms: number): Promise<void>;
}

function rig(
  opts: { bytes?: number; settings?: Partial<ScanSettings>; sink?: Partial<ScanFindingsSink>; saved?: SavedScan | null; dev?: FakeScanDevice; time?: FakeTime; log?: Logger } = {},
): Rig {
  const dev = opts.dev ?? new FakeScanDevice(opts.bytes ?? 8 * MIB);
  const time = opts.time ?? new FakeTime();
  const saves: SavedScan[] = [];
  const failures: ScanBlockFailure[][] = [];
  const slowBlocks: number[] = [];
  const sink: ScanFindingsSink = {
    readFailed: opts.sink?.readFailed ?? (async (f) => {
      failures.push([...f]);
      return 'handled';
    }),
    slowBlock: opts.sink?.slowBlock ?? ((b) => void slowBlocks.push(b)),
  };
  const scanner = new Scanner({
    device: dev,
    blockSize: BS,
    deviceBytes: dev.deviceBytes,
    settings: { ...DEFAULT_SCAN_SETTINGS, ...opts.settings },
    log: opts.log ?? quietLog(),
    clock: time,
    timer: time,
    sink,
    saved: opts.saved ?? null,
    save: (s) => saves.push({ cursor: { ...s.cursor }, regions: s.regions }),
  });
  const run = async (ms: number): Promise<void> => {
    const until = time.t + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | null = null;
      for (const e of time.pending) if (e[1].at <= until && (next === null || e[1].at < next[1].at)) next = e;
      if (next === null) break;
      time.pending.delete(next[0]);
      time.t = Math.max(time.t, next[1].at);
      next[1].fn();
      await scanner.idle();
      await new Promise((r) => setImmediate(r));
    }
    time.t = until;
  };
  return { dev, time, scanner, saves, failures, slowBlocks, run };
}

/** Wide reads (not the narrow re-reads), in order. */
const wide = (d: FakeScanDevice): Array<{ offset: number; bytes: number }> => d.reads.filter((r) => !r.narrow).map(({ offset, bytes }) => ({ offset, bytes }));

describe('the scan loop', () => {
  it('reads every byte once, in order, in aligned 1 MiB chunks clipped to the device end, and finishes the pass', async () => {
    const bytes = 3 * MIB + 12 * BS;
    const r = rig({ bytes, settings: { scanMinRateMib: 1, scanRateMib: 1 } });
    r.scanner.begin();
    await r.scanner.start();
    await r.run(60_000);
    const reads = wide(r.dev);
    // At 1 MiB/s a tick's allowance holds one chunk: one call per chunk.
    expect(reads).toEqual([
      { offset: 0, bytes: MIB },
      { offset: MIB, bytes: MIB },
      { offset: 2 * MIB, bytes: MIB },
      { offset: 3 * MIB, bytes: 12 * BS },
    ]);
    expect(r.dev.maxInflight).toBe(1);
    const s = r.scanner.status();
    expect(s).toMatchObject({ state: 'done', progress: 100, position: bytes, pass: 1, errorsFound: 0, slowFound: 0, rateBps: 0, etaSeconds: null });
    expect(s.finishedAt).not.toBeNull();
    // Each chunk counted once in the region record.
    expect(r.scanner.regions.totals().bins.reduce((a, b) => a + b, 0)).toBe(4);
    // The pass's end is saved.
    expect(r.saves.at(-1)?.cursor.state).toBe('done');
  });

  it('while users are idle one call reads a run of whole chunks (at most IDLE_RUN_CHUNKS), each chunk counted and judged on its own; while they do I/O, one chunk a call', async () => {
    const bytes = 40 * MIB + 12 * BS;
    const r = rig({ bytes, settings: { scanRateMib: 1000 } });
    r.dev.slowUs.set((5 * MIB) / BS + 3, 900_000); // one slow block inside a run: its chunk alone is re-read
    r.scanner.begin();
    await r.scanner.start();
    await r.run(60_000);
    const reads = wide(r.dev);
    let at = 0;
    for (const x of reads) {
      expect(x.offset).toBe(at);
      expect(x.bytes).toBeLessThanOrEqual(IDLE_RUN_CHUNKS * MIB);
      expect((x.offset + x.bytes) % MIB === 0 || x.offset + x.bytes === bytes).toBe(true);
      at += x.bytes;
    }
    expect(at).toBe(bytes);
    expect(Math.max(...reads.map((x) => x.bytes))).toBe(IDLE_RUN_CHUNKS * MIB);
    expect(reads.length).toBeLessThan(41 / 4);
    // Each 1 MiB chunk is one read in the record (41 chunks), not one per call.
    expect(r.scanner.regions.totals().bins.reduce((a, b) => a + b, 0)).toBe(41);
    // The slow chunk's blocks were read one by one, and only its chunk's.
    const narrow = r.dev.reads.filter((x) => x.narrow);
    expect(narrow.length).toBeGreaterThan(0);
    for (const x of narrow) {
      expect(x.offset).toBeGreaterThanOrEqual(5 * MIB);
      expect(x.offset + x.bytes).toBeLessThanOrEqual(6 * MIB);
    }
    expect(r.scanner.stats().slowBlocks).toBe(1);

    const busy = rig({ bytes: 8 * MIB, settings: { scanRateMib: 1000 } });
    busy.dev.userInflight = 1;
    busy.scanner.begin();
    await busy.scanner.start();
    await busy.run(60_000);
    expect(busy.scanner.state).toBe('done');
    for (const x of wide(busy.dev)) expect(x.bytes).toBe(MIB);
  });

  it('a tick that read for longer than the interval is followed at once, not an interval after it ended', async () => {
    const r = rig({ bytes: 64 * MIB, settings: { scanRateMib: 1000 } });
    const starts: number[] = [];
    r.dev.duringRead = (x) => {
      if (x.narrow) return;
      starts.push(r.time.t);
      r.time.t += 250; // every call takes 250 ms of the clock, however long
    };
    r.scanner.begin();
    await r.scanner.start();
    await r.run(5_000);
    expect(starts.length).toBeGreaterThan(4);
    // From the first read on, each call starts as the one before it ends: no 100 ms pause between ticks.
    for (let i = 1; i < starts.length; i++) expect((starts[i] as number) - (starts[i - 1] as number)).toBe(250);
  });

  it('a resumed cursor continues at its position, a chunk after a mid-chunk position ends at the next boundary', async () => {
    const first = rig({ bytes: 4 * MIB });
    await first.scanner.start();
    await first.run(100);
    const saved = first.saves.at(-1) as SavedScan;
    // A cursor saved mid-chunk (an older chunk size) still lines up with the 1 MiB grid.
    const cursor = { ...saved.cursor, state: 'running' as const, position: MIB + 8 * BS };
    const r = rig({ bytes: 4 * MIB, saved: { cursor, regions: saved.regions } });
    r.scanner.begin();
    await r.run(60_000);
    expect(wide(r.dev)[0]).toEqual({ offset: MIB + 8 * BS, bytes: MIB - 8 * BS });
    expect(wide(r.dev).reduce((a, x) => a + x.bytes, 0)).toBe(3 * MIB - 8 * BS);
    expect(r.scanner.state).toBe('done');
  });

  it('runs near the floor while users do I/O and climbs toward the ceiling when they stop', async () => {
    const r = rig({ bytes: 1024 * MIB, settings: { scanRateMib: 64, scanMinRateMib: 1 } });
    r.dev.userInflight = 1;
    await r.scanner.start();
    await r.run(10_000);
    const busy = wide(r.dev).reduce((a, x) => a + x.bytes, 0);
    // 1 MiB/s for 10 s (a chunk of slack: the bucket starts full enough for one chunk).
    expect(busy).toBeGreaterThanOrEqual(9 * MIB);
    expect(busy).toBeLessThanOrEqual(11 * MIB);
    expect(r.scanner.status().rateBps).toBe(MIB);
    r.dev.userInflight = 0;
    const before = busy;
    await r.run(10_000);
    const idle = wide(r.dev).reduce((a, x) => a + x.bytes, 0) - before;
    expect(idle).toBeGreaterThan(500 * MIB);
    expect(idle).toBeLessThanOrEqual(641 * MIB);
    expect(r.scanner.status().rateBps).toBe(64 * MIB);
  });

  it('revisits blocks skipped as moving before the pass is done, and gives them up after a bounded number of tries', async () => {
    const r = rig({ bytes: 2 * MIB });
    r.dev.moving.add(10);
    r.dev.lost.add(20);
    await r.scanner.start();
    await r.run(300);
    // The last chunk waits for the revisit.
    expect(r.scanner.state).toBe('running');
    expect(r.scanner.status().position).toBe(MIB);
    r.dev.moving.delete(10);
    await r.run(60_000);
    expect(r.scanner.state).toBe('done');
    expect(wide(r.dev).filter((x) => x.offset === 10 * BS && x.bytes === BS).length).toBeGreaterThanOrEqual(1);
    expect(r.scanner.stats().unrevisitedBytes).toBe(0);
    // The lost block is never read; nothing else either twice.
    expect(wide(r.dev).some((x) => x.offset <= 20 * BS && x.offset + x.bytes > 20 * BS && x.bytes === BS)).toBe(false);

    const g = rig({ bytes: 2 * MIB });
    g.dev.moving.add(3);
    await g.scanner.start();
    await g.run(600_000);
    expect(g.scanner.state).toBe('done');
    expect(g.scanner.stats().unrevisitedBytes).toBe(BS);
    expect(wide(g.dev).filter((x) => x.offset === 3 * BS && x.bytes === BS)).toHaveLength(MAX_REVISIT_TRIES);
  });

  it('pause and stop wait for the read in flight, then nothing more is read; resume goes on from the front', async () => {
    const r = rig({ bytes: 1024 * MIB });
    await r.scanner.start();
    let open!: () => void;
    r.dev.gate = new Promise((res) => (open = res));
    const running = r.run(1000); // the first read is held at the gate
    while (r.dev.inflight === 0) await new Promise((res) => setImmediate(res));
    let paused = false;
    const p = r.scanner.pause().then((s) => ((paused = true), s));
    await new Promise((res) => setImmediate(res));
    expect(paused).toBe(false);
    expect(r.dev.inflight).toBe(1);
    open();
    const s = await p;
    expect(s.state).toBe('paused');
    // The read in flight was counted: the front is past it.
    expect(s.position).toBe(MIB);
    await running;
    const n = r.dev.reads.length;
    await r.run(5000);
    expect(r.dev.reads.length).toBe(n);
    await r.scanner.resume();
    await r.run(2000);
    expect(wide(r.dev)[1]?.offset).toBe(MIB);
    const stopped = await r.scanner.stop();
    expect(stopped).toMatchObject({ state: 'idle', position: 0, progress: 0 });
    const m = r.dev.reads.length;
    await r.run(5000);
    expect(r.dev.reads.length).toBe(m);
  });

  it('refuses commands that do not fit the state, and a rate that is not a positive number, changing nothing', async () => {
    const r = rig();
    await expect(r.scanner.pause()).rejects.toMatchObject({ code: 'E_SCAN_STATE' });
    await expect(r.scanner.resume()).rejects.toMatchObject({ code: 'E_SCAN_STATE' });
    await expect(r.scanner.stop()).rejects.toMatchObject({ code: 'E_SCAN_STATE' });
    for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 1048577]) {
      const e = await r.scanner.start(bad).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(DmrError);
      expect((e as DmrError).code).toBe('E_USAGE');
    }
    expect(r.scanner.state).toBe('idle');
    expect(r.saves).toHaveLength(0);
    await r.scanner.start(8);
    await expect(r.scanner.start()).rejects.toMatchObject({ code: 'E_SCAN_STATE' });
    await expect(r.scanner.resume()).rejects.toMatchObject({ code: 'E_SCAN_STATE' });
    expect(r.scanner.status().pass).toBe(1);
  });

  it('users who start I/O while an interval is being read end that interval after the chunk in flight', async () => {
    const r = rig({ bytes: 1024 * MIB, settings: { scanRateMib: 4096, scanMinRateMib: 1 } });
    await r.scanner.start();
    await r.run(1000); // idle: the rate climbs, an interval grants many chunks
    const before = wide(r.dev).length;
    await r.run(100);
    expect(wide(r.dev).length - before).toBeGreaterThan(4);
    let fired = false;
    r.dev.duringRead = () => {
      if (!fired) {
        fired = true;
        r.dev.userReads += 10;
      }
    };
    const at = wide(r.dev).length;
    await r.run(100);
    expect(wide(r.dev).length - at).toBe(1);
    // The next decision saw them: the floor.
    await r.run(100);
    expect(r.scanner.status().rateBps).toBe(MIB);
  });

  it('start --rate is the pass\'s ceiling', async () => {
    const r = rig({ bytes: 1024 * MIB });
    await r.scanner.start(4);
    await r.run(10_000);
    const read = wide(r.dev).reduce((a, x) => a + x.bytes, 0);
    expect(read).toBeLessThanOrEqual(41 * MIB);
    expect(read).toBeGreaterThanOrEqual(30 * MIB);
    expect(r.scanner.status().rateBps).toBe(4 * MIB);
  });

  it('a pass started with --rate keeps that ceiling when a new daemon resumes it (the cursor holds it)', async () => {
    const first = rig({ bytes: 1024 * MIB });
    await first.scanner.start(4);
    await first.run(1000);
    const saved = first.saves.at(-1) as SavedScan;
    expect(saved.cursor.rateMib).toBe(4);
    const r = rig({ bytes: 1024 * MIB, saved });
    r.scanner.begin();
    await r.run(10_000);
    const read = wide(r.dev).reduce((a, x) => a + x.bytes, 0);
    expect(read).toBeLessThanOrEqual(41 * MIB);
    expect(r.scanner.status().rateBps).toBe(4 * MIB);
    // A new pass without --rate goes back to scan_rate_mib.
    await r.scanner.stop();
    await r.scanner.start();
    expect(r.scanner.cursorNow.rateMib).toBeNull();
  });

  it('hands failed blocks to the policy one by one (a chunk failing whole is re-read block by block) and counts them', async () => {
    const r = rig({ bytes: 2 * MIB });
    r.dev.failing.set(5, 5);
    r.dev.failing.set(300, 61);
    await r.scanner.start();
    await r.run(60_000);
    expect(r.failures).toEqual([[{ block: 5, device: 'main', errno: 5 }], [{ block: 300, device: 'main', errno: 61 }]]);
    expect(r.scanner.status()).toMatchObject({ state: 'done', errorsFound: 2 });
    // The failed chunks are in the error bin.
    expect(r.scanner.regions.totals().bins[6]).toBe(2);
  });

  it('a chunk native stopped short of (many failed reads) is read on from where it stopped: no block is skipped', async () => {
    const r = rig({ bytes: 2 * MIB });
    r.dev.maxFailures = 2;
    // Failed and moving blocks alternate: each failed block is a piece of its own.
    for (let b = 0; b < 10; b += 2) r.dev.failing.set(b, 5);
    for (let b = 1; b < 10; b += 2) r.dev.moving.add(b);
    r.dev.duringRead = (x) => {
      if (x.offset >= 10 * BS) r.dev.moving.clear();
    };
    await r.scanner.start();
    await r.run(60_000);
    expect(r.failures.flat().map((f) => f.block)).toEqual([0, 2, 4, 6, 8]);
    expect(r.scanner.status()).toMatchObject({ state: 'done', errorsFound: 5 });
    // The first call stopped after block 2: the next starts at block 3.
    expect(wide(r.dev)[0]).toEqual({ offset: 0, bytes: MIB });
    expect(wide(r.dev)).toContainEqual({ offset: 3 * BS, bytes: MIB - 3 * BS });
  });

  it('a failure read against a table that changed meanwhile is read again before the policy hears of it', async () => {
    const r = rig({ bytes: 2 * MIB });
    // Block 5 is a piece of its own (its neighbours are being moved) and fails in the first, stale read only.
    r.dev.failing.set(5, 5);
    r.dev.moving.add(4);
    r.dev.moving.add(6);
    let first = true;
    r.dev.duringRead = () => {
      if (first) {
        first = false;
        r.dev.generation++;
        return;
      }
      r.dev.failing.delete(5);
      r.dev.moving.clear();
    };
    await r.scanner.start();
    await r.run(60_000);
    expect(r.failures).toEqual([]);
    expect(r.scanner.status()).toMatchObject({ state: 'done', errorsFound: 0 });
    expect(r.dev.reads.filter((x) => x.narrow)[0]).toEqual({ offset: 5 * BS, bytes: BS, narrow: true });
  });

  it('a block-by-block read that is itself stale names nothing: its blocks are revisited, and the policy hears only of a current read', async () => {
    const current: boolean[] = [];
    const r = rig({
      bytes: 2 * MIB,
      sink: {
        readFailed: async (f) => {
          current.push(r.dev.lastGeneration === r.dev.generation);
          r.failures.push([...f]);
          return 'handled';
        },
      },
    });
    r.dev.failing.set(5, 5);
    let bumped = false;
    r.dev.duringRead = (x) => {
      if (x.narrow && !bumped) {
        bumped = true;
        r.dev.generation++;
      }
    };
    await r.scanner.start();
    await r.run(60_000);
    expect(current).toEqual([true]);
    expect(r.failures).toEqual([[{ block: 5, device: 'main', errno: 5 }]]);
    expect(r.scanner.status()).toMatchObject({ state: 'done', errorsFound: 1 });
  });

  it("the policy's re-read of a block whose table keeps changing decides nothing (it throws)", async () => {
    let reread: Promise<ScanBlockFailure[]> | null = null;
    const r = rig({
      bytes: MIB,
      sink: {
        readFailed: async (f, again) => {
          r.dev.duringRead = () => void r.dev.generation++;
          reread = again(f.map((x) => x.block));
          await reread.catch(() => undefined);
          r.dev.duringRead = null;
          return 'handled';
        },
      },
    });
    r.dev.failing.set(5, 5);
    await r.scanner.start();
    await r.run(60_000);
    expect(reread).not.toBeNull();
    await expect(reread).rejects.toThrow(/nothing is decided/);
    expect(r.dev.reads.filter((x) => x.narrow && x.offset === 5 * BS && x.bytes === BS)).toHaveLength(3);
  });

  it('an outage verdict counts nothing and reads the chunk again later', async () => {
    let outage = true;
    const seen: number[] = [];
    const r = rig({
      bytes: 2 * MIB,
      sink: {
        readFailed: async (f) => {
          seen.push(f.length);
          return outage ? 'outage' : 'handled';
        },
      },
    });
    r.dev.failing.set(5, 5);
    await r.scanner.start();
    await r.run(4000);
    expect(r.scanner.status().position).toBe(0);
    // While main does not answer, the chunk is tried again once a second, not at every tick.
    const tries = wide(r.dev).filter((x) => x.offset === 0).length;
    expect(tries).toBeGreaterThanOrEqual(2);
    expect(tries).toBeLessThanOrEqual(4);
    expect(r.scanner.regions.totals().bins.reduce((a, b) => a + b, 0)).toBe(0);
    outage = false;
    await r.run(60_000);
    expect(r.scanner.status()).toMatchObject({ state: 'done', errorsFound: 1 });
    expect(seen.length).toBeGreaterThan(1);
  });

  it('a slow chunk is re-read block by block: slow blocks counted, and one slow slow_threshold times is relocated', async () => {
    const r = rig({ bytes: 2 * MIB, settings: { slowIoMs: 500, slowThreshold: 2 } });
    r.dev.slowUs.set(7, 800_000);
    r.dev.slowUs.set(9, 400_000); // under slow_io_ms: not slow
    await r.scanner.start();
    await r.run(60_000);
    expect(r.scanner.status()).toMatchObject({ state: 'done', slowFound: 1 });
    expect(r.scanner.stats()).toMatchObject({ slowIos: 1, slowBlocks: 1, slowRelocations: 0 });
    expect(r.slowBlocks).toEqual([]);
    await r.scanner.start();
    await r.run(60_000);
    expect(r.scanner.stats()).toMatchObject({ slowIos: 2, slowBlocks: 2, slowRelocations: 1 });
    expect(r.slowBlocks).toEqual([7]);
    // The chunk read counts once in the bins (>= 500 ms), not the re-reads.
    expect(r.scanner.regions.totals().bins[5]).toBe(1);
  });

  it('saves at least every 5 s while running and at close; a running scan is saved running', async () => {
    const r = rig({ bytes: 1024 * MIB, settings: { scanRateMib: 1 } });
    await r.scanner.start();
    const startSaves = r.saves.length;
    await r.run(20_000);
    const times = r.saves.slice(startSaves).length;
    expect(times).toBeGreaterThanOrEqual(4);
    await r.scanner.close();
    const last = r.saves.at(-1) as SavedScan;
    expect(last.cursor.state).toBe('running');
    expect(last.cursor.position).toBe(r.scanner.status().position);
    expect(last.cursor.position).toBeGreaterThan(0);
    // Nothing runs after close.
    const n = r.dev.reads.length;
    await r.run(5000);
    expect(r.dev.reads.length).toBe(n);
  });

  it('also saves each time the front moved 1% of the device, so a kill -9 loses at most that much', async () => {
    const r = rig({ bytes: 200 * MIB, settings: { scanRateMib: 64 } });
    await r.scanner.start();
    for (let i = 0; i < 40; i++) {
      await r.run(100);
      const saved = r.saves.at(-1)?.cursor.position ?? 0;
      expect(r.scanner.status().position - saved).toBeLessThan(2 * MIB + MIB);
    }
    expect(r.scanner.status().position).toBeGreaterThan(50 * MIB);
  });

  it('a device whose reads keep failing is logged once per 10 s, not at every tick', async () => {
    const lines: string[] = [];
    const r = rig({ bytes: 64 * MIB, log: createLogger({ level: 'info', stderr: { write: (l: string) => lines.push(l) } }) });
    r.dev.scanRead = async () => {
      throw new Error('ENODEV');
    };
    await r.scanner.start();
    await r.run(15_000);
    const errors = lines.filter((l) => l.includes('scan read failed'));
    expect(errors).toHaveLength(2);
    expect(r.scanner.status()).toMatchObject({ state: 'running', position: 0 });
  });

  it('close saves only what changed since the last save: an idle scanner writes nothing', async () => {
    const r = rig();
    r.scanner.begin();
    await r.run(1000);
    await r.scanner.close();
    expect(r.saves).toHaveLength(0);
  });

  it('starts the next pass scan_interval_days after the last one finished (0: never)', async () => {
    const time = new FakeTime();
    const r = rig({ bytes: MIB, settings: { scanIntervalDays: 1 }, time });
    r.scanner.begin();
    await r.scanner.start();
    await r.run(10_000);
    expect(r.scanner.status()).toMatchObject({ state: 'done', pass: 1 });
    await r.run(86_400_000 - 120_000);
    expect(r.scanner.status().pass).toBe(1);
    await r.run(240_000);
    expect(r.scanner.status().pass).toBe(2);

    const off = rig({ bytes: MIB, settings: { scanIntervalDays: 0 } });
    off.scanner.begin();
    await off.scanner.start();
    await off.run(40 * 86_400_000);
    expect(off.scanner.status()).toMatchObject({ state: 'done', pass: 1 });
  });
});

describe('commands during a failing region (from the cold review: F3)', () => {
  it('a command waits for one call, not for the block-by-block naming of a whole failed chunk', async () => {
    // A failing 1 MiB region (a dead zone: every block unreadable). On a real disk each narrow read of a bad
    // block can take seconds (kernel/drive error recovery).
    const r = rig({ bytes: 64 * MIB });
    for (let b = 0; b < MIB / BS; b++) r.dev.failing.set(b, 61);
    await r.scanner.start();
    let callsAtPause = -1;
    let p: Promise<unknown> | null = null;
    r.dev.duringRead = (x) => {
      if (x.narrow && p === null) {
        callsAtPause = r.dev.reads.length; // this call is in flight
        p = r.scanner.pause();
      }
    };
    const running = r.run(1000);
    while (p === null) await new Promise((res) => setImmediate(res));
    await p;
    await running;
    // A command waits for the call in flight, not for every remaining narrow call of the chunk.
    expect(r.dev.reads.length - callsAtPause).toBeLessThanOrEqual(1);
  });

  it('close (shutdown/detach) does not wait for the naming and the policy\'s re-reads of a whole failed chunk', async () => {
    const r = rig({
      bytes: 64 * MIB,
      sink: {
        readFailed: async (f, reread) => {
          // What AutoRemapper.scanReadFailed does with readRetries = 3 (the sleeps are cut by close; the
          // re-reads are not): each try re-reads every failing block alone.
          for (let i = 0; i < 3; i++) await reread(f.map((x) => x.block));
          return 'handled';
        },
      },
    });
    for (let b = 0; b < MIB / BS; b++) r.dev.failing.set(b, 61);
    await r.scanner.start();
    let callsAtClose = -1;
    let closing: Promise<void> | null = null;
    r.dev.duringRead = (x) => {
      if (x.narrow && closing === null) {
        callsAtClose = r.dev.reads.length;
        closing = r.scanner.close();
      }
    };
    const running = r.run(1000);
    while (closing === null) await new Promise((res) => setImmediate(res));
    await closing;
    await running;
    expect(r.dev.reads.length - callsAtClose).toBeLessThanOrEqual(1);
  });
});

describe('a main slow everywhere (from the cold review: F5)', () => {
  it('two passes over a device whose every read takes 600 ms (busy HDD, degraded link) do not relocate every block', async () => {
    const r = rig({ bytes: 4 * MIB });
    for (let b = 0; b < (4 * MIB) / BS; b++) r.dev.slowUs.set(b, 600_000);
    await r.scanner.start();
    await r.run(600_000);
    expect(r.scanner.state).toBe('done');
    await r.scanner.start();
    await r.run(600_000);
    expect(r.scanner.state).toBe('done');
    // Not every block handed to the policy for relocation (the spare would fill with healthy blocks): none is.
    expect(r.slowBlocks).toEqual([]);
    expect(r.scanner.stats()).toMatchObject({ slowBlocks: 0, slowRelocations: 0, uniformSlowChunks: 8 });
  });
});
