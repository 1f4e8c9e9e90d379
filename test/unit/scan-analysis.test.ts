// The scan benchmark's analysis (bench/scan-analysis.mjs) on made-up rounds: the IOPS ratio is median B over
// median A, the scan's rate is the bytes it moved over the time it ran (all B runs together), and each target
// gives PASS or FAIL from the numbers.
import { describe, expect, it } from 'vitest';
import { loadWindow, MIB, median, runningWindow, scanRateMib, summarise, summariseIdle } from '../../bench/scan-analysis.mjs';

const targets = { floorMib: 1, targetRatio: 0.9, loadFromMs: 2000 };

/** Polls every second from 1 s to `toS` s after resume, the position moving `mibPerS` a second after `burstMib` in the first second. */
const polls = (toS: number, mibPerS: number, burstMib: number, floorFromS = 1) => {
  const out: { ms: number; position: number; rateBps: number }[] = [];
  for (let t = 1; t <= toS; t++) out.push({ ms: t * 1000, position: (burstMib + (t - 1) * mibPerS) * MIB, rateBps: (t >= floorFromS ? 1 : 256) * MIB });
  return out;
};

describe('median', () => {
  it('of an odd count is the middle value, of an even count the mean of the two middle ones', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });
});

describe('scanRateMib', () => {
  it('is the bytes the position moved over the seconds the scan ran', () => {
    expect(scanRateMib({ posBefore: 10 * MIB, posAfter: 22 * MIB, scanMs: 8000 })).toBe(1.5);
  });
  it('refuses a position that went back and a time of 0', () => {
    expect(() => scanRateMib({ posBefore: 5 * MIB, posAfter: 4 * MIB, scanMs: 1000 })).toThrow(/went back/);
    expect(() => scanRateMib({ posBefore: 0, posAfter: MIB, scanMs: 0 })).toThrow(/above 0/);
  });
});

