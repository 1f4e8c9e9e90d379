// The health model's settings (issue 14): every threshold of its state rules, with names, limits, defaults
// and a zod schema, shaped like the scanner's (src/scan/settings.ts) so that they can join the config file's
// schema (src/config/schema.ts) when the model is wired. docs/HEALTH.md gives the reasoning behind each
// default and says which are judgement calls.
import * as z from 'zod';
import { DmrError } from '../errors.js';
import { parseWholeNumber } from '../numbers.js';

export interface HealthSettings {
  /** Days an error or a new bad block keeps the disk out of `healthy` (Google 2007: 39x within 60 days after the first scan error). */
  healthWatchDays: number;
  /** The recent window, hours: the reasons' "in the last 24 h", the acceleration's two windows, spare errors that are critical. */
  healthRecentHours: number;
  /** Slow I/Os within the recent window that make the disk `watch`. */
  healthSlowIos: number;
  /** Blocks lost now (unreadable, not written since) that make the disk `degraded`. */
  healthLostBlocks: number;
  /** Percent of the spare's slots used that makes the disk `degraded`. */
  healthSpareDegradedPercent: number;
  /** Percent of the spare's slots used that makes the disk `critical`. */
  healthSpareCriticalPercent: number;
  /** Days of new bad blocks (auto and scan) the forecast's rate is taken over. */
  healthForecastDays: number;
  /** New bad blocks within the forecast window below which there is no forecast. */
  healthForecastMinBlocks: number;
  /** A forecast of the spare running out within this many days makes the disk `critical`. */
  healthCriticalForecastDays: number;
  /** The recent window's rate of new bad blocks must be at least this many times the previous window's for acceleration. */
  healthAccelerationFactor: number;
  /** New bad blocks within the recent window needed before acceleration can fire. */
  healthAccelerationMinBlocks: number;
  /** Two bad blocks at most this many blocks apart are in one cluster. */
  healthClusterDistanceBlocks: number;
  /** Days a growing cluster is looked for in. */
  healthClusterDays: number;
  /** New bad blocks within that window that joined a cluster of earlier ones: this many make the disk `degraded`. */
  healthClusterGrowthBlocks: number;
  /** An outage of main lasting this many seconds makes the disk `failed` (shorter: `critical` while it lasts). */
  healthOutageFailSeconds: number;
  /** Half-life, in days, of an event's weight in the score (errors decay). */
  healthHalfLifeDays: number;
}

export type HealthSettingKey = keyof HealthSettings;

export const HEALTH_SETTING_KEYS = [
  'healthWatchDays',
  'healthRecentHours',
  'healthSlowIos',
  'healthLostBlocks',
  'healthSpareDegradedPercent',
  'healthSpareCriticalPercent',
  'healthForecastDays',
  'healthForecastMinBlocks',
  'healthCriticalForecastDays',
  'healthAccelerationFactor',
  'healthAccelerationMinBlocks',
  'healthClusterDistanceBlocks',
  'healthClusterDays',
  'healthClusterGrowthBlocks',
  'healthOutageFailSeconds',
  'healthHalfLifeDays',
] as const satisfies readonly HealthSettingKey[];

/** Issue 14's numbers where it gives them (7 days, 90%, half, 10 blocks, 2x); the others are judgement calls (docs/HEALTH.md). */
export const DEFAULT_HEALTH_SETTINGS: Readonly<HealthSettings> = Object.freeze({
  healthWatchDays: 60,
  healthRecentHours: 24,
  healthSlowIos: 10,
  healthLostBlocks: 1,
  healthSpareDegradedPercent: 50,
  healthSpareCriticalPercent: 90,
  healthForecastDays: 7,
  healthForecastMinBlocks: 10,
  healthCriticalForecastDays: 7,
  healthAccelerationFactor: 2,
  healthAccelerationMinBlocks: 10,
  healthClusterDistanceBlocks: 2048,
  healthClusterDays: 7,
  healthClusterGrowthBlocks: 3,
  healthOutageFailSeconds: 600,
  healthHalfLifeDays: 7,
});

/**
 * Inclusive bounds. Windows reach back at most a year: the series keeps daily buckets for longer
 * (series.ts, DAILY_KEEP_DAYS), so every window the settings allow has its data.
 */
export const HEALTH_SETTING_LIMITS: Readonly<Record<HealthSettingKey, { min: number; max: number }>> = Object.freeze({
  healthWatchDays: { min: 1, max: 365 },
  healthRecentHours: { min: 1, max: 168 },
  healthSlowIos: { min: 1, max: 1_000_000 },
  healthLostBlocks: { min: 1, max: 1_000_000 },
  healthSpareDegradedPercent: { min: 1, max: 100 },
  healthSpareCriticalPercent: { min: 1, max: 100 },
  healthForecastDays: { min: 1, max: 90 },
  healthForecastMinBlocks: { min: 1, max: 1_000_000 },
  healthCriticalForecastDays: { min: 1, max: 365 },
  healthAccelerationFactor: { min: 2, max: 100 },
  healthAccelerationMinBlocks: { min: 1, max: 1_000_000 },
  healthClusterDistanceBlocks: { min: 1, max: 1_048_576 },
  healthClusterDays: { min: 1, max: 90 },
  healthClusterGrowthBlocks: { min: 1, max: 1_000_000 },
  healthOutageFailSeconds: { min: 1, max: 86_400 },
  healthHalfLifeDays: { min: 1, max: 365 },
});

