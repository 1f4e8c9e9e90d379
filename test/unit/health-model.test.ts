// The health model (src/health/assess.ts, forecast.ts, clusters.ts): each state rule of issue 14, decay,
// the forecast on a synthetic linear trend, acceleration, clustering, the score's bands.
import { describe, expect, it } from 'vitest';
import { assessHealth, SCORE_BANDS, type HealthAssessment, type HealthSignal, type HealthState } from '../../src/health/assess.js';
import { forecastOf } from '../../src/health/forecast.js';
import { DAY_MS, HealthSeries, HOUR_MS, type HealthEvent } from '../../src/health/series.js';
import { DEFAULT_HEALTH_SETTINGS, resolveHealthSettings, type HealthSettings } from '../../src/health/settings.js';
import { poissonLower, poissonUpper } from '../../src/health/poisson.js';

const T0 = Date.UTC(2026, 0, 1);
const MIN_MS = 60_000;
const S = DEFAULT_HEALTH_SETTINGS;

/** A series begun at T0 (30 days before `now` unless told) with `events` recorded at their times. */
/** The series of `events`, recorded in time order as a daemon records them (a step back is a clock set back). */
function seriesWith(events: readonly [number, HealthEvent][], since = T0): HealthSeries {
  const s = HealthSeries.create(since);
  for (const [at, ev] of [...events].sort((a, b) => a[0] - b[0])) s.record(ev, at);
  return s;
}

const NOW = T0 + 30 * DAY_MS + 30 * MIN_MS;
const spare = (used: number, slots = 1000, lost = 0): HealthEvent => ({ type: 'spare', used, slots, lost });
const bad = (blocks: number[], origin: 'auto' | 'scan' | 'manual' = 'auto'): HealthEvent => ({ type: 'bad_blocks', origin, blocks });

function assess(s: HealthSeries, now = NOW, settings: HealthSettings = S): HealthAssessment {
  const a = assessHealth(s, settings, now);
  const [lo, hi] = SCORE_BANDS[a.state];
  expect(a.score, `score ${a.score} in the ${a.state} band`).toBeGreaterThanOrEqual(lo);
  expect(a.score).toBeLessThanOrEqual(hi);
  return a;
}

function reason(a: HealthAssessment, signal: HealthSignal) {
  return a.reasons.find((r) => r.signal === signal);
}

describe('health model: healthy', () => {
  it('a fresh device is healthy with score 100, no reasons and no forecast', () => {
    const a = assess(seriesWith([[T0, spare(0)]]));
    expect(a).toEqual({
      score: 100,
      state: 'healthy',
      reasons: [],
      action: 'No action needed.',
      forecast: { spareExhaustionSeconds: null, range: null, acceleration: false, ratePerDay: 0 },
    });
  });

  it('a steady disk stays healthy: a year of hourly samples, old remaps, a few slow reads a day', () => {
    const s = HealthSeries.create(T0);
    for (let h = 0; h < 365 * 24; h++) {
      const at = T0 + h * HOUR_MS + 17 * MIN_MS;
      s.record(spare(5), at);
      if (h % 8 === 0) s.record({ type: 'slow_io' }, at);
      if (h % (24 * 7) === 0) {
        const a = assess(s, at + MIN_MS);
        expect([a.state, a.forecast.spareExhaustionSeconds, a.forecast.acceleration], `hour ${h}`).toEqual(['healthy', null, false]);
        expect(a.score).toBeGreaterThanOrEqual(90);
      }
    }
  });
});

