// The bound on native's slow_io events (native/test/slow_io_limit_test.cc), built by `npm run build` as a
// host executable: at most kSlowIoEventsPerSecond per queue per second, the rest counted on the next event.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

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
