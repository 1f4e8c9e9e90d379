// The scanner's rate control (src/scan/rate-control.ts): ceiling while idle, down to the floor while users do
// I/O, back up when they stop; a token bucket over the injected clock.
import { describe, expect, it } from 'vitest';
import { DmrError } from '../../src/errors.js';
import type { QueueStats } from '../../src/native.js';
import {
  decideRate,
  initialRateState,
  MIB,
  rateLimits,
  userActivity,
  type QueueCounters,
  type RateLimits,
  type RateState,
  type UserActivity,
} from '../../src/scan/rate-control.js';

const IDLE: UserActivity = { requests: 0, bytes: 0, inflight: 0 };
const BUSY: UserActivity = { requests: 400, bytes: 400 * 4096, inflight: 32 };
const limits = rateLimits(64, 1, MIB);

/**
 * Runs decisions every `stepMs` with a scanner that reads whole chunks, as many as it is allowed; returns the
 * rates (MiB/s), the allowances and the bytes read after each decision.
 */
function run(l: RateLimits, users: UserActivity[], stepMs = 100, start: RateState = initialRateState(l), t0 = 0) {
  let state = start;
  let scanned = 0;
  const rates: number[] = [];
  const allowances: number[] = [];
  const reads: number[] = [];
  users.forEach((user, i) => {
    const d = decideRate(l, state, { atMs: t0 + i * stepMs, user, scannedBytes: scanned });
    state = d.state;
    scanned = Math.floor(d.allowanceBytes / l.chunkBytes) * l.chunkBytes;
    rates.push(d.state.rateBps / MIB);
    allowances.push(d.allowanceBytes);
    reads.push(scanned);
  });
  const total = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
  return { state, rates, allowances, reads, total };
}

describe('scan rate control', () => {
  it('climbs from the floor to the ceiling while users are idle, and stays there', () => {
    const { rates } = run(limits, Array(9).fill(IDLE));
    expect(rates).toEqual([2, 4, 8, 16, 32, 64, 64, 64, 64]);
  });

  it('reads at the ceiling on an idle device: 6.4 MiB per 100 ms, 64 MiB per second', () => {
    const warm = run(limits, Array(10).fill(IDLE));
    const { allowances, reads, total } = run(limits, Array(11).fill(IDLE), 100, warm.state, 1000);
    // The first decision of this run credits the 100 ms since the warm-up's last one.
    expect(allowances[1]).toBeGreaterThanOrEqual(Math.floor(6.4 * MIB));
    expect(allowances[1]).toBeLessThan(7.4 * MIB);
    // Over the next second (10 intervals) the whole chunks read add up to 64 MiB, give or take one chunk.
    expect(Math.abs(total(reads.slice(1)) - 64 * MIB)).toBeLessThanOrEqual(MIB);
  });

  it('drops to the floor at the first decision that sees users active, and holds the floor', () => {
    const warm = run(limits, Array(10).fill(IDLE));
    const { rates, allowances } = run(limits, Array(10).fill(BUSY), 100, warm.state, 1000);
    expect(rates).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    // The first busy decision grants at most the bucket of the floor: two chunks.
    expect(allowances[0]).toBeLessThanOrEqual(2 * MIB);
    // At the floor of 1 MiB/s one 1 MiB chunk is granted per second: the scan still advances.
    const atFloor = run(limits, Array(30).fill(BUSY), 100, { rateBps: MIB, credit: 0, lastAtMs: 0 }, 100);
    expect(atFloor.rates.every((r) => r === 1)).toBe(true);
    expect(atFloor.reads.filter((r) => r > 0)).toEqual([MIB, MIB, MIB]);
    expect(atFloor.reads.indexOf(MIB)).toBe(9);
  });

  it('goes back up to the ceiling when users are idle again', () => {
    const { rates } = run(limits, [...Array(8).fill(IDLE), ...Array(8).fill(BUSY), ...Array(8).fill(IDLE)]);
    expect(rates.slice(16)).toEqual([2, 4, 8, 16, 32, 64, 64, 64]);
  });

  it('counts a request in flight as activity even when none started in the interval', () => {
    const at64: RateState = { rateBps: 64 * MIB, credit: 0, lastAtMs: 0 };
    const d = decideRate(limits, at64, { atMs: 100, user: { requests: 0, bytes: 0, inflight: 1 }, scannedBytes: 0 });
    expect([d.active, d.state.rateBps]).toEqual([true, MIB]);
  });

  it('cuts the bytes already granted when the rate drops', () => {
    const full: RateState = { rateBps: 64 * MIB, credit: 12.8 * MIB, lastAtMs: 0 };
    const d = decideRate(limits, full, { atMs: 100, user: BUSY, scannedBytes: 0 });
    // The bucket holds what the new rate (the floor, 1 MiB/s) allows: two chunks, not the 19.2 MiB earned.
    expect(d.allowanceBytes).toBe(2 * MIB);
  });

  it('grants no burst after a stalled clock, and nothing when the clock goes back', () => {
    const at64: RateState = { rateBps: 64 * MIB, credit: 0, lastAtMs: 0 };
    const late = decideRate(limits, at64, { atMs: 60_000, user: IDLE, scannedBytes: 0 });
    expect(late.allowanceBytes).toBe(Math.floor(64 * MIB * 0.2));
    const back = decideRate(limits, at64, { atMs: -500, user: IDLE, scannedBytes: 0 });
    expect(back.allowanceBytes).toBe(0);
    expect(back.state.lastAtMs).toBe(-500);
  });

  it('always holds at least one chunk, however low the rate', () => {
    const slow = rateLimits(1, 1, 4 * MIB);
    const { reads } = run(slow, Array(41).fill(IDLE));
    // 1 MiB/s earns a 4 MiB chunk in 4 s: read at decisions 40 (the first decision earns nothing).
    expect(reads.filter((r) => r > 0)).toEqual([4 * MIB]);
    expect(reads.indexOf(4 * MIB)).toBe(40);
  });

  it('makes the scanner repay bytes it read beyond its allowance', () => {
    const at1: RateState = { rateBps: MIB, credit: 0, lastAtMs: 0 };
    const over = decideRate(limits, at1, { atMs: 100, user: BUSY, scannedBytes: 3 * MIB });
    expect(over.allowanceBytes).toBe(0);
    expect(over.state.credit).toBe(Math.round(0.1 * MIB) - 3 * MIB);
  });

  it('gives the same decisions for the same inputs', () => {
    const pattern = [IDLE, BUSY, IDLE, IDLE, BUSY, BUSY, IDLE];
    const a = run(limits, pattern);
    const b = run(limits, pattern);
    expect([a.state, a.rates, a.allowances, a.reads]).toEqual([b.state, b.rates, b.allowances, b.reads]);
  });

  it('refuses limits that are not positive numbers, and lowers a floor above the ceiling', () => {
    for (const [c, f] of [[0, 1], [-3, 1], [Number.NaN, 1], [64, 0], [64, Number.POSITIVE_INFINITY]] as const) {
      expect(() => rateLimits(c, f, MIB)).toThrow(DmrError);
    }
    expect(() => rateLimits(0, 1, MIB)).toThrow('scan rate must be a positive number of MiB/s, got 0');
    expect(() => rateLimits(8, 1, 0)).toThrow(/chunk/);
    expect(rateLimits(4, 16, MIB)).toEqual({ ceilingBps: 4 * MIB, floorBps: 4 * MIB, chunkBytes: MIB });
  });
});

