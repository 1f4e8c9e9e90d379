// Never format a spare that holds something (DESIGN.md invariant 6): `add` claims main and spare exclusively
// before it reads or writes them, refuses a mounted or held device whatever the flags, and refuses a spare
// region where blkid finds a filesystem, swap or a partition table unless --force-format is given. Every
// refusal is one line, exit 1, and leaves the spare's bytes as they were. What blkid, sfdisk and the CLI decide
// is the same on every kernel: those cases run in the primary run only; the O_EXCL claim of a mounted device
// runs on each kernel.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { addDevice, dmr, must, registryFiles, sh, ublkNodes, waitFor } from './helpers.js';
import { ErrorSources } from './error-sources.js';
import { primaryKernelOnly, scratchPerTest } from './setup.js';

const s = scratchPerTest();

/** blkid -p's fields for `dev` (empty when it finds nothing). */
function blkid(dev: string): Record<string, string> {
  const r = sh('blkid', ['-p', '-o', 'export', dev]);
  const out: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

/**
 * add with `args` is refused: exit 1, exactly `message` as its one line on stderr and `code` in its --json
 * answer; no device or registry entry made, and `spare`'s bytes unchanged. The detached add refuses in its
 * precheck, before any daemon starts; `bothPaths` also runs `--foreground`, where the daemon's own claim and
 * check refuse (the same functions, called from the other place: a few cases run both).
 */
function expectRefused(args: string[], spare: string, code: string, message: string | RegExp, bothPaths = false): void {
  const before = { nodes: ublkNodes(), registry: registryFiles() };
  // The spare's bytes kept whole and compared (a memcmp): hashing them twice cost seconds a call in the TCG VM.
  const bytes = fs.readFileSync(spare);
  for (const extra of bothPaths ? [[], ['--foreground']] : [[]]) {
    const r = dmr('add', ...args, ...extra, '--json');
    expect(r.status, r.stderr).toBe(1);
    const lines = r.stderr.replace(/\n$/, '').split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    if (typeof message === 'string') expect(lines[0]).toBe(`dmremap-ublk: ${message}`);
    else expect(lines[0]).toMatch(message);
    expect((JSON.parse(r.stdout) as { error: { code: string } }).error.code).toBe(code);
  }
  expect({ nodes: ublkNodes(), registry: registryFiles() }).toEqual(before);
  expect(fs.readFileSync(spare).equals(bytes), `${spare}'s bytes changed`).toBe(true);
}

primaryKernelOnly('a spare that holds something is never formatted', () => {
  it('an unmounted ext4: refused, bytes and filesystem intact; --force-format uses it', () => {
    const main = s.loop(64);
    const spare = s.loop(32);
    must('mkfs.ext4', ['-q', '-F', '-L', 'backup', spare]);
    expectRefused(['--main', main, '--spare', spare], spare, 'E_SPARE_IN_USE', `${spare} holds an ext4 filesystem (label "backup"); use --force-format to overwrite it`, true);
    expect(blkid(spare)).toMatchObject({ TYPE: 'ext4', LABEL: 'backup' });
    expect(sh('fsck.ext4', ['-n', '-f', spare]).status).toBe(0);

    const dev = addDevice(main, spare, '--force-format');
    expect(dmr('del', dev.blockPath).status).toBe(0);
    expect(blkid(spare).TYPE).toBeUndefined();
  });

  it('the region at --spare-offset is what is checked', () => {
    const main = s.loop(64);
    const spare = s.loop(64);
    // An ext4 image written 32 MiB into the spare: the region there holds it, the start of the spare does not.
    const img = path.join(s.dir, 'fs.img');
    fs.writeFileSync(img, '');
    fs.truncateSync(img, 16 << 20);
    must('mkfs.ext4', ['-q', '-F', '-L', 'inner', img]);
    must('dd', [`if=${img}`, `of=${spare}`, 'bs=1M', 'seek=32', 'oflag=direct', 'conv=notrunc', 'status=none']);
    expectRefused(['--main', main, '--spare', spare, '--spare-offset', String(32 << 20)], spare, 'E_SPARE_IN_USE',
      `${spare} at offset ${32 << 20} holds an ext4 filesystem (label "inner"); use --force-format to overwrite it`);
    const dev = addDevice(main, spare, '--spare-size', String(32 << 20));
    expect(dmr('del', dev.blockPath).status).toBe(0);
  });

  it('a region past offset 0 inside a filesystem or a partition is refused; free space after the last partition is used', () => {
    const MiB = 1 << 20;
    const main = s.loop(64);
    const spare = s.loop(64);
    const region = (dev: string, offset: number, size: number) => ['--main', main, '--spare', dev, '--spare-offset', String(offset * MiB), '--spare-size', String(size * MiB)];
    // blkid -O at 1 MiB finds nothing there: the filesystem starts at 0 and covers the region.
    must('mkfs.ext4', ['-q', '-F', '-L', 'whole', spare]);
    expectRefused(region(spare, 1, 8), spare, 'E_SPARE_IN_USE', `${spare} at offset ${MiB} overlaps an ext4 filesystem (label "whole") at the start of the device; use --force-format to overwrite it`);
    expect(sh('fsck.ext4', ['-n', '-f', spare]).status).toBe(0);
    // A GPT with one partition from 1 MiB to 33 MiB, on a fresh device (wipefs would leave ext4's backup
    // superblocks, which blkid finds at the offsets below).
    const disk = s.loop(64);
    const r = spawnSync('sfdisk', ['-q', disk], { input: 'label: gpt\nstart=2048, size=65536\n', encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const table = must('sfdisk', ['--json', disk]);
    expectRefused(region(disk, 20, 8), disk, 'E_SPARE_IN_USE', `${disk} at offset ${20 * MiB} overlaps partition ${disk}p1; use --force-format to overwrite it`);
    expectRefused(region(disk, 40, 24), disk, 'E_SPARE_IN_USE', `${disk} at offset ${40 * MiB} overlaps the backup GPT at the end of the device; use --force-format to overwrite it`);
    const dev = addDevice(main, disk, '--spare-offset', String(40 * MiB), '--spare-size', String(16 * MiB));
    expect(dmr('del', dev.blockPath).status).toBe(0);
    expect(must('sfdisk', ['--json', disk])).toBe(table);
  });

  it('a mounted ext4: refused even with --force-format, bytes unchanged, fsck clean after', () => {
    const main = s.loop(64);
    const spare = s.loop(32);
    must('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', spare]);
    const mnt = s.mount(spare);
    fs.writeFileSync(path.join(mnt, 'keep'), 'data that must survive');
    must('sync', []);
    expectRefused(['--main', main, '--spare', spare, '--force-format'], spare, 'E_DEVICE_BUSY', `spare device ${spare} is mounted on ${mnt}`, true);
    s.umount(mnt);
    const fsck = sh('fsck.ext4', ['-n', '-f', spare]);
    expect(fsck.status, fsck.stdout + fsck.stderr).toBe(0);
  });

  it('a GPT or an MBR partition table: refused', () => {
    const main = s.loop(64);
    for (const [label, what] of [
      ['gpt', 'a GPT partition table'],
      ['dos', 'an MBR (dos) partition table'],
    ] as const) {
      const spare = s.loop(32);
      const r = spawnSync('sfdisk', ['-q', spare], { input: `label: ${label}\n,8M\n`, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expectRefused(['--main', main, '--spare', spare], spare, 'E_SPARE_IN_USE', `${spare} holds ${what}; use --force-format to overwrite it`);
    }
  });

  it('swap: refused', () => {
    const spare = s.loop(32);
    must('mkswap', ['-L', 'sw', spare]);
    expectRefused(['--main', s.loop(64), '--spare', spare], spare, 'E_SPARE_IN_USE', `${spare} holds swap space (label "sw"); use --force-format to overwrite it`);
  });

  it('a regular file holding an ext4 image: refused', () => {
    const spare = path.join(s.dir, 'spare.img');
    fs.writeFileSync(spare, '');
    fs.truncateSync(spare, 32 << 20);
    must('mkfs.ext4', ['-q', '-F', spare]);
    expectRefused(['--main', s.loop(64), '--spare', spare], spare, 'E_SPARE_IN_USE', `${spare} holds an ext4 filesystem; use --force-format to overwrite it`);
  });

  it('a spare this program formatted loads again with no flag, and blkid can probe it while it is held', () => {
    const main = s.loop(64);
    const spare = s.loop(32);
    const first = addDevice(main, spare);
    // The daemon holds the spare with O_EXCL; blkid opens it without: it still probes (and finds nothing).
    expect(sh('blkid', ['-p', spare]).status).toBe(2);
    must('dd', ['if=/dev/urandom', `of=${first.blockPath}`, 'bs=4096', 'count=16', 'oflag=direct', 'status=none']);
    expect(dmr('remap', first.blockPath, '8').status).toBe(0);
    const data = sh('dd', [`if=${first.blockPath}`, 'bs=4096', 'count=16', 'iflag=direct', 'status=none']);
    expect(dmr('del', first.blockPath).status).toBe(0);
    const again = addDevice(main, spare);
    const table = dmr('table', again.blockPath, '--json');
    expect(table.status, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/"sector":8\b/);
    const back = sh('dd', [`if=${again.blockPath}`, 'bs=4096', 'count=16', 'iflag=direct', 'status=none']);
    expect(back.stdout).toBe(data.stdout);
    expect(dmr('del', again.blockPath).status).toBe(0);
  });
});

primaryKernelOnly('a device in use is never claimed', () => {
  it('a spare held by a dm linear map: refused, even with --force-format', () => {
    const src = new ErrorSources();
    try {
      const dm = src.dmError(32, []);
      const holder = fs.readdirSync(`/sys/class/block/${path.basename(dm.backing)}/holders`);
      expect(holder).toHaveLength(1);
      expectRefused(['--main', s.loop(64), '--spare', dm.backing, '--force-format'], dm.backing, 'E_DEVICE_BUSY',
        `spare device ${dm.backing} is held by /dev/${holder[0]}`, true);
    } finally {
      src.cleanup();
    }
  });

  it('a whole disk one of whose partitions is mounted: refused, even with --force-format', () => {
    const img = path.join(s.dir, 'disk.img');
    fs.writeFileSync(img, '');
    fs.truncateSync(img, 64 << 20);
    const r = spawnSync('sfdisk', ['-q', img], { input: 'label: dos\n,16M\n', encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const disk = must('losetup', ['-f', '--show', '--partscan', img]).trim();
    const part = `${disk}p1`;
    const mnt = fs.mkdtempSync(path.join(s.dir, 'mnt-'));
    let mounted = false;
    try {
      for (let i = 0; i < 50 && !fs.existsSync(part); i++) spawnSync('sleep', ['0.1']);
      must('mkfs.ext4', ['-q', '-F', part]);
      must('mount', [part, mnt]);
      mounted = true;
      expectRefused(['--main', s.loop(64), '--spare', disk, '--force-format'], disk, 'E_DEVICE_BUSY',
        `spare device ${disk} has partition ${path.basename(part)}, which is mounted on ${mnt}`);
    } finally {
      if (mounted) sh('umount', [mnt]);
      sh('losetup', ['-d', disk]);
    }
  });

  it('a regular file that backs a loop device: refused, even with --force-format', () => {
    const spare = path.join(s.dir, 'spare.img');
    fs.writeFileSync(spare, '');
    fs.truncateSync(spare, 32 << 20);
    const loop = must('losetup', ['-f', '--show', spare]).trim();
    try {
      expectRefused(['--main', s.loop(64), '--spare', spare, '--force-format'], spare, 'E_DEVICE_BUSY', `spare device ${spare} is the backing file of ${loop}`);
    } finally {
      sh('losetup', ['-d', loop]);
    }
  });

  it('a regular file another program holds under flock: refused', async () => {
    const spare = path.join(s.dir, 'spare.img');
    fs.writeFileSync(spare, '');
    fs.truncateSync(spare, 32 << 20);
    const holder = s.spawn('flock', ['--exclusive', spare, 'sleep', '120']);
    // flock(1) holds the lock from before it runs sleep: wait until a non-blocking attempt fails.
    await waitFor('flock to hold the file', () => sh('flock', ['--exclusive', '--nonblock', spare, 'true']).status !== 0, 10_000);
    expectRefused(['--main', s.loop(64), '--spare', spare], spare, 'E_DEVICE_BUSY', `spare device ${spare} is in use (mounted, or held by another program)`);
    holder.kill('SIGKILL');
  });
});

describe('on every kernel: the exclusive claim (O_EXCL) of a device in use', () => {
  it('a mounted main: refused, even with --force-format', () => {
    const main = s.loop(64);
    must('mkfs.ext4', ['-q', '-F', main]);
    const mnt = s.mount(main);
    const spare = s.loop(32);
    expectRefused(['--main', main, '--spare', spare, '--force-format'], spare, 'E_DEVICE_BUSY', `main device ${main} is mounted on ${mnt}`);
  });
});
