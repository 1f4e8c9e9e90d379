// How fast the background scanner may read: md's sync_speed_min/max idea. A ceiling (scan_rate_mib) holds
// while the device is idle; a decision that sees user I/O drops the rate to the floor (scan_min_rate_mib) at
// once, so users get the disk back within one interval however high the ceiling (an "unlimited" one too),
// and the scan always advances; once the users are idle again it doubles back up to the ceiling. The bytes it may read are a token bucket filled at the current rate over the time that really
// passed (the injected clock), so a late timer does not slow the scan and a stalled one grants no burst.
//
// Pure: no timers, no clock reads, no I/O. The scanner calls decideRate() every interval (about 100 ms) with
// the time, the users' I/O since the last call (userActivity() of native's per-queue counters) and the bytes
// it read since the last call, and reads at most `allowanceBytes` until the next call.
import { DmrError } from '../errors.js';

export const MIB = 1024 * 1024;

export interface RateLimits {
  /** The ceiling, bytes/s: the rate while users are idle (scan_rate_mib). */
  ceilingBps: number;
  /** The floor, bytes/s: the rate users' I/O cannot push the scan below (scan_min_rate_mib); <= ceilingBps. */
  floorBps: number;
  /** The scanner's read size: the bucket always holds up to two reads, however low the rate. */
  chunkBytes: number;
}

/** The rules' constants (defaults: DEFAULT_RATE_TUNING); tests and the next session may tune them. */
export interface RateTuning {
  /** Factor of the rate at a decision that saw user I/O (0 <= decrease < 1; 0: straight to the floor). */
  decrease: number;
  /** Factor of the rate at a decision that saw none (> 1). */
  increase: number;
  /** The bucket holds at most this long at the current rate (or one chunk, if larger), in ms. */
  burstMs: number;
  /** Time between two decisions counted at most this long (a stalled event loop earns no burst), in ms. */
  maxElapsedMs: number;
}

/**
 * To the floor on activity and double on idleness: the floor at the first busy decision (halving took six
 * from 64 MiB/s, twenty from an unlimited ceiling: 2 s of a user's I/O beside a full-speed scan, measured by
 * bench/guest-scan-bench.mjs), the ceiling of 64 MiB/s again after six idle ones. The bucket holds two
 * 100 ms intervals (two chunks at least, so that credit earned while a chunk waits is not lost at a low
 * rate), so one late timer costs nothing and a drop of the rate cuts the bytes already granted.
 */
export const DEFAULT_RATE_TUNING: Readonly<RateTuning> = Object.freeze({
  decrease: 0,
  increase: 2,
  burstMs: 200,
  maxElapsedMs: 1000,
});

/** Users' I/O in one interval, as the data path counts it (the scanner's own reads excluded). */
export interface UserActivity {
  /** User requests started in the interval (reads, writes, flushes, discards). */
  requests: number;
  /** Bytes those requests read or wrote. */
  bytes: number;
  /** User requests in flight when the counters were read. */
  inflight: number;
}

export interface RateSample {
  /** The injected clock, ms (monotonic). */
  atMs: number;
  user: UserActivity;
  /** Bytes the scanner read since the previous decision. */
  scannedBytes: number;
}

export interface RateState {
  /** The rate now, bytes/s (what `scan` shows as "rate now"). */
  rateBps: number;
  /** Whole bytes earned and not read yet; negative when the scanner read more than it was granted (repaid first). */
  credit: number;
  /** The clock at the previous decision; null before the first. */
  lastAtMs: number | null;
}

export interface RateDecision {
  state: RateState;
  /** Bytes the scanner may read until the next decision (whole bytes, >= 0). */
  allowanceBytes: number;
  /** Whether this decision saw user I/O. */
  active: boolean;
}

/** Cumulative counters of one ublk queue (native's QueueStats has these fields). */
export interface QueueCounters {
  queue: number;
  reads: number;
  writes: number;
  flushes: number;
  discards: number;
  readBytes: number;
  writeBytes: number;
  inflight: number;
}

/**
 * The limits from the settings in MiB/s. E_USAGE when either is not a positive finite number. A floor above
 * the ceiling is lowered to it: the ceiling is what the user asked the scan never to exceed.
 */
