// The outage detector's rule, with a fake clock: spread failures within the window, or a device-gone
// errno, raise a suspicion; failures clustered in one place (bad sectors) or spread too slowly do not.
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { OutageDetector, REGION_COUNT } from '../../src/device/outage-detector.js';

const E = os.constants.errno;
const BLOCKS = 64 * 1000; // 1000 blocks per region
const make = (regions = 4, windowMs = 2000) => {
  let t = 1_000_000;
  const d = new OutageDetector(() => ({ regions, windowMs }), BLOCKS, () => t);
  return { d, advance: (ms: number) => (t += ms) };
};

describe('OutageDetector', () => {
  it('cuts the device in REGION_COUNT equal regions', () => {
    const { d } = make();
    expect(REGION_COUNT).toBe(64);
    expect(d.regionOf(0)).toBe(0);
    expect(d.regionOf(999)).toBe(0);
    expect(d.regionOf(1000)).toBe(1);
    expect(d.regionOf(BLOCKS - 1)).toBe(63);
  });

  it('EIO in `regions` distinct regions within the window is a suspicion; fewer is not', () => {
    const { d, advance } = make(4, 2000);
    expect(d.failure(10, E.EIO)).toBe(false);
    advance(100);
    expect(d.failure(20_000, E.EIO)).toBe(false);
    advance(100);
    expect(d.failure(40_000, E.EIO)).toBe(false);
    advance(100);
    expect(d.failure(63_000, E.EIO)).toBe(true);
    expect(d.regionsFailing()).toBe(4);
  });

  it('many failures in one region (bad sectors cluster) are no suspicion', () => {
    const { d, advance } = make(4, 2000);
    for (let b = 5000; b < 5900; b += 10) {
      expect(d.failure(b, E.EIO)).toBe(false);
      advance(1);
    }
    expect(d.regionsFailing()).toBe(1);
  });

  it('failures spread more slowly than the window are no suspicion', () => {
    const { d, advance } = make(4, 2000);
    for (const b of [0, 16_000, 32_000, 48_000, 63_000]) {
      expect(d.failure(b, E.EIO)).toBe(false);
      advance(1000); // each is 2000 ms old when the second next one comes
    }
    expect(d.regionsFailing()).toBeLessThan(4);
  });

  it('a device-gone errno is a suspicion at once; a medium error is not', () => {
    for (const name of ['ENODEV', 'ENXIO', 'ENOLINK', 'ETIMEDOUT']) {
      const { d } = make();
      expect(d.failure(7, (E as Record<string, number>)[name] as number), name).toBe(true);
    }
    const { d } = make();
    expect(d.failure(7, E.ENODATA)).toBe(false);
  });

  it('reset forgets the evidence (main answered a probe)', () => {
    const { d } = make(2, 2000);
    expect(d.failure(0, E.EIO)).toBe(false);
    d.reset();
    expect(d.failure(63_000, E.EIO)).toBe(false);
    expect(d.failure(30_000, E.EIO)).toBe(true);
  });
});
