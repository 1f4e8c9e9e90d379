// The write-outage rule, with a fake clock and a scripted count of writes main took: write failures spread
// over many regions with no write done on main since are a write outage; the same failures with successful
// writes among them (bad sectors amid a working workload) are not, nor failures too few or too slow.
import { describe, expect, it } from 'vitest';
import { WriteOutageDetector } from '../../src/device/write-outage-detector.js';

const BLOCKS = 64 * 1000; // 1000 blocks per region
const make = (regions = 8, windowMs = 2000) => {
  let t = 1_000_000;
  const d = new WriteOutageDetector(() => ({ regions, windowMs }), BLOCKS, () => t);
  return { d, advance: (ms: number) => (t += ms) };
};
/** The first block of each of `n` regions spread over the device. */
const spread = (n: number): number[] => Array.from({ length: n }, (_, i) => Math.floor((i * 64) / n) * 1000 + 7);

describe('WriteOutageDetector', () => {
  it('writes failing everywhere with no write done on main is a write outage, at the `regions`-th region', () => {
    const { d, advance } = make(8, 2000);
    const ok = 5000; // writes main took before the failures began: the count does not move
    const verdicts = spread(8).map((b) => {
      advance(20);
      return d.failure(b, ok);
    });
    expect(verdicts).toEqual([false, false, false, false, false, false, false, true]);
    expect(d.regionsFailing()).toBe(8);
  });

  it('a burst of bad sectors in as many regions, with writes going through between them, is not', () => {
    const { d, advance } = make(8, 2000);
    let ok = 5000;
    for (const b of [...spread(16), ...spread(16)]) {
      advance(5);
      ok += 3; // other writes of the workload landed on main meanwhile
      expect(d.failure(b, ok)).toBe(false);
    }
    expect(d.regionsFailing()).toBe(1);
  });

  it('one write done on main clears the evidence: the count starts again from the next failure', () => {
    const { d, advance } = make(4, 2000);
    const [a, b, c, e] = spread(4) as [number, number, number, number];
    expect(d.failure(a, 10)).toBe(false);
    expect(d.failure(b, 10)).toBe(false);
    expect(d.failure(c, 10)).toBe(false);
    advance(1);
    expect(d.failure(e, 11)).toBe(false); // a write went through before this one failed
    expect(d.regionsFailing()).toBe(1);
    expect(d.failure(a, 11)).toBe(false);
    expect(d.failure(b, 11)).toBe(false);
    expect(d.failure(c, 11)).toBe(true);
  });

  it('failures clustered in one region (bad sectors cluster) are not, however many', () => {
    const { d, advance } = make(8, 2000);
    for (let blk = 3000; blk < 3990; blk += 10) {
      advance(1);
      expect(d.failure(blk, 42)).toBe(false);
    }
    expect(d.regionsFailing()).toBe(1);
  });

  it('failures spread slower than the window are not', () => {
    const { d, advance } = make(4, 1000);
    for (const b of spread(16)) {
      advance(400);
      expect(d.failure(b, 7)).toBe(false);
    }
    expect(d.regionsFailing()).toBe(3);
  });

  it('reset forgets the evidence', () => {
    const { d } = make(3, 2000);
    const [a, b, c] = spread(3) as [number, number, number];
    d.failure(a, 1);
    d.failure(b, 1);
    d.reset();
    expect(d.failure(c, 1)).toBe(false);
    expect(d.regionsFailing()).toBe(1);
  });
});
