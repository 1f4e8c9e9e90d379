// The health series (src/health/series.ts) and its file (series-file.ts): what is recorded where, the
// bounds after a year and more of hourly data, the round trip through the file, and every way a file can be
// unusable (a typed one-line error, the file left as it was).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DmrError } from '../../src/errors.js';
import { assessHealth } from '../../src/health/assess.js';
import { forecastOf } from '../../src/health/forecast.js';
import {
  CLOCK_BACK_MS,
  DAILY_KEEP_DAYS,
  DAY_MS,
  HealthSeries,
  HOUR_MS,
  HOURLY_KEEP_DAYS,
  MAX_BAD_BLOCK_POSITIONS,
  MAX_DAILY_BUCKETS,
  MAX_HOURLY_BUCKETS,
  type HealthEvent,
} from '../../src/health/series.js';
import {
  decodeHealthFile,
  encodeHealthFile,
  healthFilePath,
  HealthRecordError,
  loadHealth,
  MAX_HEALTH_FILE_BYTES,
  saveHealth,
  type HealthRecordProblem,
} from '../../src/health/series-file.js';
import { DEFAULT_HEALTH_SETTINGS } from '../../src/health/settings.js';
import { crc32c } from '../../src/remap/crc32c.js';

const PAIR = '0b7e6c3a-5d1f-4e2a-9c8b-7a6f5e4d3c2b';
const OTHER = '11111111-2222-4333-8444-555555555555';
const T0 = Date.UTC(2026, 0, 1);
const MIN_MS = 60_000;

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-health-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** One of each event, `hours` hours from T0, hour by hour. */
function everyEventHourly(s: HealthSeries, fromHour: number, hours: number): void {
  for (let h = fromHour; h < fromHour + hours; h++) {
    const at = T0 + h * HOUR_MS + 10 * MIN_MS;
    const evs: HealthEvent[] = [
      { type: 'bad_blocks', origin: (['auto', 'scan', 'manual'] as const)[h % 3]!, blocks: [h * 7919, h * 7919 + 3] },
      { type: 'pending', blocks: [h * 7919] },
      { type: 'read_error', count: 3 },
      { type: 'write_error' },
      { type: 'recovered_read', count: 2 },
      { type: 'slow_io', count: 5 },
      { type: 'spare_error', op: 'read' },
      { type: 'spare_error', op: 'write' },
      { type: 'outage_began' },
    ];
    for (const ev of evs) s.record(ev, at);
    s.record({ type: 'outage_ended' }, at + 45_000);
    s.record({ type: 'spare', used: 2 * h, slots: 1_000_000, lost: h % 5 }, at + 50_000);
  }
}

function sample(): HealthSeries {
  const s = HealthSeries.create(T0);
  everyEventHourly(s, 0, 20 * 24);
  s.record({ type: 'outage_began' }, T0 + 20 * DAY_MS + 5 * MIN_MS);
  return s;
}