describe('health model: watch (the first remap, pending block or error)', () => {
  const one: [string, HealthEvent, HealthSignal][] = [
    ['a remap by auto-remap', bad([5000]), 'new_bad_blocks'],
    ['a bad block the scan found', bad([5000], 'scan'), 'new_bad_blocks'],
    ['a manual remap', bad([5000], 'manual'), 'new_bad_blocks'],
    ['a pending block', { type: 'pending', blocks: [5000] }, 'pending_blocks'],
    ['a read error on main', { type: 'read_error' }, 'read_errors'],
    ['a write error on main', { type: 'write_error' }, 'write_errors'],
    ['a read that only a retry recovered', { type: 'recovered_read' }, 'recovered_reads'],
  ];
  for (const [what, ev, signal] of one) {
    it(`${what} makes the disk watch`, () => {
      const a = assess(seriesWith([[NOW - 3 * HOUR_MS, ev]]));
      expect(a.state).toBe('watch');
      expect(reason(a, signal)?.state).toBe('watch');
      expect(a.action).toContain('backups are current');
    });
  }

  it('says the count of the last 24 h and of the day before', () => {
    const evs: [number, HealthEvent][] = [];
    for (let i = 0; i < 12; i++) evs.push([NOW - 2 * HOUR_MS, bad([1_000_000 * (i + 1)])]);
    for (let i = 0; i < 2; i++) evs.push([NOW - 30 * HOUR_MS, bad([1_000_000 * (i + 20)])]);
    const r = reason(assess(seriesWith(evs)), 'new_bad_blocks');
    expect(r).toMatchObject({ value: 12, sentence: '12 new bad blocks in the last 24 h (2 the day before)' });
  });

  it('slow reads make it watch from healthSlowIos within the recent window', () => {
    const at = NOW - HOUR_MS;
    expect(assess(seriesWith([[at, { type: 'slow_io', count: S.healthSlowIos - 1 }]])).state).toBe('healthy');
    expect(assess(seriesWith([[at, { type: 'slow_io', count: S.healthSlowIos }]])).state).toBe('watch');
    expect(assess(seriesWith([[at, { type: 'slow_io', count: 3 }]]), NOW, { ...S, healthSlowIos: 3 }).state).toBe('watch');
  });

  it('an outage that ended keeps the disk watch, with its seconds', () => {
    const s = seriesWith([
      [NOW - 5 * DAY_MS, { type: 'outage_began' }],
      [NOW - 5 * DAY_MS + 90_000, { type: 'outage_ended' }],
    ]);
    const a = assess(s);
    expect(a.state).toBe('watch');
    expect(reason(a, 'outages')?.sentence).toBe('1 outage of main in the last 60 days (90 s in all, not counting one under way)');
  });

  it('stays watch for healthWatchDays after the last event, then is healthy', () => {
    const s = seriesWith([[T0 + HOUR_MS, bad([42])]]);
    expect(assess(s, T0 + HOUR_MS + 59 * DAY_MS).state).toBe('watch');
    expect(assess(s, T0 + HOUR_MS + 62 * DAY_MS).state).toBe('healthy');
    expect(assess(s, T0 + HOUR_MS + 20 * DAY_MS, { ...S, healthWatchDays: 14 }).state).toBe('healthy');
  });
});

