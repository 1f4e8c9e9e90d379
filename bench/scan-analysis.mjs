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
