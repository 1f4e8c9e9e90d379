// The judge of users' slow reads (user-slow-reads.ts) where a cold review found it wrong: reads on while
// users are busy, a failed re-read forgotten, a burst over the whole disk counted, a slow spare judged
// against main, merged reads counted as one, one episode counted twice. A fake device that can turn users
// busy, blocks failing, blocks on the spare, and latencies, at each call.
import { describe, expect, it } from 'vitest';
import type { NativeScanReadResult, ScanSegment } from '../../src/native.js';
import type { QueueCounters } from '../../src/scan/rate-control.js';
import type { ScanDevice } from '../../src/scan/scanner.js';
import { serialScanReads } from '../../src/scan/serial-scan-reads.js';
import { DEFAULT_SCAN_SETTINGS } from '../../src/scan/settings.js';
import { SlowBlockRule } from '../../src/scan/slow-blocks.js';
import { UserSlowReads } from '../../src/scan/user-slow-reads.js';
import { quietLog } from './helpers.js';

const MIB = 1 << 20;
const BS = 4096;

class Dev implements ScanDevice {
  generation = 1;
  narrowCalls = 0;
  onRead: (() => void) | null = null;
  busy = false;
  userReads = 0;
  failing = new Set<number>();
  /** Blocks served from the spare (remapped). */
  onSpare: (b: number) => boolean = () => false;
  constructor(readonly deviceBytes: number, public lat: (b: number) => number) {}
  tableGeneration(): number { return this.generation; }
  stats(): QueueCounters[] {
    if (this.busy) this.userReads += 100;
    return [{ queue: 0, reads: this.userReads, writes: 0, flushes: 0, discards: 0, readBytes: 0, writeBytes: 0, inflight: this.busy ? 4 : 0 }];
  }
  async scanRead(offset: bigint, bytes: number, narrow = false): Promise<NativeScanReadResult> {
    if (narrow) this.narrowCalls++;
    const gen = this.generation;
    await new Promise((r) => setImmediate(r));
    this.onRead?.();
    const first = Number(offset) / BS;
    const segments: ScanSegment[] = [];
    for (let b = first; b < first + bytes / BS; b++) {
      segments.push({ device: this.onSpare(b) ? 'spare' : 'main', block: b, blocks: 1, skipped: null, latencyUs: this.lat(b), errno: this.failing.has(b) ? 5 : 0 });
    }
    return { offset, bytes, segments, coveredBytes: bytes, stopped: null, generation: gen };
  }
}

function rig(dev: Dev) {
  let t = 1_000_000;
  const pending = new Map<number, { at: number; fn: () => void }>();
  let seq = 0;
  const time = { now: () => t, set: (fn: () => void, ms: number) => { const id = ++seq; pending.set(id, { at: t + ms, fn }); return id; }, clear: (h: unknown) => void pending.delete(h as number) };
  const relocated: number[] = [];
  const log = quietLog();
  const settings = { ...DEFAULT_SCAN_SETTINGS };
  const rule = new SlowBlockRule({ slowThreshold: settings.slowThreshold, log, relocate: (b) => void relocated.push(b) });
  const user = new UserSlowReads({ device: serialScanReads(dev), blockSize: BS, deviceBytes: dev.deviceBytes, slowIoMs: settings.slowIoMs, rule, log, clock: time, timer: time });
  const run = async (ms: number): Promise<void> => {
    const until = t + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | null = null;
      for (const e of pending) if (e[1].at <= until && (next === null || e[1].at < next[1].at)) next = e;
      if (next === null) break;
      pending.delete(next[0]);
      t = Math.max(t, next[1].at);
      next[1].fn();
      await user.idle();
      await new Promise((r) => setImmediate(r));
    }
    t = until;
  };
  return { user, rule, relocated, run };
}

describe('the judge reads only while users are idle', () => {
  it('users who start I/O during a re-read stop it: no further narrow call is made while they are busy', async () => {
    // A 512 KiB user read (128 blocks: 4 narrow calls of 32), slow on the disk (800 ms a block). Users come
    // back during the first call and stay busy: every further call competes with them (and, on this disk,
    // is 32 x 800 ms of reads), and its result is thrown away anyway ('again').
    const dev = new Dev(64 * MIB, () => 800_000);
    const r = rig(dev);
    dev.onRead = () => { dev.busy = true; };
    r.user.suspect({ block: 1000, blocks: 128, latencyUs: 900_000, dropped: 0 });
    await r.run(30_000);
    expect(r.user.stats().judged).toBe(0);
    expect(dev.narrowCalls).toBe(1);
  });

  it('a range whose every re-read users void stops each try at its first call, and is dropped after the tries', async () => {
    // Users do a little I/O during each call (a cron job, a pager), idle between: each try is judged void at
    // its first call, not after the whole range (4 calls).
    const dev = new Dev(64 * MIB, () => 800_000);
    const r = rig(dev);
    dev.onRead = () => { dev.userReads += 1; };
    r.user.suspect({ block: 1000, blocks: 128, latencyUs: 900_000, dropped: 0 });
    await r.run(60_000);
    expect(r.user.stats()).toMatchObject({ judged: 0, unjudged: 1 });
    expect(dev.narrowCalls).toBe(5);
  });
});

