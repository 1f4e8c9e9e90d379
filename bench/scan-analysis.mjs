// @ts-nocheck -- plain JavaScript run by node in the VM; its JSDoc types are what the unit test sees.
// The analysis of the scan benchmark (guest-scan-bench.mjs), apart so that a unit test can feed it made-up
// rounds (test/unit/scan-analysis.test.ts).

export const MIB = 1024 * 1024;

/**
 * The median; of an even count, the mean of the two middle values. NaN for no values.
 * @param {number[]} xs
 * @returns {number}
 */
export function median(xs) {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * One round's scan rate during B in MiB/s: the bytes the scan's position moved over the time from just before
 * scan_resume was sent to just after scan_pause answered (a lower bound: the scan ran no longer than that).
 * @param {{ posBefore: number, posAfter: number, scanMs: number }} r
 * @returns {number}
 */
export function scanRateMib(r) {
  if (!(r.scanMs > 0)) throw new Error(`scan time must be above 0 ms, got ${r.scanMs}`);
  if (r.posAfter < r.posBefore) throw new Error(`scan position went back: ${r.posBefore} -> ${r.posAfter}`);
  return (r.posAfter - r.posBefore) / MIB / (r.scanMs / 1000);
}

/**
 * The part of one B run's status polls under load, with the scan held at its floor: from the first poll at
 * least `fromMs` after scan_resume whose reported rate (rateBps) is at most `floorBps` (fio has started and
 * the scan's rate has come down from its idle climb; in the TCG VM that took 3-4 s) to the last poll, as
 * bytes and ms; null with fewer than two such polls.
 * @param {Array<{ ms: number, position: number, rateBps: number }>} samples
 * @param {number} fromMs
 * @param {number} floorBps
 * @returns {{ bytes: number, ms: number } | null}
 */
export function loadWindow(samples, fromMs, floorBps) {
  const late = samples.filter((x) => x.ms >= fromMs);
  const i = late.findIndex((x) => x.rateBps <= floorBps);
  if (i < 0) return null;
  const s = late.slice(i);
  if (s.length < 2) return null;
  const first = s[0];
  const last = s[s.length - 1];
  if (last.position < first.position) throw new Error(`scan position went back: ${first.position} -> ${last.position}`);
  return { bytes: last.position - first.position, ms: last.ms - first.ms };
}

/**
 * The summary of the A/B rounds: median IOPS with the scan paused (A) and running (B), their ratio (median B /
 * median A) against `targetRatio`, and the scan's rate during B against the floor `floorMib`, two ways (all
 * B runs together: total bytes over total time, which evens out the 1 MiB steps of the position):
 *  - scanMib: from scan_resume to scan_pause, which takes in the climb of the rate while fio starts;
 *  - loadMib: over each run's load window (loadWindow of its polls from `loadFromMs`, at the floor), the rate
 *    under the users' load, which the target is about; null (no verdict) when no run has a window.
 * @param {Array<{ pausedIops: number, scanningIops: number, posBefore: number, posAfter: number, scanMs: number, samples?: Array<{ ms: number, position: number, rateBps: number }> }>} rounds
 * @param {{ floorMib: number, targetRatio: number, loadFromMs: number }} targets
 */
export function summarise(rounds, targets) {
  if (rounds.length === 0) throw new Error('no rounds to summarise');
  const pausedIops = median(rounds.map((r) => r.pausedIops));
  const scanningIops = median(rounds.map((r) => r.scanningIops));
  if (!(pausedIops > 0)) throw new Error(`median IOPS with the scan paused must be above 0, got ${pausedIops}`);
  const ratio = scanningIops / pausedIops;
  const perRound = rounds.map((r) => ({
    ratio: r.scanningIops / r.pausedIops,
    scanMib: scanRateMib(r),
  }));
  const bytes = rounds.reduce((s, r) => s + (r.posAfter - r.posBefore), 0);
  const ms = rounds.reduce((s, r) => s + r.scanMs, 0);
  const scanMib = bytes / MIB / (ms / 1000);
  const windows = rounds.map((r) => loadWindow(r.samples ?? [], targets.loadFromMs, targets.floorMib * MIB)).filter((w) => w !== null && w.ms > 0);
  const loadMs = windows.reduce((t, w) => t + w.ms, 0);
  const loadMib = windows.length === 0 ? null : windows.reduce((t, w) => t + w.bytes, 0) / MIB / (loadMs / 1000);
  return {
    pausedIops,
    scanningIops,
    ratio,
    scanMib,
    loadMib,
    loadWindows: windows.length,
    scanMibMin: Math.min(...perRound.map((p) => p.scanMib)),
    perRound,
    iopsPass: ratio >= targets.targetRatio,
    ratePass: loadMib === null ? null : loadMib >= targets.floorMib,
  };
}

// The idle scan benchmark (guest-idle-scan-bench.mjs): the scan's throughput on an idle device against fio's
// sequential reads of main.

/**
 * The part of one scan run's status polls after the rate's climb: from the first poll at least `fromMs`
 * after scan_start whose state is running to the last such poll, as bytes and ms; null with fewer than two
 * (polls once the pass is done or stopped are not counted: their position is not the scan's reading).
 * @param {Array<{ ms: number, position: number, state: string }>} samples
 * @param {number} fromMs
 * @returns {{ bytes: number, ms: number } | null}
 */
export function runningWindow(samples, fromMs) {
  const s = samples.filter((x) => x.ms >= fromMs && x.state === 'running');
  if (s.length < 2) return null;
  const first = s[0];
  const last = s[s.length - 1];
  if (last.position < first.position) throw new Error(`scan position went back: ${first.position} -> ${last.position}`);
  if (!(last.ms > first.ms)) throw new Error(`poll times must increase, got ${first.ms} then ${last.ms} ms`);
  return { bytes: last.position - first.position, ms: last.ms - first.ms };
}

/**
 * The summary of the idle rounds. Each round: fio's sequential read of main (`fioMib`, MiB/s) and one scan
 * run started at `startPosition` at ms 0 (just before scan_start was sent), polled (`samples`). Per round:
 *  - steadyMib: the scan's MiB/s over runningWindow(samples, steadyFromMs), after the rate's climb from the
 *    floor; null without a window;
 *  - wholeMib: from scan_start to the last running poll, the climb included; null without a running poll;
 *  - ratio: steadyMib / fioMib (null without a window), wholeRatio: wholeMib / fioMib.
 * The verdict: the median of the rounds' ratios against `targetRatio`; null (no verdict) when no round has
 * a window. A round without one counts in no median.
 * @param {Array<{ fioMib: number, startPosition: number, samples: Array<{ ms: number, position: number, state: string }> }>} rounds
 * @param {{ targetRatio: number, steadyFromMs: number }} targets
 */
export function summariseIdle(rounds, targets) {
  if (rounds.length === 0) throw new Error('no rounds to summarise');
  const perRound = rounds.map((r, i) => {
    if (!(r.fioMib > 0)) throw new Error(`round ${i + 1}: fio's MiB/s must be above 0, got ${r.fioMib}`);
    const w = runningWindow(r.samples, targets.steadyFromMs);
    const steadyMib = w === null ? null : w.bytes / MIB / (w.ms / 1000);
    const running = r.samples.filter((x) => x.state === 'running');
    const last = running[running.length - 1];
    if (last !== undefined && last.position < r.startPosition) throw new Error(`round ${i + 1}: scan position went back: ${r.startPosition} -> ${last.position}`);
    const wholeMib = last === undefined || !(last.ms > 0) ? null : (last.position - r.startPosition) / MIB / (last.ms / 1000);
    return {
      fioMib: r.fioMib,
      steadyMib,
      wholeMib,
      ratio: steadyMib === null ? null : steadyMib / r.fioMib,
      wholeRatio: wholeMib === null ? null : wholeMib / r.fioMib,
    };
  });
  const known = (xs) => xs.filter((x) => x !== null);
  const ratios = known(perRound.map((p) => p.ratio));
  const wholeRatios = known(perRound.map((p) => p.wholeRatio));
  const ratio = ratios.length === 0 ? null : median(ratios);
  return {
    fioMib: median(perRound.map((p) => p.fioMib)),
    steadyMib: ratios.length === 0 ? null : median(known(perRound.map((p) => p.steadyMib))),
    wholeMib: wholeRatios.length === 0 ? null : median(known(perRound.map((p) => p.wholeMib))),
    ratio,
    wholeRatio: wholeRatios.length === 0 ? null : median(wholeRatios),
    windows: ratios.length,
    perRound,
    pass: ratio === null ? null : ratio >= targets.targetRatio,
  };
}