export function rateLimits(ceilingMib: number, floorMib: number, chunkBytes: number): RateLimits {
  if (!Number.isFinite(ceilingMib) || ceilingMib <= 0) {
    throw new DmrError('E_USAGE', `scan rate must be a positive number of MiB/s, got ${String(ceilingMib)}`);
  }
  if (!Number.isFinite(floorMib) || floorMib <= 0) {
    throw new DmrError('E_USAGE', `scan minimum rate must be a positive number of MiB/s, got ${String(floorMib)}`);
  }
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0) {
    throw new DmrError('E_USAGE', `scan chunk must be a positive whole number of bytes, got ${String(chunkBytes)}`);
  }
  const ceilingBps = ceilingMib * MIB;
  return { ceilingBps, floorBps: Math.min(floorMib * MIB, ceilingBps), chunkBytes };
}

/** The state before the first decision: at the floor (a scan starts gently and climbs while users are idle). */
export function initialRateState(limits: RateLimits): RateState {
  return { rateBps: limits.floorBps, credit: 0, lastAtMs: null };
}

/** The most the bucket holds at `rateBps`. */
export function bucketBytes(limits: RateLimits, rateBps: number, tuning: RateTuning = DEFAULT_RATE_TUNING): number {
  return Math.max(2 * limits.chunkBytes, (rateBps * tuning.burstMs) / 1000);
}

/** Whether users did I/O in the interval: any request started, or any in flight at the sample. */
export function isUserActive(user: UserActivity): boolean {
  return user.requests > 0 || user.inflight > 0;
}

/**
 * One decision: credit the time since the previous one at the rate that held during it, debit what the
 * scanner read, move the rate toward the floor (user I/O seen) or the ceiling (none), and cap the bucket at
 * the new rate (so a drop takes effect at once).
 */
export function decideRate(
  limits: RateLimits,
  state: RateState,
  sample: RateSample,
  tuning: RateTuning = DEFAULT_RATE_TUNING,
): RateDecision {
  const elapsedMs = state.lastAtMs === null ? 0 : Math.min(Math.max(sample.atMs - state.lastAtMs, 0), tuning.maxElapsedMs);
  // Whole bytes: the credit stays an integer, so chunks add up exactly however many decisions earn them.
  let credit = state.credit + Math.round((state.rateBps * elapsedMs) / 1000) - Math.max(sample.scannedBytes, 0);
  const active = isUserActive(sample.user);
  const rateBps = active
    ? Math.max(limits.floorBps, state.rateBps * tuning.decrease)
    : Math.min(limits.ceilingBps, state.rateBps * tuning.increase);
  credit = Math.min(credit, Math.floor(bucketBytes(limits, rateBps, tuning)));
  return {
    state: { rateBps, credit, lastAtMs: sample.atMs },
    allowanceBytes: Math.max(0, credit),
    active,
  };
}

/**
 * Users' I/O between two reads of native's per-queue counters (cumulative since the queue started). A queue
 * whose counters went back (the data path was restarted) counts from zero; a queue not in `prev` likewise.
 * With no previous read (`prev` null) nothing is known of the interval: only the requests in flight count.
 */
export function userActivity(prev: readonly QueueCounters[] | null, next: readonly QueueCounters[]): UserActivity {
  const before = new Map((prev ?? []).map((q) => [q.queue, q]));
  let requests = 0;
  let bytes = 0;
  let inflight = 0;
  for (const q of next) {
    inflight += q.inflight;
    if (prev === null) continue;
    const reqs = q.reads + q.writes + q.flushes + q.discards;
    const byts = q.readBytes + q.writeBytes;
    const p = before.get(q.queue);
    const preqs = p === undefined ? 0 : p.reads + p.writes + p.flushes + p.discards;
    const pbyts = p === undefined ? 0 : p.readBytes + p.writeBytes;
    const restarted = p !== undefined && (q.reads < p.reads || q.writes < p.writes || q.flushes < p.flushes || q.discards < p.discards);
    requests += restarted ? reqs : reqs - preqs;
    bytes += restarted || byts < pbyts ? byts : byts - pbyts;
  }
  return { requests, bytes, inflight };
}