describe('a block that fails its re-read', () => {
  it('is not silently forgotten: a range whose only block now fails is counted as unjudged or handed on, not "judged"', async () => {
    // A user's read of 2 blocks was slow; on the re-read block 11 fails (EIO) and block 10 is fast.
    const dev = new Dev(64 * MIB, () => 100);
    dev.failing.add(11);
    const r = rig(dev);
    r.user.suspect({ block: 10, blocks: 2, latencyUs: 900_000, dropped: 0 });
    await r.run(10_000);
    // Not judged (unjudged, with a warning naming the block): the scan or the next user read finds it.
    expect(r.user.stats().judged).toBe(0);
  });
});

describe('main slow as a whole for a while (another partition of the same disk, a burst this device cannot see)', () => {
  it('a re-read that turns slow part way through (the whole disk slowed, not these blocks) does not count the blocks read after', async () => {
    // Users of this device are idle; the disk under it gets busy part way through the re-read of a 96-block
    // range (3 narrow calls): the 3rd call's 32 blocks are slow, as is every block of the disk at that time.
    // 32 of 96 is not "slow as a whole", so no reference read is made and the 32 blocks count. The same hot
    // range (a file users read again) caught by the same kind of burst once more: 32 good blocks relocated.
    const dev = new Dev(64 * MIB, () => 100);
    const r = rig(dev);
    let calls = 0;
    dev.onRead = () => { calls++; dev.lat = calls % 3 === 0 ? () => 800_000 : () => 100; };
    for (let i = 0; i < 2; i++) {
      r.user.suspect({ block: 2000, blocks: 96, latencyUs: 900_000, dropped: 0 });
      await r.run(10_000);
    }
    expect(r.user.stats().judged).toBe(2);
    expect(r.relocated).toEqual([]);
  });
});

describe('a slow spare is not judged from users\' reads (the reference is main\'s)', () => {
  it('a spare slow as a whole (every slot 800 ms) does not get its remapped blocks relocated (their slots marked failed)', async () => {
    // Blocks 3000-3007 were remapped earlier; the spare is slow everywhere. Users read them (slow_io twice).
    // The range is slow as a whole, so a reference range is read "half the device away": on main, fast,
    // so the judge calls the spare range a bad zone and counts it; the 2nd time its 8 blocks go to the
    // policy as slow on the spare (AutoRemapper.scanSlowBlock: slotFailed true), onto slots as slow.
    const dev = new Dev(64 * MIB, (b) => (b >= 3000 && b < 3008 ? 800_000 : 100));
    dev.onSpare = (b) => b >= 3000 && b < 3008;
    const r = rig(dev);
    for (let i = 0; i < 2; i++) {
      r.user.suspect({ block: 3000, blocks: 8, latencyUs: 900_000, dropped: 0 });
      await r.run(10_000);
    }
    expect(r.user.stats().judged).toBe(2);
    expect(r.relocated).toEqual([]);
  });
});

describe('userSlowUnjudged and judged count reads', () => {
  it('three slow reads of one range, merged while waiting, then given up after the tries: 3 reads never read again, not 1', async () => {
    const dev = new Dev(64 * MIB, () => 800_000);
    const r = rig(dev);
    dev.onRead = () => { dev.generation++; }; // every re-read voided (the table changes under it)
    for (let i = 0; i < 3; i++) r.user.suspect({ block: 300, blocks: 1, latencyUs: 900_000, dropped: 0 });
    await r.run(60_000);
    expect(r.user.waiting).toBe(0);
    expect(r.user.stats().slowReads).toBe(3);
    expect(r.user.stats().unjudged).toBe(3);
  });
});

describe('one slow episode is one count (slow_threshold is about independent findings)', () => {
  it('two overlapping slow reads of the same moment (readahead + a 4 KiB read) do not relocate a block from one episode', async () => {
    // Both arrive together (one user episode): merged into one suspect, block 700 is counted once, not twice
    // (which would reach slow_threshold 2 without any later evidence).
    const dev = new Dev(64 * MIB, (b) => (b === 700 ? 800_000 : 100));
    const r = rig(dev);
    r.user.suspect({ block: 696, blocks: 8, latencyUs: 900_000, dropped: 0 });
    r.user.suspect({ block: 700, blocks: 1, latencyUs: 900_000, dropped: 0 });
    await r.run(10_000);
    expect(r.user.stats().judged).toBe(2);
    expect(r.relocated).toEqual([]);
  });
});

describe('a block counts only when slow in two re-reads', () => {
  it('a burst that slows the whole disk during the first re-read only counts nothing (the second re-read and the reference are fast)', async () => {
    const dev = new Dev(64 * MIB, () => 100);
    const r = rig(dev);
    let calls = 0;
    dev.onRead = () => { calls++; dev.lat = calls === 1 ? () => 800_000 : () => 100; };
    r.user.suspect({ block: 4000, blocks: 32, latencyUs: 900_000, dropped: 0 });
    await r.run(10_000);
    expect(r.user.stats().judged).toBe(1);
    expect(r.rule.timesSlow(4010)).toBe(0);
  });

  it('a block slow in both re-reads, with a fast reference, is counted once', async () => {
    const dev = new Dev(64 * MIB, (b) => (b === 4010 ? 800_000 : 100));
    const r = rig(dev);
    r.user.suspect({ block: 4000, blocks: 32, latencyUs: 900_000, dropped: 0 });
    await r.run(10_000);
    expect(r.rule.timesSlow(4010)).toBe(1);
    expect(r.rule.timesSlow(4011)).toBe(0);
  });
});
