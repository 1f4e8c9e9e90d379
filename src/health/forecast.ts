// When will the spare run out? The rate of new bad blocks (auto and scan: the disk's own; manual remaps are a
// user's decisions, not a trend of the disk, though their slots count as used) is their mean over the
// forecast window (healthForecastDays: a moving average, which smooths the hour-to-hour noise and forgets a
// burst once it leaves the window), unless the blocks (all but a few stray ones) began within the window
// after a quiet stretch too long to be chance at a constant rate (an onset, see onsetOf): then it is the mean
// of those since the onset, over at least the recent window. The spare's free slots divided by that rate is
// the forecast; the range divides them by the 95% Poisson bounds of the rate (poisson.ts). Fewer than
// healthForecastMinBlocks blocks in the window: no forecast (too few to say). Acceleration: the recent
// window's rate is at least healthAccelerationFactor times the window's before it, with at least
// healthAccelerationMinBlocks blocks in the recent one and the one before fully observed (a device younger
// than both windows cannot accelerate).
import { poissonLower, poissonUpper } from './poisson.js';
import { DAY_MS, HOUR_MS, type CountField, type HealthSeries } from './series.js';
import type { HealthSettings } from './settings.js';

/** The new bad blocks the forecast counts. */
export const TREND_FIELDS: readonly CountField[] = ['badAuto', 'badScan'];

export interface Forecast {
  /** Seconds until the spare runs out at the current rate; null without enough data or without a spare sample. */
  spareExhaustionSeconds: number | null;
  /** [soonest, latest] plausible seconds (95% Poisson bounds of the rate); null with spareExhaustionSeconds. */
  range: [number, number] | null;
  /** New bad blocks come at least healthAccelerationFactor times faster than in the window before. */
  acceleration: boolean;
  /** The smoothed rate of new bad blocks per day. */
  ratePerDay: number;
}

/** The forecast and the numbers behind it (for the reasons' sentences). */
export interface ForecastDetail extends Forecast {
  /** The new bad blocks the rate is taken over and its seconds: the forecast window's (as the series covers it), or those since an onset. */
  windowBlocks: number;
  windowSeconds: number;
  /** The start of the hour the blocks began in when the rate is taken since an onset (onsetOf), else null. */
  onset: number | null;
  /** Free spare slots at the last sample (null before one). */
  freeSlots: number | null;
  /** New bad blocks in the recent window and in the window before it. */
  recentBlocks: number;
  previousBlocks: number;
}

const floorHour = (t: number): number => Math.floor(t / HOUR_MS) * HOUR_MS;

/**
 * The window of `hours` hourly buckets ending with the one holding `now`: its start, and the seconds of it
 * the series covers (from its start or the series' beginning, to `now`; at least an hour, the series'
 * resolution).
 */
export function windowOf(series: HealthSeries, now: number, hours: number): { start: number; seconds: number } {
  const start = floorHour(now) - (hours - 1) * HOUR_MS;
  const from = Math.max(start, series.since);
  return { start, seconds: Math.max(HOUR_MS, now - from) / 1000 };
}

/**
 * How unlikely a quiet stretch must be, at a constant rate, before the blocks after it are taken as an onset
 * (for all the candidate onsets of a window together: see onsetOf).
 */
export const ONSET_P = 0.05;

/** The share of the window's blocks that may come before an onset (stray blocks of a disk quiet until it). */
export const ONSET_STRAY_SHARE = 0.05;

/**
 * P(X <= k) for X binomial(n, p): the chance that at most `k` of `n` blocks falling uniformly over a stretch
 * land in its first share `p`. Summed in logs (the terms underflow for hundreds of blocks).
 */
export function binomialAtMost(k: number, n: number, p: number): number {
  if (k >= n || p <= 0) return 1;
  if (p >= 1) return 0;
  const lr = Math.log(p / (1 - p));
  let lt = n * Math.log1p(-p);
  let sum = Math.exp(lt);
  for (let i = 0; i < k; i++) {
    lt += Math.log((n - i) / (i + 1)) + lr;
    sum += Math.exp(lt);
  }
  return Math.min(1, sum);
}

