// @ts-nocheck -- plain JavaScript run by node in the VM; its JSDoc types are what the unit test sees.
// The analysis of the recovery benchmark (guest-recovery-bench.mjs), apart so that a unit test can feed it
// made-up completion times (test/unit/recovery-analysis.test.ts).

/** Width of the IOPS bins, in ms. */
export const BIN_MS = 100;

/**
 * The finite numbers of `xs` (a kill that did not recover has no stall or IOPS figures).
 * @param {Array<number | null | undefined>} xs
 * @returns {number[]}
 */
export const finite = (xs) => /** @type {number[]} */ (xs.filter((v) => Number.isFinite(v)));

/**
 * Analyses one kill at wall-clock `t` (the next kill at `end`) against the sorted completion times `times`.
 * @param {number[]} times
 * @param {number} t
 * @param {number} end
 * @returns {{ recoveryMs: number | null, stallMs: number | null, clockSkewMs: number | null, iopsBefore?: number, iopsAfter2s?: number, iopsMinBin?: number, dipMs?: number }}
 */
export function analyse(times, t, end) {
  // First completion at or after the kill.
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid] < t) lo = mid + 1;
    else hi = mid;
  }
  let best = -1;
  let bestGap = -1;
  for (let j = Math.max(lo, 1); j < times.length && times[j] < end; j++) {
    const gap = times[j] - times[j - 1];
    if (gap > bestGap) {
      bestGap = gap;
      best = j;
    }
  }
  // The gap from the last completion in the window to its end competes too: a daemon that never came back
  // leaves the few completions reaped just after the kill and then nothing. If that gap is the longest, the
  // kill did not recover within the window (no recoveryMs), instead of "recovering" at one of those.
  let last = -1;
  for (let j = Math.max(lo, 0); j < times.length && times[j] < end; j++) last = j;
  if (best < 0 || (last >= 0 && end - times[last] > bestGap)) return { recoveryMs: null, stallMs: null, clockSkewMs: null };
  /** @type {(from: number, to: number) => number[]} */
  const bins = (from, to) => {
    const n = Math.round((to - from) / BIN_MS);
    const counts = new Array(n).fill(0);
    for (let j = 0; j < times.length; j++) {
      if (times[j] < from || times[j] >= to) continue;
      counts[Math.floor((times[j] - from) / BIN_MS)]++;
    }
    return counts.map((c) => (c * 1000) / BIN_MS);
  };
  const before = bins(t - 2000, t);
  const after = bins(t, t + 2000);
  /** @type {(xs: number[]) => number} */
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const baseline = mean(before);
  const dipMs = bins(t, Math.min(end, t + 30_000)).filter((v) => v < baseline / 2).length * BIN_MS;
  return {
    recoveryMs: times[best] - t,
    stallMs: bestGap,
    clockSkewMs: times[best - 1] - t,
    iopsBefore: Math.round(baseline),
    iopsAfter2s: Math.round(mean(after)),
    iopsMinBin: Math.min(...after),
    dipMs,
  };
}

