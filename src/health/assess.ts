// The health model (issue 14): a pure function of the series (series.ts), the settings (settings.ts) and
// the time. Each signal gives a reason (its value, the points it takes off the score, the state it implies,
// a sentence); the state is the worst any reason implies, and the score is 100 less the reasons' points,
// kept inside the state's band so that score and state never disagree. The rules and the reasoning behind
// each threshold are in docs/HEALTH.md.
//
//   healthy   no new bad block, no error in the watch window (healthWatchDays)
//   watch     a new bad block (a remap of any origin), a pending block, an error on main, a recovered read,
//             an outage, a spare error, within the watch window; healthSlowIos slow reads within the recent
//             window; fewer lost blocks or cluster growth than the degraded rules ask
//   degraded  healthLostBlocks blocks lost now; new bad blocks accelerating; a growing cluster;
//             healthSpareDegradedPercent of the spare used; a spare read error within the recent window
//   critical  the spare forecast to run out within healthCriticalForecastDays; a spare write error within the
//             recent window; healthSpareCriticalPercent of the spare used; main in an outage now
//   failed    main in an outage for healthOutageFailSeconds or longer; the spare full
//
// Errors decay: the window rules forget an event once it leaves its window, and an event's points halve
// every healthHalfLifeDays.
import { clusterGrowth } from './clusters.js';
import { forecastOf, windowOf, type Forecast } from './forecast.js';
import { DAY_MS, HOUR_MS, type CountField, type HealthSeries } from './series.js';
import type { HealthSettings } from './settings.js';
import { formatCount, formatDuration, plural, windowBefore } from './words.js';

export const HEALTH_STATES = ['healthy', 'watch', 'degraded', 'critical', 'failed'] as const;
export type HealthState = (typeof HEALTH_STATES)[number];

/** The score each state allows, inclusive: the score says how far into its state a disk is. */
export const SCORE_BANDS: Readonly<Record<HealthState, readonly [number, number]>> = Object.freeze({
  healthy: [90, 100],
  watch: [70, 89],
  degraded: [40, 69],
  critical: [10, 39],
  failed: [0, 9],
});

export type HealthSignal =
  | 'new_bad_blocks'
  | 'pending_blocks'
  | 'read_errors'
  | 'write_errors'
  | 'recovered_reads'
  | 'slow_ios'
  | 'spare_write_errors'
  | 'spare_read_errors'
  | 'outages'
  | 'outage_now'
  | 'lost_blocks'
  | 'spare_used'
  | 'spare_forecast'
  | 'acceleration'
  | 'cluster_growth';

/**
 * The points a signal takes off the score: `perUnit` for each event (weighted by its age: halved every
 * healthHalfLifeDays) or unit (a lost block, a percent of the spare), at most `max`. They order the disks
 * within a state; the state itself comes from the rules above.
 */
export const SCORE_WEIGHTS: Readonly<Record<HealthSignal, { perUnit: number; max: number }>> = Object.freeze({
  new_bad_blocks: { perUnit: 2, max: 30 },
  pending_blocks: { perUnit: 3, max: 20 },
  read_errors: { perUnit: 1, max: 15 },
  write_errors: { perUnit: 1, max: 15 },
  recovered_reads: { perUnit: 0.5, max: 10 },
  slow_ios: { perUnit: 0.1, max: 10 },
  spare_write_errors: { perUnit: 10, max: 40 },
  spare_read_errors: { perUnit: 10, max: 40 },
  outages: { perUnit: 5, max: 20 },
  outage_now: { perUnit: 60, max: 60 },
  lost_blocks: { perUnit: 5, max: 30 },
  spare_used: { perUnit: 0.5, max: 50 },
  spare_forecast: { perUnit: 30, max: 30 },
  acceleration: { perUnit: 15, max: 15 },
  cluster_growth: { perUnit: 3, max: 20 },
});

export interface HealthReason {
  signal: HealthSignal;
  /** The number the sentence leads with (a count, a percent, seconds). */
  value: number;
  /** Points taken off the score. */
  weight: number;
  /** The state this signal alone implies. */
  state: HealthState;
  sentence: string;
}

export interface HealthAssessment {
  score: number;
  state: HealthState;
  /** Worst first. */
  reasons: HealthReason[];
  /** What to do, in the style of `zpool status`'s action line. */
  action: string;
  forecast: Forecast;
}

export interface AssessOptions {
  /** The device's name for the action sentence (default "<device>"). */
  device?: string;
}

const rank = (s: HealthState): number => HEALTH_STATES.indexOf(s);
const worst = (a: HealthState, b: HealthState): HealthState => (rank(a) >= rank(b) ? a : b);
const points = (signal: HealthSignal, units: number): number => {
  const w = SCORE_WEIGHTS[signal];
  return Math.round(Math.min(w.max, w.perUnit * units) * 10) / 10;
};