describe('health model: degraded', () => {
  it('blocks lost now (healthLostBlocks)', () => {
    const a = assess(seriesWith([[NOW - HOUR_MS, spare(3, 1000, 1)]]));
    expect(a.state).toBe('degraded');
    expect(reason(a, 'lost_blocks')).toMatchObject({ value: 1, state: 'degraded' });
    expect(a.action).toContain('Back up the data and plan to replace the disk');
    expect(a.action).toContain('Blocks are lost');
    const b = assess(seriesWith([[NOW - HOUR_MS, spare(3, 1000, 1)]]), NOW, { ...S, healthLostBlocks: 2 });
    expect(b.state).toBe('watch');
  });

  it('half the spare used (healthSpareDegradedPercent), not below', () => {
    expect(assess(seriesWith([[NOW - HOUR_MS, spare(499)]])).state).toBe('healthy');
    const a = assess(seriesWith([[NOW - HOUR_MS, spare(500)]]));
    expect([a.state, reason(a, 'spare_used')?.sentence]).toEqual(['degraded', '500 of 1000 spare slots used (50%)']);
    expect(assess(seriesWith([[NOW - HOUR_MS, spare(300)]]), NOW, { ...S, healthSpareDegradedPercent: 30 }).state).toBe('degraded');
  });

  it('a growing cluster: new bad blocks near earlier ones', () => {
    const s = seriesWith([
      [NOW - 10 * DAY_MS, bad([100_000])],
      [NOW - 3 * DAY_MS, bad([100_010])],
      [NOW - 2 * DAY_MS, bad([99_000])],
      [NOW - DAY_MS, bad([101_500])],
    ]);
    const a = assess(s);
    expect(a.state).toBe('degraded');
    expect(reason(a, 'cluster_growth')).toMatchObject({ value: 3, state: 'degraded' });
    expect(reason(a, 'cluster_growth')?.sentence).toBe('3 new bad blocks in the last 7 days within 2048 blocks of earlier ones (blocks 99000 to 101500): a growing defect');
  });

  it('blocks far apart, or found together in one hour, are no growing cluster', () => {
    const far = seriesWith([
      [NOW - 10 * DAY_MS, bad([100_000])],
      [NOW - 3 * DAY_MS, bad([200_000])],
      [NOW - 2 * DAY_MS, bad([300_000])],
      [NOW - DAY_MS, bad([400_000])],
    ]);
    expect(reason(assess(far), 'cluster_growth')).toBeUndefined();
    const burst = seriesWith([[NOW - DAY_MS, bad(Array.from({ length: 16 }, (_, i) => 7000 + i))]]);
    expect(reason(assess(burst), 'cluster_growth')).toBeUndefined();
    // Two joined blocks are below the default threshold of three: watch, not degraded.
    const two = seriesWith([
      [NOW - 10 * DAY_MS, bad([100_000])],
      [NOW - 3 * DAY_MS, bad([100_010])],
      [NOW - 2 * DAY_MS, bad([99_000])],
    ]);
    expect(reason(assess(two), 'cluster_growth')).toMatchObject({ value: 2, state: 'watch' });
    expect(assess(two).state).toBe('watch');
    // The distance is a setting: at 500 blocks 99000 and 101500 no longer join.
    expect(reason(assess(two, NOW, { ...S, healthClusterDistanceBlocks: 500 }), 'cluster_growth')).toMatchObject({ value: 1 });
  });

  it('a rising rate of new bad blocks (acceleration)', () => {
    const evs: [number, HealthEvent][] = [[T0, spare(0, 100_000)]];
    let block = 0;
    // Four blocks a day for 29 days, then 12 in the last 24 h.
    for (let d = 1; d < 29; d++) for (let i = 0; i < 4; i++) evs.push([T0 + d * DAY_MS + i * 6 * HOUR_MS, bad([(block += 1_000_000)])]);
    const before = seriesWith(evs);
    expect(forecastOf(before, S, NOW).acceleration).toBe(false);
    for (let i = 0; i < 12; i++) evs.push([NOW - 20 * HOUR_MS + i * HOUR_MS, bad([(block += 1_000_000)])]);
    const a = assess(seriesWith(evs));
    expect(a.forecast.acceleration).toBe(true);
    expect(a.state).toBe('degraded');
    // The window before is the 24 hourly buckets before the recent 24 (whose last one is the current hour):
    // it holds three of day 28's four blocks.
    expect(reason(a, 'acceleration')?.sentence).toBe('new bad blocks are coming faster: 12 in the last 24 h, 3 in the 24 h before');
    // Twelve is not five times three.
    expect(assess(seriesWith(evs), NOW, { ...S, healthAccelerationFactor: 5 }).forecast.acceleration).toBe(false);
  });

  it('acceleration needs healthAccelerationMinBlocks and a fully observed window before', () => {
    const nine: [number, HealthEvent][] = Array.from({ length: 9 }, (_, i) => [NOW - (i + 1) * HOUR_MS, bad([i * 1_000_000])]);
    expect(forecastOf(seriesWith(nine), S, NOW).acceleration).toBe(false);
    expect(forecastOf(seriesWith(nine), { ...S, healthAccelerationMinBlocks: 9 }, NOW).acceleration).toBe(true);
    // A device added 30 h ago has no full previous 24 h: its first blocks are no acceleration.
    expect(forecastOf(seriesWith(nine, NOW - 30 * HOUR_MS), { ...S, healthAccelerationMinBlocks: 9 }, NOW).acceleration).toBe(false);
  });

  it('a read error on the spare within the recent window', () => {
    const a = assess(seriesWith([[NOW - HOUR_MS, { type: 'spare_error', op: 'read' }]]));
    expect([a.state, reason(a, 'spare_read_errors')?.state]).toEqual(['degraded', 'degraded']);
    expect(assess(seriesWith([[NOW - 3 * DAY_MS, { type: 'spare_error', op: 'read' }]])).state).toBe('watch');
  });
});