describe('user activity from native per-queue counters', () => {
  const q = (queue: number, reads: number, writes: number, bytes: number, inflight = 0): QueueCounters => ({
    queue,
    reads,
    writes,
    flushes: 0,
    discards: 0,
    readBytes: bytes,
    writeBytes: 0,
    inflight,
  });

  it('sums the differences of every queue', () => {
    const a = [q(0, 10, 5, 1000), q(1, 3, 0, 300)];
    const b = [q(0, 12, 6, 1500, 2), q(1, 3, 0, 300, 1)];
    expect(userActivity(a, b)).toEqual({ requests: 3, bytes: 500, inflight: 3 });
    expect(userActivity(b, b)).toEqual({ requests: 0, bytes: 0, inflight: 3 });
  });

  it('counts a restarted queue from zero, and a new queue whole', () => {
    const a = [q(0, 100, 100, 90000)];
    const b = [q(0, 4, 1, 2000), q(1, 2, 0, 100)];
    expect(userActivity(a, b)).toEqual({ requests: 7, bytes: 2100, inflight: 0 });
  });

  it("takes native's QueueStats as they are", () => {
    const stats = (reads: number, inflight: number): QueueStats => ({
      queue: 0,
      reads,
      writes: 0,
      flushes: 1,
      discards: 0,
      readBytes: reads * 4096,
      writeBytes: 0,
      errors: 0,
      inflight,
      mainWritesOk: 0,
      mainWritesFailed: 0,
      latencyLog2Us: [],
    });
    expect(userActivity([stats(5, 0)], [stats(9, 2)])).toEqual({ requests: 4, bytes: 4 * 4096, inflight: 2 });
  });

  it('knows only the requests in flight without a previous read', () => {
    expect(userActivity(null, [q(0, 100, 100, 9000, 4)])).toEqual({ requests: 0, bytes: 0, inflight: 4 });
  });
});