describe('health series', () => {
  it('counts each event in its hour, by origin', () => {
    const s = HealthSeries.create(T0);
    s.record({ type: 'bad_blocks', origin: 'scan', blocks: [1, 2, 3] }, T0 + 10 * MIN_MS);
    s.record({ type: 'bad_blocks', origin: 'auto', blocks: [9] }, T0 + 70 * MIN_MS);
    s.record({ type: 'read_error', count: 4 }, T0 + 71 * MIN_MS);
    s.record({ type: 'spare', used: 4, slots: 100, lost: 1 }, T0 + 72 * MIN_MS);
    const b = s.buckets();
    expect(b.map((x) => [x.start, x.ms])).toEqual([
      [T0, HOUR_MS],
      [T0 + HOUR_MS, HOUR_MS],
    ]);
    expect(b[0]!.counts.badScan).toBe(3);
    expect(b[1]!.counts).toMatchObject({ badAuto: 1, readErrors: 4, badScan: 0 });
    expect(b[1]!.spare).toEqual({ used: 4, slots: 100, lost: 1 });
    expect(s.positions.map((p) => [p.block, p.origin])).toEqual([
      [1, 'scan'],
      [2, 'scan'],
      [3, 'scan'],
      [9, 'auto'],
    ]);
  });

  it("splits an outage's seconds over the hours it covered", () => {
    const s = HealthSeries.create(T0);
    s.record({ type: 'outage_began' }, T0 + 50 * MIN_MS);
    s.record({ type: 'outage_began' }, T0 + 55 * MIN_MS); // already in one: not a second outage
    expect(s.outageSince).toBe(T0 + 50 * MIN_MS);
    s.record({ type: 'outage_ended' }, T0 + 2 * HOUR_MS + 30_000);
    expect(s.outageSince).toBeNull();
    expect(s.buckets().map((b) => [b.counts.outages, b.counts.outageSeconds])).toEqual([
      [1, 600],
      [0, 3600],
      [0, 30],
    ]);
  });

  it('refuses an event that does not fit its schema (E_INTERNAL), recording nothing', () => {
    const s = HealthSeries.create(T0);
    for (const ev of [{ type: 'bad_blocks', origin: 'disk', blocks: [1] }, { type: 'read_error', count: 0 }, { type: 'pending', blocks: [] }, { type: 'spare', used: -1, slots: 1, lost: 0 }, { type: 'nope' }]) {
      expect(() => s.record(ev as HealthEvent, T0), JSON.stringify(ev)).toThrow(DmrError);
    }
    expect(s.buckets()).toEqual([]);
  });

  it('merges hours older than 14 days into days, and stays bounded after two years of hourly data', () => {
    const s = HealthSeries.create(T0);
    everyEventHourly(s, 0, 365 * 24);
    const year = s.toData();
    expect(year.hourly.length).toBeLessThanOrEqual(MAX_HOURLY_BUCKETS);
    expect(year.hourly.length).toBeGreaterThanOrEqual(HOURLY_KEEP_DAYS * 24);
    expect(year.daily.length).toBe(365 - HOURLY_KEEP_DAYS - 1); // the latest day and the 14 before it are hourly
    expect(year.positions.length).toBe(MAX_BAD_BLOCK_POSITIONS);
    // Nothing is lost in the merge: the daily buckets hold 24 hours' counts each.
    expect(year.daily[0]!.c.readErrors).toBe(24 * 3);
    expect(year.daily[0]!.c.outageSeconds).toBe(24 * 45);
    const yearBytes = encodeHealthFile(PAIR, s).length;
    everyEventHourly(s, 365 * 24, 365 * 24);
    const two = s.toData();
    expect(two.hourly.length).toBeLessThanOrEqual(MAX_HOURLY_BUCKETS);
    expect(two.daily.length).toBe(DAILY_KEEP_DAYS - HOURLY_KEEP_DAYS - 1);
    expect(two.daily.length).toBeLessThanOrEqual(MAX_DAILY_BUCKETS);
    expect(two.positions.length).toBe(MAX_BAD_BLOCK_POSITIONS);
    const twoBytes = encodeHealthFile(PAIR, s).length;
    expect(twoBytes).toBeLessThan(MAX_HEALTH_FILE_BYTES / 4);
    expect(twoBytes).toBeLessThan(yearBytes * 1.2);
    // The series loads back from its largest form.
    expect(decodeHealthFile(encodeHealthFile(PAIR, s), PAIR, 'f').toData()).toEqual(two);
  });

  it('history: day by day, hours folded into their day, the last spare sample of each', () => {
    const s = HealthSeries.create(T0);
    everyEventHourly(s, 0, 20 * 24);
    const h = s.history();
    expect(h.map((d) => d.day)).toEqual(Array.from({ length: 20 }, (_, i) => T0 + i * DAY_MS));
    for (const [i, d] of h.entries()) {
      expect(d.counts.readErrors, `day ${i}`).toBe(24 * 3);
      expect(d.counts.badAuto + d.counts.badScan + d.counts.badManual).toBe(48);
      expect(d.spare).toEqual({ used: 2 * (i * 24 + 23), slots: 1_000_000, lost: (i * 24 + 23) % 5 });
    }
  });

  it('the oldest day kept is DAILY_KEEP_DAYS - 1 days before the latest', () => {
    const s = HealthSeries.create(T0);
    s.record({ type: 'write_error' }, T0);
    s.record({ type: 'write_error' }, T0 + (DAILY_KEEP_DAYS - 1) * DAY_MS);
    expect(s.toData().daily.map((b) => b.t)).toEqual([T0]);
    s.record({ type: 'write_error' }, T0 + DAILY_KEEP_DAYS * DAY_MS);
    expect(s.toData().daily).toEqual([]);
  });
});

