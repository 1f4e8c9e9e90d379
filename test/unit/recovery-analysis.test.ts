// The recovery benchmark's analysis of one kill (bench/recovery-analysis.mjs), on made-up completion times:
// a recovery is the end of the longest gap after the kill, and a daemon that never came back is reported as
// not recovered, not as a recovery at the completions reaped just after the kill.
import { describe, expect, it } from 'vitest';
import { analyse } from '../../bench/recovery-analysis.mjs';

/** Completions every `stepMs` from `from` (inclusive) to `to` (exclusive). */
const every = (from: number, to: number, stepMs: number): number[] => {
  const out: number[] = [];
  for (let t = from; t < to; t += stepMs) out.push(t);
  return out;
};

describe('analyse: one kill at t = 10 000 ms, the next at 26 000 ms', () => {
  it('a recovery 1200 ms after the kill: recoveryMs 1200, the stall from the last completion before it', () => {
    // Steady I/O, three completions reaped just after the kill, nothing until the new daemon serves at 11 200.
    const times = [...every(8000, 10_000, 10), 10_001, 10_002, 10_003, ...every(11_200, 26_000, 10)];
    const r = analyse(times, 10_000, 26_000);
    expect(r.recoveryMs).toBe(1200);
    expect(r.stallMs).toBe(11_200 - 10_003);
    expect(r.clockSkewMs).toBe(3);
  });

  it('a daemon that never came back: no recoveryMs (not 1 ms at the completions reaped after the kill)', () => {
    const times = [...every(8000, 10_000, 10), 10_001, 10_002, 10_003];
    expect(analyse(times, 10_000, 26_000)).toMatchObject({ recoveryMs: null, stallMs: null });
  });

  it('no completion at all after the kill: no recoveryMs', () => {
    expect(analyse(every(8000, 10_000, 10), 10_000, 26_000).recoveryMs).toBeNull();
  });
});