describe('health model: critical', () => {
  it('90% of the spare used (healthSpareCriticalPercent), 89% is degraded', () => {
    expect(assess(seriesWith([[NOW - HOUR_MS, spare(899)]])).state).toBe('degraded');
    const a = assess(seriesWith([[NOW - HOUR_MS, spare(900)]]));
    expect(a.state).toBe('critical');
    expect(a.action).toBe('Back up the data now and replace the disk soon: 900 of 1000 spare slots used (90%).');
  });

  it("the spare's own writes fail", () => {
    const a = assess(seriesWith([[NOW - HOUR_MS, { type: 'spare_error', op: 'write' }]]));
    expect(a.state).toBe('critical');
    expect(reason(a, 'spare_write_errors')?.sentence).toBe('1 write error on the spare in the last 24 h (0 the day before)');
  });

  it('the spare forecast to run out within healthCriticalForecastDays', () => {
    // 200 blocks a day for 7 days; at the end 1000 of 4000 slots free (75% used: degraded by itself): 5 days left.
    const evs: [number, HealthEvent][] = [];
    for (let i = 0; i < 1400; i++) {
      const at = NOW - 7 * DAY_MS + (i + 1) * ((7 * DAY_MS) / 1400);
      evs.push([at, bad([i * 100_000])], [at, spare(1600 + i + 1, 4000)]);
    }
    const a = assess(seriesWith(evs));
    expect(a.forecast.spareExhaustionSeconds).not.toBeNull();
    expect(a.forecast.spareExhaustionSeconds! / 86400).toBeGreaterThan(4);
    expect(a.forecast.spareExhaustionSeconds! / 86400).toBeLessThan(7);
    expect(a.state).toBe('critical');
    expect(reason(a, 'spare_forecast')?.state).toBe('critical');
    expect(assess(seriesWith(evs), NOW, { ...S, healthCriticalForecastDays: 4 }).state).toBe('degraded');
  });

  it('main in an outage now (shorter than healthOutageFailSeconds)', () => {
    const a = assess(seriesWith([[NOW - 120_000, { type: 'outage_began' }]]));
    expect(a.state).toBe('critical');
    expect(reason(a, 'outage_now')?.sentence).toBe('main has not answered for 2 min (an outage under way)');
  });
});

describe('health model: failed', () => {
  it('a long outage', () => {
    const s = seriesWith([[NOW - 700_000, { type: 'outage_began' }]]);
    const a = assess(s);
    expect(a.state).toBe('failed');
    expect(a.action).toContain('Main no longer answers');
    expect(assess(s, NOW, { ...S, healthOutageFailSeconds: 800 }).state).toBe('critical');
    s.record({ type: 'outage_ended' }, NOW - 1000);
    expect(assess(s).state).toBe('watch');
  });

  it('the spare full', () => {
    const a = assess(seriesWith([[NOW - 40 * DAY_MS, spare(1000)]]));
    expect(a.state).toBe('failed');
    expect(reason(a, 'spare_used')?.sentence).toBe('the spare is full (1000 of 1000 slots used): new bad blocks reach the user as I/O errors');
    expect(a.action).toContain('the spare is full');
  });
});

describe('health model: decay', () => {
  it('a burst then silence: critical during it, watch a month later, healthy after the watch window', () => {
    const burstAt = T0 + 10 * DAY_MS;
    // The device was added two days before the burst: 60 blocks in 2 days is about 29 a day, and 140 free slots last under 5 days.
    const evs: [number, HealthEvent][] = [[burstAt - 2 * DAY_MS, spare(0, 200)]];
    for (let i = 0; i < 60; i++) evs.push([burstAt + i * MIN_MS, bad([i * 50_000])]);
    evs.push([burstAt + 60 * MIN_MS, spare(60, 200)]);
    const s = seriesWith(evs, burstAt - 2 * DAY_MS);
    const during = assess(s, burstAt + 2 * HOUR_MS);
    expect(during.state).toBe('critical');
    expect(during.forecast.acceleration).toBe(true);
    const tenDays = assess(s, burstAt + 10 * DAY_MS);
    const month = assess(s, burstAt + 30 * DAY_MS);
    expect([month.state, month.forecast.spareExhaustionSeconds, month.forecast.acceleration]).toEqual(['watch', null, false]);
    expect(month.score).toBeGreaterThan(tenDays.score);
    expect(reason(month, 'new_bad_blocks')?.weight).toBeLessThan(reason(tenDays, 'new_bad_blocks')?.weight ?? 0);
    expect(reason(month, 'new_bad_blocks')?.sentence).toBe('60 new bad blocks in the last 60 days, the latest 30 days ago');
    expect(assess(s, burstAt + 61 * DAY_MS).state).toBe('healthy');
  });
});

