// When will the spare run out? The rate of new bad blocks (auto and scan: the disk's own; manual remaps are a
// user's decisions, not a trend of the disk, though their slots count as used) is their mean over the
// forecast window (healthForecastDays: a moving average, which smooths the hour-to-hour noise and forgets a
// burst once it leaves the window). The spare's free slots divided by that rate is the forecast; the range
// divides them by the 95% Poisson bounds of the rate (poisson.ts). Fewer than healthForecastMinBlocks blocks
// in the window: no forecast (too few to say). Acceleration: the recent window's rate is at least
// healthAccelerationFactor times the window's before it, with at least healthAccelerationMinBlocks blocks in
// the recent one and the one before fully observed (a device younger than both windows cannot accelerate).
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
  /** New bad blocks in the forecast window, and the seconds of it the series covers. */
  windowBlocks: number;
  windowSeconds: number;
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

export function forecastOf(series: HealthSeries, s: HealthSettings, now: number): ForecastDetail {
  const w = windowOf(series, now, s.healthForecastDays * 24);
  const n = series.sum(TREND_FIELDS, w.start, now + 1);
  const perSecond = n / w.seconds;
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
      const low = poissonLower(n) / w.seconds;
      const high = poissonUpper(n) / w.seconds;
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
    windowBlocks: n,
    windowSeconds: w.seconds,
    freeSlots,
    recentBlocks,
    previousBlocks,
  };
}