describe('summarise', () => {
  it('a scan that costs 5% of the IOPS and moves 1.2 MiB/s passes both targets', () => {
    const s = summarise(
      [
        { pausedIops: 1000, scanningIops: 950, posBefore: 0, posAfter: 12 * MIB, scanMs: 10_000, samples: polls(9, 1.2, 0) },
        { pausedIops: 1100, scanningIops: 1040, posBefore: 12 * MIB, posAfter: 24 * MIB, scanMs: 10_000, samples: polls(9, 1.2, 0) },
        { pausedIops: 900, scanningIops: 860, posBefore: 24 * MIB, posAfter: 36 * MIB, scanMs: 10_000, samples: polls(9, 1.2, 0) },
      ],
      targets,
    );
    expect(s.pausedIops).toBe(1000);
    expect(s.scanningIops).toBe(950);
    expect(s.ratio).toBeCloseTo(0.95, 10);
    expect(s.scanMib).toBeCloseTo(1.2, 10);
    expect(s.loadMib).toBeCloseTo(1.2, 10);
    expect(s.iopsPass).toBe(true);
    expect(s.ratePass).toBe(true);
  });

  it('the ratio is of the medians, not the median of the per-round ratios; a ratio under 0.90 fails', () => {
    const s = summarise(
      [
        { pausedIops: 1000, scanningIops: 800, posBefore: 0, posAfter: 10 * MIB, scanMs: 10_000 },
        { pausedIops: 2000, scanningIops: 1900, posBefore: 10 * MIB, posAfter: 20 * MIB, scanMs: 10_000 },
      ],
      targets,
    );
    // medians: paused (1000 + 2000) / 2 = 1500, running (800 + 1900) / 2 = 1350 -> 0.9 exactly: passes.
    expect(s.ratio).toBeCloseTo(0.9, 10);
    expect(s.iopsPass).toBe(true);
    expect(s.perRound.map((p) => p.ratio)).toEqual([0.8, 0.95]);
    const worse = summarise([{ pausedIops: 1000, scanningIops: 899, posBefore: 0, posAfter: 10 * MIB, scanMs: 10_000 }], targets);
    expect(worse.iopsPass).toBe(false);
  });

  it('scanMib is total bytes over total time (rounds of 9 and 11 MiB in 10 s each make 1.0 MiB/s)', () => {
    const s = summarise(
      [
        { pausedIops: 1000, scanningIops: 1000, posBefore: 0, posAfter: 9 * MIB, scanMs: 10_000 },
        { pausedIops: 1000, scanningIops: 1000, posBefore: 9 * MIB, posAfter: 20 * MIB, scanMs: 10_000 },
      ],
      targets,
    );
    expect(s.scanMib).toBeCloseTo(1.0, 10);
    expect(s.scanMibMin).toBeCloseTo(0.9, 10);
    // No polls: no rate under load, no verdict.
    expect(s.loadMib).toBeNull();
    expect(s.ratePass).toBeNull();
  });

  it('the verdict on the floor is the rate under load (from 2 s), not the burst while fio starts', () => {
    // 200 MiB in the first second (the rate climbing while no user I/O), then 0.5 MiB/s under load.
    const slow = { pausedIops: 1000, scanningIops: 1000, posBefore: 0, posAfter: 205 * MIB, scanMs: 11_000, samples: polls(10, 0.5, 200) };
    const s = summarise([slow], targets);
    expect(s.scanMib).toBeGreaterThan(18);
    expect(s.loadMib).toBeCloseTo(0.5, 10);
    expect(s.ratePass).toBe(false);
    const ok = summarise([{ ...slow, samples: polls(10, 1.25, 200) }], targets);
    expect(ok.loadMib).toBeCloseTo(1.25, 10);
    expect(ok.ratePass).toBe(true);
  });

  it('loadWindow: the polls from fromMs on, from the first at the floor to the last; null with fewer than two', () => {
    expect(loadWindow(polls(10, 1, 50), 2000, MIB)).toEqual({ bytes: 8 * MIB, ms: 8000 });
    // The rate still above the floor until the poll at 4 s: the window starts there.
    expect(loadWindow(polls(10, 1, 50, 4), 2000, MIB)).toEqual({ bytes: 6 * MIB, ms: 6000 });
    expect(loadWindow(polls(10, 1, 50, 11), 2000, MIB)).toBeNull();
    expect(loadWindow(polls(2, 1, 50), 2000, MIB)).toBeNull();
    expect(() => loadWindow([{ ms: 2000, position: 5 * MIB, rateBps: MIB }, { ms: 3000, position: 4 * MIB, rateBps: MIB }], 2000, MIB)).toThrow(/went back/);
  });

  it('the burst still running at 2 s (rate above the floor until 4 s) is not taken for the rate under load', () => {
    // 10 MiB/s (rate 256 MiB/s reported) until 4 s, then 0.8 MiB/s at the floor: fails the floor.
    const samples = [1, 2, 3, 4, 5, 6, 7, 8, 9].map((t) => ({
      ms: t * 1000,
      position: (t <= 4 ? t * 10 : 40 + (t - 4) * 0.8) * MIB,
      rateBps: (t < 4 ? 256 : 1) * MIB,
    }));
    const s = summarise([{ pausedIops: 1000, scanningIops: 1000, posBefore: 0, posAfter: 44 * MIB, scanMs: 10_000, samples }], targets);
    expect(s.loadMib).toBeCloseTo(0.8, 10);
    expect(s.ratePass).toBe(false);
  });

  it('refuses no rounds and a median of 0 IOPS with the scan paused', () => {
    expect(() => summarise([], targets)).toThrow(/no rounds/);
    expect(() => summarise([{ pausedIops: 0, scanningIops: 5, posBefore: 0, posAfter: MIB, scanMs: 1000 }], targets)).toThrow(/above 0/);
  });
});

const idleTargets = { targetRatio: 0.8, steadyFromMs: 2000 };

/**
 * Polls every 500 ms to `toMs` of a scan that reads nothing for its first `climbMs` (the rate climbing from
 * the floor), then `mibPerS`; `doneFromMs`: polls from then on say done (the pass at the end).
 */
const idlePolls = (toMs: number, mibPerS: number, climbMs = 1000, doneFromMs = Infinity) => {
  const out: { ms: number; position: number; state: string }[] = [];
  for (let t = 500; t <= toMs; t += 500) {
    out.push({ ms: t, position: Math.max(0, t - climbMs) / 1000 * mibPerS * MIB, state: t >= doneFromMs ? 'done' : 'running' });
  }
  return out;
};