/**
 * The onset of the window's `n` new bad blocks, or null when there is none. A candidate is the start of an
 * hour with a block, with at most ONSET_STRAY_SHARE of the blocks before it (`before`); it is an onset when
 * a constant rate over the window (as the series covers it, from `from`) would leave at most `before` blocks
 * ahead of it with probability below ONSET_P divided by the most candidates there can be (each hour with a
 * block adds one to `before`, so at most floor(n * ONSET_STRAY_SHARE) + 1: a steady disk passes for an
 * onset in at most ONSET_P of windows). Of the onsets, the least
 * probable quiet wins. A disk quiet for weeks that begins to fail is followed from its first bad block
 * instead of being diluted by the quiet days, also when a stray block or two came early in the window.
 * With no block before it, a steady disk's first block passes for an onset only when ((now - t) / (now -
 * from))^n < ONSET_P, and the rate is then too high by at most ONSET_P^(-1/n): 35% at 10 blocks, 3% at 100.
 */
export function onsetOf(series: HealthSeries, from: number, now: number, n: number): { at: number; before: number } | null {
  const observed = now - from;
  if (n === 0 || observed <= 0) return null;
  const maxBefore = Math.floor(n * ONSET_STRAY_SHARE);
  const candidates: { at: number; before: number }[] = [];
  let before = 0;
  for (const b of series.buckets()) {
    if (b.start + b.ms <= from || b.start > now) continue;
    let c = 0;
    for (const f of TREND_FIELDS) c += b.counts[f];
    if (c === 0) continue;
    if (before > maxBefore) break;
    const at = Math.max(b.start, from);
    // Each hour with a block adds at least one to `before`: at most maxBefore + 1 candidates.
    if (at > from) candidates.push({ at, before });
    before += c;
  }
  let best: { at: number; before: number; p: number } | null = null;
  for (const c of candidates) {
    const p = binomialAtMost(c.before, n, (c.at - from) / observed);
    if (p < ONSET_P / (maxBefore + 1) && (best === null || p < best.p)) best = { ...c, p };
  }
  return best === null ? null : { at: best.at, before: best.before };
}

export function forecastOf(series: HealthSeries, s: HealthSettings, now: number): ForecastDetail {
  const w = windowOf(series, now, s.healthForecastDays * 24);
  const n = series.sum(TREND_FIELDS, w.start, now + 1);
  // The rate since an onset is taken over at least the recent window (a burst in one hour is not a rate of
  // thousands a day), and never over more than the window the mean would use.
  const onset = onsetOf(series, Math.max(w.start, series.since), now, n);
  const seconds = onset === null ? w.seconds : Math.min(w.seconds, Math.max(now - onset.at, s.healthRecentHours * HOUR_MS, HOUR_MS) / 1000);
  // The blocks the rate is taken over: since the onset (the stray ones before it are not the trend).
  const blocks = onset === null ? n : n - onset.before;
  const perSecond = blocks / seconds;
  const spare = series.spare;
  const freeSlots = spare === null ? null : Math.max(0, spare.slots - spare.used);

  let spareExhaustionSeconds: number | null = null;
  let range: [number, number] | null = null;
  if (freeSlots !== null && spare !== null && spare.slots > 0 && n >= s.healthForecastMinBlocks) {
    if (freeSlots === 0) {
      spareExhaustionSeconds = 0;
      range = [0, 0];
    } else {
      spareExhaustionSeconds = freeSlots / perSecond;
      const low = poissonLower(blocks) / seconds;
      const high = poissonUpper(blocks) / seconds;
      range = [freeSlots / high, low > 0 ? freeSlots / low : Number.MAX_VALUE];
    }
  }

  const r = s.healthRecentHours;
  const recent = windowOf(series, now, r);
  const previousStart = recent.start - r * HOUR_MS;
  const recentBlocks = series.sum(TREND_FIELDS, recent.start, now + 1);
  const previousBlocks = series.sum(TREND_FIELDS, previousStart, recent.start);
  const previousObserved = series.since <= previousStart;
  const acceleration =
    previousObserved &&
    recentBlocks >= s.healthAccelerationMinBlocks &&
    recentBlocks / recent.seconds >= (s.healthAccelerationFactor * previousBlocks) / (r * 3600);

  return {
    spareExhaustionSeconds,
    range,
    acceleration,
    ratePerDay: perSecond * (DAY_MS / 1000),
    windowBlocks: blocks,
    windowSeconds: seconds,
    onset: onset === null ? null : onset.at,
    freeSlots,
    recentBlocks,
    previousBlocks,
  };
}