/** The command line's and the config file's snake_case names (like the FaultPolicy and scan keys'). */
export const HEALTH_CLI_KEY_NAMES: Readonly<Record<HealthSettingKey, string>> = Object.freeze({
  healthWatchDays: 'health_watch_days',
  healthRecentHours: 'health_recent_hours',
  healthSlowIos: 'health_slow_ios',
  healthLostBlocks: 'health_lost_blocks',
  healthSpareDegradedPercent: 'health_spare_degraded_percent',
  healthSpareCriticalPercent: 'health_spare_critical_percent',
  healthForecastDays: 'health_forecast_days',
  healthForecastMinBlocks: 'health_forecast_min_blocks',
  healthCriticalForecastDays: 'health_critical_forecast_days',
  healthAccelerationFactor: 'health_acceleration_factor',
  healthAccelerationMinBlocks: 'health_acceleration_min_blocks',
  healthClusterDistanceBlocks: 'health_cluster_distance_blocks',
  healthClusterDays: 'health_cluster_days',
  healthClusterGrowthBlocks: 'health_cluster_growth_blocks',
  healthOutageFailSeconds: 'health_outage_fail_seconds',
  healthHalfLifeDays: 'health_half_life_days',
});

const limited = (key: HealthSettingKey) =>
  z
    .number({ error: 'must be a whole number' })
    .int('must be a whole number')
    .min(HEALTH_SETTING_LIMITS[key].min, `must be at least ${HEALTH_SETTING_LIMITS[key].min}`)
    .max(HEALTH_SETTING_LIMITS[key].max, `must be at most ${HEALTH_SETTING_LIMITS[key].max}`)
    .optional();

/** The settings as a config section holds them: every key optional, no unknown key. */
export const healthSettingsSchema = z.strictObject(
  {
    healthWatchDays: limited('healthWatchDays'),
    healthRecentHours: limited('healthRecentHours'),
    healthSlowIos: limited('healthSlowIos'),
    healthLostBlocks: limited('healthLostBlocks'),
    healthSpareDegradedPercent: limited('healthSpareDegradedPercent'),
    healthSpareCriticalPercent: limited('healthSpareCriticalPercent'),
    healthForecastDays: limited('healthForecastDays'),
    healthForecastMinBlocks: limited('healthForecastMinBlocks'),
    healthCriticalForecastDays: limited('healthCriticalForecastDays'),
    healthAccelerationFactor: limited('healthAccelerationFactor'),
    healthAccelerationMinBlocks: limited('healthAccelerationMinBlocks'),
    healthClusterDistanceBlocks: limited('healthClusterDistanceBlocks'),
    healthClusterDays: limited('healthClusterDays'),
    healthClusterGrowthBlocks: limited('healthClusterGrowthBlocks'),
    healthOutageFailSeconds: limited('healthOutageFailSeconds'),
    healthHalfLifeDays: limited('healthHalfLifeDays'),
  },
  { error: 'must be an object' },
);
export type PartialHealthSettings = z.output<typeof healthSettingsSchema>;

/** The settings in force: each key from the first layer that has it (highest first), else its default. */
export function resolveHealthSettings(...layers: readonly PartialHealthSettings[]): HealthSettings {
  const out = { ...DEFAULT_HEALTH_SETTINGS };
  for (const k of HEALTH_SETTING_KEYS) {
    for (const l of layers) {
      const v = l[k];
      if (v !== undefined) {
        out[k] = v;
        break;
      }
    }
  }
  return out;
}

/**
 * Pairs of settings whose order the rules need: [lower, upper], the lower not above the upper. A spare
 * `degraded` share above the `critical` one would make the disk go from healthy to critical, never degraded
 * for its spare (equal: critical at that share, which a user may want).
 */
export const HEALTH_ORDERED_PAIRS: readonly (readonly [HealthSettingKey, HealthSettingKey])[] = [['healthSpareDegradedPercent', 'healthSpareCriticalPercent']];

/** The first ordered pair `s` breaks, as a one-line problem naming both keys and their values; null when none. */
export function healthOrderProblem(s: HealthSettings): string | null {
  for (const [lo, hi] of HEALTH_ORDERED_PAIRS) {
    if (s[lo] > s[hi]) return `${HEALTH_CLI_KEY_NAMES[lo]} (${s[lo]}) must not be above ${HEALTH_CLI_KEY_NAMES[hi]} (${s[hi]})`;
  }
  return null;
}

/** A value of `key` typed on the command line (`config set health_watch_days 30`); E_USAGE when it is not one. */
export function parseHealthSetting(key: HealthSettingKey, text: string): number {
  const { min, max } = HEALTH_SETTING_LIMITS[key];
  const n = parseWholeNumber(text, 10);
  if (n === null || n < min || n > max) {
    throw new DmrError('E_USAGE', `${HEALTH_CLI_KEY_NAMES[key]} must be a whole number from ${min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return n;
}
