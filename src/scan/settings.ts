// The scanner's settings: names, limits, defaults and a zod schema, ready to join the config file's schema
// (src/config/schema.ts) when the scanner is wired. Not in the config file yet: there every key is a
// FaultPolicy key, which also makes it an `add` flag, a `config get/set` key and a field of the registry
// entry's policy, and the scanner's keys need a decision on each of those (see docs/DESIGN.md, "Background scan").
import * as z from 'zod';
import { DmrError } from '../errors.js';
import { parseWholeNumber } from '../numbers.js';

export interface ScanSettings {
  /** The rate while users are idle, MiB/s (the ceiling; `scan start --rate` overrides it for one pass). */
  scanRateMib: number;
  /** The rate users' I/O cannot push the scan below, MiB/s (the floor; md's default speed_limit_min is 1000 KiB/s). Lowered to the ceiling if above it. */
  scanMinRateMib: number;
  /** Days from the end of a pass to the start of the next; 0: no scheduled passes. */
  scanIntervalDays: number;
  /** A read slower than this, in ms, is slow (counted, and the chunk re-read block by block); MHDD/Victoria count >= 500 ms as bad. */
  slowIoMs: number;
  /** Times a block must be slow before it is relocated with its data. */
  slowThreshold: number;
}

export type ScanSettingKey = keyof ScanSettings;

export const SCAN_SETTING_KEYS = ['scanRateMib', 'scanMinRateMib', 'scanIntervalDays', 'slowIoMs', 'slowThreshold'] as const satisfies readonly ScanSettingKey[];

/** Issue 13's defaults. */
export const DEFAULT_SCAN_SETTINGS: Readonly<ScanSettings> = Object.freeze({
  scanRateMib: 64,
  scanMinRateMib: 1,
  scanIntervalDays: 30,
  slowIoMs: 500,
  slowThreshold: 2,
});

/** Inclusive bounds. The rates' 1 TiB/s stands for "no limit" (the bench's unlimited scan). */
export const SCAN_SETTING_LIMITS: Readonly<Record<ScanSettingKey, { min: number; max: number }>> = Object.freeze({
  scanRateMib: { min: 1, max: 1048576 },
  scanMinRateMib: { min: 1, max: 1048576 },
  scanIntervalDays: { min: 0, max: 3650 },
  slowIoMs: { min: 1, max: 600000 },
  slowThreshold: { min: 1, max: 65535 },
});

/** The command line's and the config file's snake_case names (like the FaultPolicy keys'). */
export const SCAN_CLI_KEY_NAMES: Readonly<Record<ScanSettingKey, string>> = Object.freeze({
  scanRateMib: 'scan_rate_mib',
  scanMinRateMib: 'scan_min_rate_mib',
  scanIntervalDays: 'scan_interval_days',
  slowIoMs: 'slow_io_ms',
  slowThreshold: 'slow_threshold',
});

const limited = (key: ScanSettingKey) =>
  z
    .number({ error: 'must be a whole number' })
    .int('must be a whole number')
    .min(SCAN_SETTING_LIMITS[key].min, `must be at least ${SCAN_SETTING_LIMITS[key].min}`)
    .max(SCAN_SETTING_LIMITS[key].max, `must be at most ${SCAN_SETTING_LIMITS[key].max}`);

/** The settings as a config section holds them: every key optional, no unknown key. */
export const scanSettingsSchema = z.strictObject(
  {
    scanRateMib: limited('scanRateMib').optional(),
    scanMinRateMib: limited('scanMinRateMib').optional(),
    scanIntervalDays: limited('scanIntervalDays').optional(),
    slowIoMs: limited('slowIoMs').optional(),
    slowThreshold: limited('slowThreshold').optional(),
  },
  { error: 'must be an object' },
);
export type PartialScanSettings = z.output<typeof scanSettingsSchema>;

/** The settings in force: each key from the first layer that has it (highest first), else its default. */
export function resolveScanSettings(...layers: readonly PartialScanSettings[]): ScanSettings {
  const pick = (k: ScanSettingKey): number => {
    for (const l of layers) {
      const v = l[k];
      if (v !== undefined) return v;
    }
    return DEFAULT_SCAN_SETTINGS[k];
  };
  return {
    scanRateMib: pick('scanRateMib'),
    scanMinRateMib: pick('scanMinRateMib'),
    scanIntervalDays: pick('scanIntervalDays'),
    slowIoMs: pick('slowIoMs'),
    slowThreshold: pick('slowThreshold'),
  };
}

/** The highest rate a pass may be given (`scan start --rate`), MiB/s (scan_rate_mib's limit: 1 TiB/s stands for "no limit"). */
export const MAX_SCAN_RATE_MIB = SCAN_SETTING_LIMITS.scanRateMib.max;

/**
 * The lowest rate a pass may be given, MiB/s (10 KiB/s: a 1 MiB scan read every 100 s). Below it a pass
 * would not advance in any time that matters (1e-300 MiB/s credits the bucket nothing, ever).
 */
export const MIN_SCAN_RATE_MIB = 0.01;

/** Whether `mib` is a rate a pass may be given: a number from MIN_SCAN_RATE_MIB to MAX_SCAN_RATE_MIB. */
export function isScanRate(mib: number): boolean {
  return Number.isFinite(mib) && mib >= MIN_SCAN_RATE_MIB && mib <= MAX_SCAN_RATE_MIB;
}

/** What a pass's rate must be (the refusals' words). */
export const SCAN_RATE_RULE = `a number of MiB/s from ${MIN_SCAN_RATE_MIB} to ${MAX_SCAN_RATE_MIB}`;

/** The refusal of a rate (E_USAGE), naming it. */
export function badRate(mib: unknown): DmrError {
  return new DmrError('E_USAGE', `scan rate must be ${SCAN_RATE_RULE}, got ${typeof mib === 'string' ? JSON.stringify(mib) : String(mib)}`);
}

/** A value of `key` typed on the command line (`scan start --rate 32`, `config set scan_rate_mib 32`); E_USAGE when it is not one. */
export function parseScanSetting(key: ScanSettingKey, text: string): number {
  const { min, max } = SCAN_SETTING_LIMITS[key];
  const n = parseWholeNumber(text, 10);
  if (n === null || n < min || n > max) {
    throw new DmrError('E_USAGE', `${SCAN_CLI_KEY_NAMES[key]} must be a whole number from ${min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return n;
}