describe('runningWindow', () => {
  it('runs from the first running poll at fromMs on to the last running one; null with fewer than two', () => {
    expect(runningWindow(idlePolls(8000, 100), 2000)).toEqual({ bytes: 600 * MIB, ms: 6000 });
    // The polls once the pass is done are left out: the window ends at the last running poll (5.5 s).
    expect(runningWindow(idlePolls(8000, 100, 1000, 6000), 2000)).toEqual({ bytes: 350 * MIB, ms: 3500 });
    expect(runningWindow(idlePolls(2000, 100), 2000)).toBeNull();
    expect(runningWindow(idlePolls(8000, 100, 1000, 2500), 2000)).toBeNull();
  });
  it('refuses a position that went back', () => {
    const back = [
      { ms: 2000, position: 5 * MIB, state: 'running' },
      { ms: 2500, position: 4 * MIB, state: 'running' },
    ];
    expect(() => runningWindow(back, 2000)).toThrow(/went back/);
  });
});

describe('summariseIdle', () => {
  it('the verdict is the median of the rounds\' steady ratios (scan from 2 s on over fio), not of the whole run', () => {
    // fio 125 MiB/s; the scan reads nothing for 1 s, then 100 MiB/s: 0.80 steady (passes), 0.70 whole.
    const s = summariseIdle(
      [
        { fioMib: 125, startPosition: 0, samples: idlePolls(8000, 100) },
        { fioMib: 100, startPosition: 0, samples: idlePolls(8000, 100) },
        { fioMib: 200, startPosition: 0, samples: idlePolls(8000, 100) },
      ],
      idleTargets,
    );
    expect(s.perRound.map((p) => p.ratio)).toEqual([0.8, 1, 0.5]);
    expect(s.ratio).toBe(0.8);
    expect(s.pass).toBe(true);
    expect(s.fioMib).toBe(125);
    expect(s.steadyMib).toBe(100);
    expect(s.wholeMib).toBeCloseTo(87.5, 10);
    expect(s.wholeRatio).toBeCloseTo(0.7, 10);
    expect(s.windows).toBe(3);
  });

  it('a median ratio under 0.80 fails', () => {
    const s = summariseIdle([{ fioMib: 100, startPosition: 0, samples: idlePolls(8000, 79) }], idleTargets);
    expect(s.ratio).toBeCloseTo(0.79, 10);
    expect(s.pass).toBe(false);
  });

  it('whole counts from the position scan_start reported', () => {
    const samples = idlePolls(8000, 100).map((x) => ({ ...x, position: x.position + 50 * MIB }));
    const s = summariseIdle([{ fioMib: 100, startPosition: 50 * MIB, samples }], idleTargets);
    expect(s.wholeMib).toBeCloseTo(87.5, 10);
    expect(s.steadyMib).toBeCloseTo(100, 10);
  });

  it('a round without a steady window counts in no median; no window at all gives no verdict', () => {
    const s = summariseIdle(
      [
        { fioMib: 100, startPosition: 0, samples: idlePolls(8000, 90) },
        { fioMib: 100, startPosition: 0, samples: idlePolls(8000, 100, 1000, 2500) },
      ],
      idleTargets,
    );
    expect(s.perRound[1]?.ratio).toBeNull();
    expect(s.ratio).toBeCloseTo(0.9, 10);
    expect(s.windows).toBe(1);
    const none = summariseIdle([{ fioMib: 100, startPosition: 0, samples: idlePolls(1500, 100) }], idleTargets);
    expect(none.ratio).toBeNull();
    expect(none.steadyMib).toBeNull();
    expect(none.pass).toBeNull();
    expect(none.wholeMib).toBeCloseTo(33.3333, 3);
  });

  it('refuses no rounds, fio at 0 MiB/s and a scan position behind its start', () => {
    expect(() => summariseIdle([], idleTargets)).toThrow(/no rounds/);
    expect(() => summariseIdle([{ fioMib: 0, startPosition: 0, samples: idlePolls(8000, 100) }], idleTargets)).toThrow(/above 0/);
    expect(() => summariseIdle([{ fioMib: 100, startPosition: 900 * MIB, samples: idlePolls(8000, 100) }], idleTargets)).toThrow(/went back/);
  });
});