export function assessHealth(series: HealthSeries, s: HealthSettings, now: number, options: AssessOptions = {}): HealthAssessment {
  const device = options.device ?? '<device>';
  const reasons: HealthReason[] = [];
  const end = now + 1;
  const r = s.healthRecentHours;
  const recent = windowOf(series, now, r);
  const beforeStart = recent.start - r * HOUR_MS;
  const watchStart = now - s.healthWatchDays * DAY_MS;
  const halfLifeMs = s.healthHalfLifeDays * DAY_MS;

  /** A counted signal: its reason when it has events in the watch window. */
  const counted = (signal: HealthSignal, fields: readonly CountField[], noun: string, many: string, implies: (recentN: number) => HealthState): void => {
    const inWindow = series.sum(fields, watchStart, end);
    if (inWindow === 0) return;
    const recentN = series.sum(fields, recent.start, end);
    const before = series.sum(fields, beforeStart, recent.start);
    let sentence: string;
    if (recentN > 0) {
      sentence = `${plural(recentN, noun, many)} in the last ${r} h (${formatCount(before)} ${windowBefore(r)})`;
    } else {
      const last = series.lastSeen(fields, end) ?? now;
      sentence = `${plural(inWindow, noun, many)} in the last ${s.healthWatchDays} days, the latest ${formatDuration(Math.max(0, now - last) / 1000)} ago`;
    }
    reasons.push({
      signal,
      value: recentN > 0 ? recentN : inWindow,
      weight: points(signal, series.decayed(fields, now, halfLifeMs)),
      state: implies(recentN),
      sentence,
    });
  };

  counted('new_bad_blocks', ['badAuto', 'badScan', 'badManual'], 'new bad block', 'new bad blocks', () => 'watch');
  counted('pending_blocks', ['pending'], 'block marked pending (unreadable)', 'blocks marked pending (unreadable)', () => 'watch');
  counted('read_errors', ['readErrors'], 'read error on main', 'read errors on main', () => 'watch');
  counted('write_errors', ['writeErrors'], 'write error on main', 'write errors on main', () => 'watch');
  counted('recovered_reads', ['recoveredReads'], 'read that succeeded only when retried', 'reads that succeeded only when retried', () => 'watch');
  counted('slow_ios', ['slowIos'], 'slow read', 'slow reads', (n) => (n >= s.healthSlowIos ? 'watch' : 'healthy'));
  counted('spare_write_errors', ['spareWriteErrors'], 'write error on the spare', 'write errors on the spare', (n) => (n > 0 ? 'critical' : 'watch'));
  counted('spare_read_errors', ['spareReadErrors'], 'read error on the spare', 'read errors on the spare', (n) => (n > 0 ? 'degraded' : 'watch'));

  const outages = series.sum(['outages'], watchStart, end);
  if (outages > 0) {
    const seconds = series.sum(['outageSeconds'], watchStart, end);
    reasons.push({
      signal: 'outages',
      value: outages,
      weight: points('outages', series.decayed(['outages'], now, halfLifeMs)),
      state: 'watch',
      sentence: `${plural(outages, 'outage of main', 'outages of main')} in the last ${s.healthWatchDays} days (${formatDuration(seconds)} in all, not counting one under way)`,
    });
  }

  if (series.outageSince !== null) {
    const seconds = Math.max(0, now - series.outageSince) / 1000;
    const failed = seconds >= s.healthOutageFailSeconds;
    reasons.push({
      signal: 'outage_now',
      value: seconds,
      weight: points('outage_now', 1),
      state: failed ? 'failed' : 'critical',
      sentence: `main has not answered for ${formatDuration(seconds)}${failed ? `, longer than ${formatDuration(s.healthOutageFailSeconds)}` : ' (an outage under way)'}`,
    });
  }

  const spare = series.spare;
  if (spare !== null && spare.lost > 0) {
    reasons.push({
      signal: 'lost_blocks',
      value: spare.lost,
      weight: points('lost_blocks', spare.lost),
      state: spare.lost >= s.healthLostBlocks ? 'degraded' : 'watch',
      sentence: `${plural(spare.lost, 'block', 'blocks')} lost now: unreadable on main and not written since, reads of ${spare.lost === 1 ? 'it' : 'them'} fail`,
    });
  }
  if (spare !== null && spare.slots > 0 && spare.used > 0) {
    const pct = (100 * Math.min(spare.used, spare.slots)) / spare.slots;
    const full = spare.used >= spare.slots;
    const state: HealthState = full ? 'failed' : pct >= s.healthSpareCriticalPercent ? 'critical' : pct >= s.healthSpareDegradedPercent ? 'degraded' : 'healthy';
    const shown = pct < 1 ? pct.toFixed(1) : String(Math.floor(pct));
    reasons.push({
      signal: 'spare_used',
      value: Math.round(pct * 10) / 10,
      weight: points('spare_used', pct),
      state,
      sentence: full
        ? `the spare is full (${spare.used} of ${spare.slots} slots used): new bad blocks reach the user as I/O errors`
        : `${spare.used} of ${spare.slots} spare slots used (${shown}%)`,
    });
  }

  const f = forecastOf(series, s, now);
  if (f.spareExhaustionSeconds !== null && f.range !== null && f.freeSlots !== null && f.freeSlots > 0) {
    const critical = f.spareExhaustionSeconds < s.healthCriticalForecastDays * 86400;
    reasons.push({
      signal: 'spare_forecast',
      value: f.spareExhaustionSeconds,
      weight: critical ? points('spare_forecast', 1) : 0,
      state: critical ? 'critical' : 'healthy',
      sentence:
        `at ${f.ratePerDay.toFixed(1)} new bad blocks a day (${f.windowBlocks} in ${formatDuration(f.windowSeconds)}), ` +
        `the ${plural(f.freeSlots, 'free spare slot', 'free spare slots')} last about ${formatDuration(f.spareExhaustionSeconds)} ` +
        `(${formatDuration(f.range[0])} to ${formatDuration(f.range[1])})`,
    });
  }
  if (f.acceleration) {
    reasons.push({
      signal: 'acceleration',
      value: f.recentBlocks,
      weight: points('acceleration', 1),
      state: 'degraded',
      sentence: `new bad blocks are coming faster: ${f.recentBlocks} in the last ${r} h, ${f.previousBlocks} in the ${r} h before`,
    });
  }

  const g = clusterGrowth(series.positions, s.healthClusterDistanceBlocks, now - s.healthClusterDays * DAY_MS, end);
  if (g.joined > 0) {
    const where = g.lowest === g.highest ? `block ${g.lowest}` : `blocks ${g.lowest} to ${g.highest}`;
    reasons.push({
      signal: 'cluster_growth',
      value: g.joined,
      weight: points('cluster_growth', g.joined),
      state: g.joined >= s.healthClusterGrowthBlocks ? 'degraded' : 'watch',
      sentence: `${plural(g.joined, 'new bad block', 'new bad blocks')} in the last ${s.healthClusterDays} days within ${s.healthClusterDistanceBlocks} blocks of earlier ones (${where}): a growing defect`,
    });
  }

  reasons.sort((a, b) => rank(b.state) - rank(a.state) || b.weight - a.weight);
  const state = reasons.reduce<HealthState>((st, x) => worst(st, x.state), 'healthy');
  const [lo, hi] = SCORE_BANDS[state];
  const raw = Math.round(100 - reasons.reduce((n, x) => n + x.weight, 0));
  const score = Math.min(hi, Math.max(lo, raw));
  const forecast: Forecast = { spareExhaustionSeconds: f.spareExhaustionSeconds, range: f.range, acceleration: f.acceleration, ratePerDay: f.ratePerDay };
  return { score, state, reasons, action: actionFor(state, reasons, device), forecast };
}

