// The scanner's native planning and reads (native/test/scan_reader_test.cc), built by `npm run build` as a
// host executable (regular files, no kernel): they count in the unit run and fail it on any failed check.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const exe = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'build', 'Release', 'scan_reader_test');

describe('native scan reader (C++ unit tests)', () => {
  it('passes every check of scan_reader_test', () => {
    expect(fs.existsSync(exe), `${exe} is missing: run npm run build`).toBe(true);
    const r = spawnSync(exe, [], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/^scan_reader_test: [1-9]\d* checks, 0 failed$/m);
  });
});
