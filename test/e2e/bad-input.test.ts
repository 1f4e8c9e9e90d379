// Bad input against real devices: one line on stderr naming the problem, the right exit code, and no
// device, registry entry or socket left behind. What the CLI and the daemon's checks decide is userspace's
// alone (the O_EXCL claim of a mounted device runs on every kernel in spare-safety.test.ts): primary run only.
import fs from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { addDevice, dmr, must, registryFiles, ublkNodes, type Added } from './helpers.js';
import { primaryKernelOnly, scratchPerTest } from './setup.js';

const s = scratchPerTest();

/** Runs add with `args`, expects exactly `message` (string or pattern) and `code`, and no change. */
function expectRefused(args: string[], code: 1 | 2, message: string | RegExp): void {
  const before = { nodes: ublkNodes(), registry: registryFiles() };
  const r = dmr(...args);
  expect(r.status, r.stderr).toBe(code);
  expect(r.stdout).toBe('');
  expect(r.stderr.endsWith('\n')).toBe(true);
  const lines = r.stderr.slice(0, -1).split('\n');
  expect(lines).toHaveLength(1);
  const line = lines[0] as string;
  if (typeof message === 'string') expect(line).toBe(`dmremap-ublk: ${message}`);
  else expect(line).toMatch(message);
  expect({ nodes: ublkNodes(), registry: registryFiles() }).toEqual(before);
}

primaryKernelOnly('bad input on real devices', () => {
  it('missing device', () => {
    const spare = s.loop(16);
    expectRefused(['add', '--main', '/dev/nonexistent-disk', '--spare', spare], 1, 'main device /dev/nonexistent-disk does not exist');
    expectRefused(['add', '--main', spare, '--spare', '/dev/nonexistent-disk', '--foreground'], 1, 'spare device /dev/nonexistent-disk does not exist');
  });

  it('main equal to spare: same path, and through a symlink', () => {
    const dev = s.loop(16);
    expectRefused(['add', '--main', dev, '--spare', dev], 1, `main and spare are the same device (${dev})`);
    const link = path.join(s.dir, 'alias');
    fs.symlinkSync(dev, link);
    expectRefused(['add', '--main', dev, '--spare', link], 1, `main and spare are the same device (${dev} and ${link})`);
  });

  it('main mounted elsewhere', () => {
    const main = s.loop(64);
    must('mkfs.ext4', ['-q', '-F', main]);
    const mnt = s.mount(main);
    expectRefused(['add', '--main', main, '--spare', s.loop(16)], 1, `main device ${main} is mounted on ${mnt}`);
  });

  it('spare mounted elsewhere (foreground)', () => {
    const spare = s.loop(16);
    must('mkfs.ext4', ['-q', '-F', spare]);
    const mnt = s.mount(spare);
    expectRefused(['add', '--main', s.loop(64), '--spare', spare, '--foreground'], 1, `spare device ${spare} is mounted on ${mnt}`);
  });

  it('main or spare already claimed by another running daemon', () => {
    const main = s.loop(64);
    const spare = s.loop(16);
    const first: Added = addDevice(main, spare, '--name', 'first');
    const desc = `${first.blockPath} (first)`;
    expectRefused(['add', '--main', main, '--spare', s.loop(16)], 1, `main device ${main} is already the main of dmremap-ublk device ${desc}`);
    expectRefused(['add', '--main', s.loop(64), '--spare', spare], 1, `spare device ${spare} is already the spare of dmremap-ublk device ${desc}`);
    expectRefused(['add', '--main', spare, '--spare', s.loop(16)], 1, `main device ${spare} is already the spare of dmremap-ublk device ${desc}`);
    expectRefused(['add', '--main', s.loop(64), '--spare', s.loop(16), '--name', 'first'], 1, `name "first" is already used by ${first.blockPath}`);
    expect(dmr('del', 'first').status).toBe(0);
  });

  it('usage errors: unknown flag, non-numeric sizes, bad block size', () => {
    const main = s.loop(16);
    const spare = s.loop(16);
    const base = ['add', '--main', main, '--spare', spare];
    expectRefused([...base, '--size', '10'], 2, 'unknown option --size for add (see dmremap-ublk add --help)');
    expectRefused([...base, '--max-io', '64k'], 2, '--max-io must be a whole number, got "64k"');
    expectRefused([...base, '--queues', 'two'], 2, '--queues must be a whole number, got "two"');
    expectRefused([...base, '--depth', ''], 2, '--depth must be a whole number, got ""');
    expectRefused([...base, '--block-size', '2048'], 2, '--block-size must be 512 or 4096, got "2048"');
  });

  it('block size smaller than main’s logical block size', () => {
    const main = s.loop(16, 4096);
    expectRefused(['add', '--main', main, '--spare', s.loop(16), '--block-size', '512'], 1, `block size 512 is smaller than main device ${main}'s logical block size 4096`);
  });
});