/** The action line: what a user should do about `state`, given its worst reason. */
export function actionFor(state: HealthState, reasons: readonly HealthReason[], device: string): string {
  const top = reasons[0];
  switch (state) {
    case 'healthy':
      return 'No action needed.';
    case 'watch':
      return (
        'The disk has begun to fail in places and its bad blocks are hidden; disks in this state fail far more often within weeks. ' +
        `Make sure the backups are current and run a full scan (dmremap-ublk scan ${device} start) to find its other weak blocks; see docs/HEALTH.md.`
      );
    case 'degraded':
      return (
        `Back up the data and plan to replace the disk; see 'dmremap-ublk health ${device}' for the trend and docs/HEALTH.md.` +
        (reasons.some((x) => x.signal === 'lost_blocks' && x.state === 'degraded')
          ? ' Blocks are lost: restore the files that hold them from a backup (writing a block heals it).'
          : '')
      );
    case 'critical':
      return `Back up the data now and replace the disk soon: ${top?.sentence ?? 'see the reasons'}.`;
    case 'failed':
      return top?.signal === 'outage_now'
        ? 'Main no longer answers: check its cable, power and controller; if it does not come back, replace the disk and restore the data from a backup.'
        : 'Replace the disk now, copying the data off while it still reads: the spare is full, so new bad blocks reach the user as I/O errors.';
  }
}
