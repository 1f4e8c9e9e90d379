// The health model's settings (src/health/settings.ts): defaults, limits, precedence, command-line values.
import { describe, expect, it } from 'vitest';
import { DmrError } from '../../src/errors.js';
import {
  DEFAULT_HEALTH_SETTINGS,
  HEALTH_CLI_KEY_NAMES,
  HEALTH_SETTING_KEYS,
  HEALTH_SETTING_LIMITS,
  healthSettingsSchema,
  parseHealthSetting,
  resolveHealthSettings,
} from '../../src/health/settings.js';

describe('health settings', () => {
  it("defaults to issue 14's numbers where it gives them", () => {
    expect(resolveHealthSettings()).toEqual(DEFAULT_HEALTH_SETTINGS);
    expect(DEFAULT_HEALTH_SETTINGS).toMatchObject({
      healthSpareDegradedPercent: 50,
      healthSpareCriticalPercent: 90,
      healthCriticalForecastDays: 7,
      healthForecastMinBlocks: 10,
      healthAccelerationFactor: 2,
    });
  });

  it('every key has a default within its limits, a snake_case name and a schema entry', () => {
    expect(Object.keys(DEFAULT_HEALTH_SETTINGS).sort()).toEqual([...HEALTH_SETTING_KEYS].sort());
    for (const k of HEALTH_SETTING_KEYS) {
      const { min, max } = HEALTH_SETTING_LIMITS[k];
      expect(DEFAULT_HEALTH_SETTINGS[k], k).toBeGreaterThanOrEqual(min);
      expect(DEFAULT_HEALTH_SETTINGS[k], k).toBeLessThanOrEqual(max);
      expect(HEALTH_CLI_KEY_NAMES[k]).toMatch(/^health_[a-z_]+$/);
      expect(healthSettingsSchema.safeParse({ [k]: min }).success, k).toBe(true);
      expect(healthSettingsSchema.safeParse({ [k]: max + 1 }).error?.issues[0]?.message, k).toBe(`must be at most ${max}`);
      expect(healthSettingsSchema.safeParse({ [k]: min - 1 }).error?.issues[0]?.message, k).toBe(`must be at least ${min}`);
    }
    expect(healthSettingsSchema.safeParse({ healthWatchDays: 1.5 }).error?.issues[0]?.message).toBe('must be a whole number');
    expect(healthSettingsSchema.safeParse({ healthWatch: 4 }).success).toBe(false);
  });

  it('takes each key from the highest layer that has it', () => {
    expect(resolveHealthSettings({ healthWatchDays: 30 }, { healthWatchDays: 10, healthSlowIos: 5 }, {})).toEqual({
      ...DEFAULT_HEALTH_SETTINGS,
      healthWatchDays: 30,
      healthSlowIos: 5,
    });
  });

  it('parses command-line values, refusing the rest with E_USAGE', () => {
    expect(parseHealthSetting('healthWatchDays', '30')).toBe(30);
    for (const text of ['0', '366', '1.5', 'x', '', ' 3']) {
      let err: unknown;
      try {
        parseHealthSetting('healthWatchDays', text);
      } catch (e) {
        err = e;
      }
      expect((err as DmrError).code, text).toBe('E_USAGE');
    }
    expect(() => parseHealthSetting('healthWatchDays', '0')).toThrow('health_watch_days must be a whole number from 1 to 365, got "0"');
  });
});
