// The scanner's settings (src/scan/settings.ts): defaults, limits, precedence, command-line values.
import { describe, expect, it } from 'vitest';
import { DmrError } from '../../src/errors.js';
import { DEFAULT_SCAN_SETTINGS, parseScanSetting, resolveScanSettings, scanSettingsSchema } from '../../src/scan/settings.js';

describe('scan settings', () => {
  it('defaults to issue 13 values', () => {
    expect(resolveScanSettings()).toEqual({ scanRateMib: 64, scanMinRateMib: 1, scanIntervalDays: 30, slowIoMs: 500, slowThreshold: 2 });
    expect(resolveScanSettings({})).toEqual(DEFAULT_SCAN_SETTINGS);
  });

  it('takes each key from the highest layer that has it', () => {
    const flags = { scanRateMib: 8 };
    const device = { scanRateMib: 16, slowIoMs: 200 };
    const global = { slowIoMs: 300, scanIntervalDays: 0 };
    expect(resolveScanSettings(flags, device, global)).toEqual({
      scanRateMib: 8,
      scanMinRateMib: 1,
      scanIntervalDays: 0,
      slowIoMs: 200,
      slowThreshold: 2,
    });
  });

  it('the schema takes whole numbers within the limits and refuses the rest, and unknown keys', () => {
    expect(scanSettingsSchema.parse({ scanRateMib: 1048576, scanIntervalDays: 0 })).toEqual({ scanRateMib: 1048576, scanIntervalDays: 0 });
    const bad: [unknown, string][] = [
      [{ scanRateMib: 0 }, 'must be at least 1'],
      [{ scanRateMib: 2.5 }, 'must be a whole number'],
      [{ scanMinRateMib: '4' }, 'must be a whole number'],
      [{ scanIntervalDays: -1 }, 'must be at least 0'],
      [{ slowIoMs: 600001 }, 'must be at most 600000'],
      [{ slowThreshold: 0 }, 'must be at least 1'],
    ];
    for (const [value, message] of bad) {
      const r = scanSettingsSchema.safeParse(value);
      expect(r.success, JSON.stringify(value)).toBe(false);
      expect(r.error?.issues[0]?.message).toBe(message);
    }
    expect(scanSettingsSchema.safeParse({ scanRate: 4 }).success).toBe(false);
  });

  it('parses command-line values, refusing what is not a whole number in range with E_USAGE', () => {
    expect(parseScanSetting('scanRateMib', '32')).toBe(32);
    expect(parseScanSetting('scanIntervalDays', '0')).toBe(0);
    for (const text of ['0', '-4', '1.5', 'abc', '', ' 4', '1e3', '1048577']) {
      let err: unknown;
      try {
        parseScanSetting('scanRateMib', text);
      } catch (e) {
        err = e;
      }
      expect(err, text).toBeInstanceOf(DmrError);
      expect((err as DmrError).code).toBe('E_USAGE');
    }
    expect(() => parseScanSetting('scanRateMib', '0')).toThrow('scan_rate_mib must be a whole number from 1 to 1048576, got "0"');
  });
});