describe('health forecast', () => {
  it('on a synthetic linear trend the forecast is within 10% of the exact answer, and the range holds it', () => {
    // 40 new bad blocks a day, one every 36 min, for 20 days, on a spare of 5000 slots.
    const slots = 5000;
    const s = HealthSeries.create(T0);
    const every = 36 * MIN_MS;
    let used = 0;
    for (let at = T0 + every; at <= T0 + 20 * DAY_MS; at += every) {
      s.record(bad([used * 10_000], used % 2 === 0 ? 'auto' : 'scan'), at);
      s.record(spare(++used, slots), at);
    }
    for (const now of [T0 + 20 * DAY_MS, T0 + 20 * DAY_MS + 20 * MIN_MS, T0 + 10 * DAY_MS + 7 * MIN_MS]) {
      const usedNow = Math.floor((now - T0) / every);
      const exact = ((slots - usedNow) / 40) * 86400;
      const f = forecastOf(s, S, now);
      expect(f.spareExhaustionSeconds, `at ${new Date(now).toISOString()}`).not.toBeNull();
      expect(Math.abs(f.spareExhaustionSeconds! - exact) / exact).toBeLessThan(0.1);
      expect(Math.abs(f.ratePerDay - 40) / 40).toBeLessThan(0.1);
      expect(f.range![0]).toBeLessThan(exact);
      expect(f.range![1]).toBeGreaterThan(exact);
    }
  });

  it('follows an onset: quiet for 30 days, then 100 new bad blocks a day for 2 days, 500 slots free: within 10% of 5 days, critical', () => {
    const slots = 700;
    const s = HealthSeries.create(T0);
    const onset = T0 + 30 * DAY_MS;
    const every = 14.4 * MIN_MS; // 100 a day
    let used = 0;
    let at = onset;
    while (used < 200) {
      at += every;
      s.record(bad([used * 10_000]), at);
      s.record(spare(++used, slots), at);
    }
    const now = at + 1000;
    const exact = ((slots - used) / 100) * 86400;
    const f = forecastOf(s, S, now);
    expect(f.onset).toBe(onset);
    expect(Math.abs(f.spareExhaustionSeconds! - exact) / exact).toBeLessThan(0.1);
    expect(f.range![0]).toBeLessThan(exact);
    expect(f.range![1]).toBeGreaterThan(exact);
    const a = assess(s, now);
    expect(a.state).toBe('critical');
    expect(reason(a, 'spare_forecast')?.sentence).toMatch(/^at 100\.0 new bad blocks a day \(200 in 2\.0 days\)/);
  });

  it('a stray block early in the window does not hide an onset: quiet 30 days, one block 6.5 days ago, then 100 a day for 2 days, 500 slots free: within 10% of 5 days, critical', () => {
    const slots = 701;
    const s = HealthSeries.create(T0);
    const onset = T0 + 30 * DAY_MS;
    let used = 0;
    s.record(bad([999_999_999]), onset - 4.5 * DAY_MS); // 6.5 days before `now`, half a day into the 7-day window
    s.record(spare(++used, slots), onset - 4.5 * DAY_MS);
    let at = onset;
    while (used < 201) {
      at += 14.4 * MIN_MS; // 100 a day
      s.record(bad([used * 10_000]), at);
      s.record(spare(++used, slots), at);
    }
    const now = at + 1000;
    const exact = ((slots - used) / 100) * 86400;
    const f = forecastOf(s, S, now);
    expect(f.onset).toBe(onset);
    expect(f.windowBlocks).toBe(200); // the stray block is not the trend
    expect(Math.abs(f.spareExhaustionSeconds! - exact) / exact).toBeLessThan(0.1);
    expect(assess(s, now).state).toBe('critical');
  });

  it('an onset is taken over at least the recent window: a burst of 30 in one hour after a quiet week is 30 a day, not 720', () => {
    const evs: [number, HealthEvent][] = [[T0, spare(0, 10_000)]];
    for (let i = 0; i < 30; i++) evs.push([NOW - 2 * HOUR_MS + i * MIN_MS, bad([i * 1_000_000])]);
    evs.push([NOW - HOUR_MS, spare(30, 10_000)]);
    const f = forecastOf(seriesWith(evs), S, NOW);
    expect(f.onset).toBe(Math.floor((NOW - 2 * HOUR_MS) / HOUR_MS) * HOUR_MS);
    expect(f.ratePerDay).toBeCloseTo(30, 6);
  });

  it('a steady sparse disk is no onset: its first block a few hours into the window keeps the window mean', () => {
    // 12 blocks over the week, one every 14 h, the first 10 h after the window's start.
    const start = Math.floor(NOW / HOUR_MS) * HOUR_MS - 167 * HOUR_MS;
    const evs: [number, HealthEvent][] = [[T0, spare(0, 10_000)]];
    for (let i = 0; i < 12; i++) evs.push([start + 10 * HOUR_MS + i * 14 * HOUR_MS, bad([i * 1_000_000])]);
    evs.push([NOW - HOUR_MS, spare(12, 10_000)]);
    const f = forecastOf(seriesWith(evs), S, NOW);
    expect(f.onset).toBeNull();
    expect(f.windowSeconds).toBe((NOW - start) / 1000);
  });

  it('manual remaps use slots but are not the trend', () => {
    const evs: [number, HealthEvent][] = Array.from({ length: 30 }, (_, i) => [NOW - (i + 1) * HOUR_MS, bad([i * 1_000_000], 'manual')]);
    evs.push([NOW - HOUR_MS, spare(30)]);
    expect(forecastOf(seriesWith(evs), S, NOW).spareExhaustionSeconds).toBeNull();
  });

  it('no forecast below healthForecastMinBlocks new bad blocks in the window', () => {
    const evs: [number, HealthEvent][] = Array.from({ length: 9 }, (_, i) => [NOW - (i + 1) * 5 * HOUR_MS, bad([i * 1_000_000])]);
    evs.push([NOW - HOUR_MS, spare(9)]);
    expect(assess(seriesWith(evs)).forecast.spareExhaustionSeconds).toBeNull();
    evs.push([NOW - HOUR_MS, bad([99_000_000])], [NOW - HOUR_MS, spare(10)]);
    const f = assess(seriesWith(evs)).forecast;
    expect(f.spareExhaustionSeconds).not.toBeNull();
    expect(f.range).not.toBeNull();
    expect(forecastOf(seriesWith(evs), { ...S, healthForecastMinBlocks: 11 }, NOW).spareExhaustionSeconds).toBeNull();
  });

  it('no forecast without a spare sample', () => {
    const evs: [number, HealthEvent][] = Array.from({ length: 20 }, (_, i) => [NOW - (i + 1) * HOUR_MS, bad([i * 1_000_000])]);
    expect(forecastOf(seriesWith(evs), S, NOW).spareExhaustionSeconds).toBeNull();
  });

  it('Poisson bounds match the exact (Garwood) 95% interval within 1% from 10 events', () => {
    // Exact values from the chi-square quantiles: [chi2(0.025, 2n) / 2, chi2(0.975, 2n + 2) / 2].
    const exact: [number, number, number][] = [
      [10, 4.7954, 18.3904],
      [100, 81.3639, 121.6280],
    ];
    for (const [n, lo, hi] of exact) {
      expect(Math.abs(poissonLower(n) - lo) / lo).toBeLessThan(0.01);
      expect(Math.abs(poissonUpper(n) - hi) / hi).toBeLessThan(0.01);
    }
  });
});

describe('health settings drive every rule', () => {
  it('the state is the worst reason, and reasons come worst first', () => {
    const s = seriesWith([
      [NOW - HOUR_MS, bad([1])],
      [NOW - HOUR_MS, spare(950, 1000, 2)],
    ]);
    const a = assess(s);
    const order: HealthState[] = a.reasons.map((r) => r.state);
    expect(a.state).toBe('critical');
    expect(order[0]).toBe('critical');
    expect(order).toEqual([...order].sort((x, y) => ['healthy', 'watch', 'degraded', 'critical', 'failed'].indexOf(y) - ['healthy', 'watch', 'degraded', 'critical', 'failed'].indexOf(x)));
  });

  it('resolves layered settings', () => {
    expect(resolveHealthSettings({ healthWatchDays: 30 }, { healthWatchDays: 10, healthSlowIos: 5 })).toEqual({ ...S, healthWatchDays: 30, healthSlowIos: 5 });
  });
});