describe('health series: a clock that was ahead', () => {
  it('after one event stamped two years ahead (bad RTC, then NTP), later events are still counted, and the series still saves and loads', () => {
    const t = T0 + 12 * HOUR_MS;
    const s = HealthSeries.create(t);
    s.record({ type: 'spare', used: 1, slots: 1000, lost: 0 }, t + 2 * 365 * DAY_MS); // the wrong clock, for one sample
    s.record({ type: 'bad_blocks', origin: 'auto', blocks: [7] }, t + MIN_MS); // the clock is right again
    s.record({ type: 'bad_blocks', origin: 'auto', blocks: [8] }, t + 2 * MIN_MS);
    expect(s.sum(['badAuto'], 0, Number.MAX_SAFE_INTEGER)).toBe(2);
    expect(s.latest).toBe(t + 2 * MIN_MS);
    // The misdated sample is kept, moved to the first right time known.
    expect(s.spare).toEqual({ used: 1, slots: 1000, lost: 0 });
    expect(s.buckets().every((b) => b.start <= t + 2 * MIN_MS)).toBe(true);
    saveHealth(dir, PAIR, s);
    expect(loadHealth(dir, PAIR)!.toData()).toEqual(s.toData());
  });

  it('a series begun and kept for weeks under a clock a year ahead: rewound, nothing dropped', () => {
    const wrong = T0 + 365 * DAY_MS;
    const s = HealthSeries.create(wrong);
    for (let d = 0; d < 20; d++) s.record({ type: 'read_error' }, wrong + d * DAY_MS);
    s.record({ type: 'outage_began' }, wrong + 20 * DAY_MS);
    const right = T0 + 20 * DAY_MS;
    s.record({ type: 'write_error' }, right);
    // Moved back by the step (a year): the series began 20 days ago, the outage began now.
    expect([s.since, s.latest, s.outageSince]).toEqual([T0, right, right]);
    expect(s.sum(['readErrors'], 0, Number.MAX_SAFE_INTEGER)).toBe(20);
    expect(s.buckets().filter((b) => b.counts.readErrors > 0).map((b) => b.start)).toEqual(Array.from({ length: 20 }, (_, d) => T0 + d * DAY_MS));
    expect(s.sum(['writeErrors', 'outages'], 0, Number.MAX_SAFE_INTEGER)).toBe(2);
    saveHealth(dir, PAIR, s);
    expect(loadHealth(dir, PAIR)!.toData()).toEqual(s.toData());
  });

  it('after a jump of 20 days ahead and back, the days that became days and are within the hourly range again become hours', () => {
    const s = HealthSeries.create(T0);
    for (let d = 0; d < 30; d++) s.record({ type: 'read_error' }, T0 + d * DAY_MS + 5 * HOUR_MS);
    s.record({ type: 'slow_io' }, T0 + 50 * DAY_MS); // every hour before T0 + 36 days is now merged into its day
    expect(s.toData().hourly.length).toBe(1);
    const right = T0 + 30 * DAY_MS;
    s.record({ type: 'write_error' }, right);
    const d = s.toData();
    // Hourly from T0 + 16 days (14 days before the right time): days 16..29 each as the first hour of its day.
    expect(d.daily.map((b) => b.t)).toEqual(Array.from({ length: 16 }, (_, i) => T0 + i * DAY_MS));
    expect(d.hourly.map((b) => b.t)).toEqual([...Array.from({ length: 14 }, (_, i) => T0 + (16 + i) * DAY_MS), right]);
    expect(s.sum(['readErrors'], 0, Number.MAX_SAFE_INTEGER)).toBe(30);
    expect(d.hourly.at(-1)!.c).toEqual({ slowIos: 1, writeErrors: 1 });
    saveHealth(dir, PAIR, s);
    expect(loadHealth(dir, PAIR)!.toData()).toEqual(d);
  });

  it('a step back within CLOCK_BACK_MS (an hour) is kept as it is (events recorded out of order)', () => {
    expect(CLOCK_BACK_MS).toBe(HOUR_MS);
    const s = HealthSeries.create(T0);
    s.record({ type: 'read_error' }, T0 + 10 * DAY_MS + 30 * MIN_MS);
    s.record({ type: 'read_error' }, T0 + 10 * DAY_MS - 20 * MIN_MS);
    expect(s.latest).toBe(T0 + 10 * DAY_MS + 30 * MIN_MS);
    expect(s.buckets().map((b) => b.start)).toEqual([T0 + 10 * DAY_MS - HOUR_MS, T0 + 10 * DAY_MS]);
  });

  // A steady disk: one new bad block a day for 40 days; during days 30-39 the clock was `ahead`, on day 40
  // it is set right (the next event rewinds the series).
  function steadyDiskWithClockAhead(ahead: number): { s: HealthSeries; now: number } {
    const s = HealthSeries.create(T0);
    let used = 0;
    for (let d = 0; d < 40; d++) {
      const stamp = T0 + d * DAY_MS + 12 * HOUR_MS + (d >= 30 ? ahead : 0);
      s.record({ type: 'bad_blocks', origin: 'auto', blocks: [d * 1000] }, stamp);
      s.record({ type: 'spare', used: ++used, slots: 100, lost: 0 }, stamp);
    }
    const now = T0 + 40 * DAY_MS + HOUR_MS;
    s.record({ type: 'spare', used, slots: 100, lost: 0 }, now);
    return { s, now };
  }

  it('a clock 60 days ahead and set back: what was stamped ahead keeps its spacing (a steady disk of a block a day neither accelerates nor is critical), ending now', () => {
    const right = steadyDiskWithClockAhead(0);
    const { s, now } = steadyDiskWithClockAhead(60 * DAY_MS);
    expect(s.latest).toBe(now);
    // The ten blocks stamped ahead are a day apart, the last in the hour of now.
    const hours = s.buckets().filter((b) => b.counts.badAuto > 0).map((b) => b.start).slice(-10);
    expect(hours.map((h, i) => (i === 0 ? DAY_MS : h - hours[i - 1]!))).toEqual(Array(10).fill(DAY_MS));
    expect(hours.at(-1)).toBe(Math.floor(now / HOUR_MS) * HOUR_MS);
    expect(s.positions.slice(-10).map((p) => p.at)).toEqual(Array.from({ length: 10 }, (_, i) => now - (9 - i) * DAY_MS));
    for (const { s: series, now: at } of [right, { s, now }]) {
      const f = forecastOf(series, DEFAULT_HEALTH_SETTINGS, at);
      expect([f.acceleration, f.ratePerDay < 2, assessHealth(series, DEFAULT_HEALTH_SETTINGS, at).state === 'critical']).toEqual([false, true, false]);
    }
  });

  it('blocks stamped while the clock was 10 days ahead (less than the hourly range) count once it is set right: 30 new bad blocks are in the forecast window, not `healthy`', () => {
    const s = HealthSeries.create(T0);
    s.record({ type: 'spare', used: 0, slots: 1000, lost: 0 }, T0 + HOUR_MS);
    const real = T0 + 30 * DAY_MS;
    for (let i = 0; i < 30; i++) {
      const stamp = real + 10 * DAY_MS + i * MIN_MS; // the clock 10 days ahead
      s.record({ type: 'bad_blocks', origin: 'auto', blocks: [i * 1000] }, stamp);
      s.record({ type: 'spare', used: i + 1, slots: 1000, lost: 0 }, stamp);
    }
    const now = real + DAY_MS; // the clock set right a day later
    s.record({ type: 'spare', used: 30, slots: 1000, lost: 0 }, now);
    expect(s.latest).toBe(now);
    expect(s.buckets().every((b) => b.start <= now)).toBe(true);
    expect(forecastOf(s, DEFAULT_HEALTH_SETTINGS, now).windowBlocks).toBe(30);
    expect(assessHealth(s, DEFAULT_HEALTH_SETTINGS, now).state).not.toBe('healthy');
  });

  it('backfill records a past time without taking it for the clock', () => {
    const s = HealthSeries.create(T0);
    s.record({ type: 'read_error' }, T0 + 30 * DAY_MS);
    s.backfill({ type: 'bad_blocks', origin: 'scan', blocks: [5] }, T0 + DAY_MS);
    expect(s.latest).toBe(T0 + 30 * DAY_MS);
    expect(s.sum(['badScan'], T0 + DAY_MS, T0 + 2 * DAY_MS)).toBe(1);
  });
});

