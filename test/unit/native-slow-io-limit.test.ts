// The bound on native's slow_io events (native/test/slow_io_limit_test.cc), built by `npm run build` as a
// host executable: at most kSlowIoEventsPerSecond per queue per second, the rest counted on the next event.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadNative, type DeviceOptions } from '../../src/native.js';

const exe = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'build', 'Release', 'slow_io_limit_test');

describe('native slow_io limiter (C++ unit tests)', () => {
  it('passes every check of slow_io_limit_test', () => {
    expect(fs.existsSync(exe), `${exe} is missing: run npm run build`).toBe(true);
    const r = spawnSync(exe, [], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/^slow_io_limit_test: [1-9]\d* checks, 0 failed$/m);
  });
});

describe('native slowIoUs option and setter (a real Device never started: no ublk needed)', () => {
  const opts: DeviceOptions = {
    mainPath: '/dev/null', sparePath: '/dev/null', queues: 1, depth: 1, blockSize: 4096, sizeBytes: 1n << 20n,
    maxIoBytes: 1 << 16, discard: false, devId: -1, onEvent: () => undefined,
  };

  it('takes a whole number of µs >= 0 (0: off) and refuses anything else with a TypeError naming it', () => {
    const Device = loadNative().Device;
    for (const us of [0, 1, 500_000, 2 ** 53 - 1]) expect(() => new Device({ ...opts, slowIoUs: us }), String(us)).not.toThrow();
    for (const us of [-1, 0.5, Number.NaN, 2 ** 64, '500' as unknown as number]) {
      expect(() => new Device({ ...opts, slowIoUs: us }), String(us)).toThrow(/slowIoUs/);
    }
    const dev = new Device(opts);
    expect(() => dev.setSlowIoUs(250_000)).not.toThrow();
    expect(() => dev.setSlowIoUs(-5)).toThrow(/setSlowIoUs/);
    expect(() => dev.setSlowIoUs(1.5)).toThrow(/setSlowIoUs/);
  });
});