describe('health file', () => {
  it('round trip: saved and loaded back, the series is the same and judged the same', () => {
    const s = sample();
    saveHealth(dir, PAIR, s);
    expect(fs.statSync(healthFilePath(dir, PAIR)).mode & 0o777).toBe(0o600);
    const back = loadHealth(dir, PAIR);
    expect(back).not.toBeNull();
    expect(back!.toData()).toEqual(s.toData());
    expect(back!.since).toBe(T0);
    expect(back!.outageSince).toBe(s.outageSince);
    const now = T0 + 20 * DAY_MS + 10 * MIN_MS;
    expect(assessHealth(back!, DEFAULT_HEALTH_SETTINGS, now)).toEqual(assessHealth(s, DEFAULT_HEALTH_SETTINGS, now));
    // And it goes on the same way: the outage under way ends in both.
    s.record({ type: 'outage_ended' }, now + HOUR_MS);
    back!.record({ type: 'outage_ended' }, now + HOUR_MS);
    expect(back!.toData()).toEqual(s.toData());
  });

  it('no file: null (a new device)', () => {
    expect(loadHealth(dir, PAIR)).toBeNull();
  });

  const problem = (f: () => unknown): HealthRecordError => {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(HealthRecordError);
      const err = e as HealthRecordError;
      expect(err.code).toBe('E_HEALTH_RECORD');
      expect(err.exitCode).toBe(1);
      expect(err.message).not.toContain('\n');
      return err;
    }
    throw new Error('no error');
  };

  /** A file whose JSON body is `body`, with a correct header (checksum and all). */
  const withBody = (body: string, version = 1): Buffer => {
    const b = Buffer.from(body, 'utf8');
    return Buffer.concat([Buffer.from(`DMRHEALTH ${version} ${crc32c(b).toString(16).padStart(8, '0')}\n`), b]);
  };

  it('a corrupt, newer or foreign file is a typed one-line error, and stays as it was', () => {
    const good = encodeHealthFile(PAIR, sample());
    const data = JSON.parse(good.subarray(good.indexOf(0x0a) + 1).toString('utf8')) as { series: { hourly: { t: number }[] } };
    const misaligned = structuredClone(data);
    misaligned.series.hourly[0]!.t += 1;
    const flipped = Buffer.from(good);
    const at = flipped.length - 20;
    flipped[at] = flipped[at]! ^ 0x01;
    const cases: [string, Buffer, HealthRecordProblem, string][] = [
      ['empty', Buffer.alloc(0), 'corrupt', 'no header line'],
      ['garbage', Buffer.from('hello world\n{}'), 'corrupt', 'not a health file'],
      ['a flipped bit', flipped, 'corrupt', 'checksum mismatch'],
      ['truncated', good.subarray(0, good.length - 100), 'corrupt', 'checksum mismatch'],
      ['a newer version', withBody('{"anything":"new"}', 2), 'version', 'is format version 2, newer than this program reads (1)'],
      ['version 0', withBody('{}', 0), 'corrupt', 'format version 0 was never written'],
      ['not JSON', withBody('{"pairId":'), 'corrupt', 'not JSON'],
      ['a body off its schema', withBody('{"pairId":"x","series":{}}'), 'corrupt', 'pairId: is not a UUID'],
      ['a bucket off its hour', withBody(JSON.stringify(misaligned)), 'corrupt', 'does not start on its hour'],
      ['another pair', encodeHealthFile(OTHER, sample()), 'device', `belongs to main/spare pair ${OTHER}, not ${PAIR}`],
    ];
    const file = healthFilePath(dir, PAIR);
    for (const [what, bytes, kind, words] of cases) {
      fs.writeFileSync(file, bytes);
      const err = problem(() => loadHealth(dir, PAIR));
      expect([what, err.problem]).toEqual([what, kind]);
      expect(err.message, what).toContain(words);
      expect(err.message, what).toContain(file);
      expect(fs.readFileSync(file).equals(bytes), what).toBe(true);
    }
  });

  it('a file larger than any health file is refused unread', () => {
    const file = healthFilePath(dir, PAIR);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, MAX_HEALTH_FILE_BYTES + 1);
    expect(problem(() => loadHealth(dir, PAIR)).message).toContain('more than a health file can be');
  });

  it('an unreadable path is E_STATE', () => {
    fs.mkdirSync(healthFilePath(dir, PAIR));
    let err: unknown;
    try {
      loadHealth(dir, PAIR);
    } catch (e) {
      err = e;
    }
    expect((err as DmrError).code).toBe('E_STATE');
  });
});
