// Every kind of bad input gets exactly one line "dmremap-ublk: <what is wrong>" on stderr, the right exit
// code, and leaves nothing behind: no run directory, no registry entry, no socket, no device node.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { Daemon } from '../../src/device/daemon.js';
import type { FakeConfig } from '../../src/testing/fake-native.js';
import { FileSpareIo, RemapStore, mainFingerprint } from '../../src/remap/index.js';
import { captureCtx, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

let w: World;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => w.cleanup());

async function expectRejected(
  args: (w: World) => string[],
  exitCode: 1 | 2,
  message: string | RegExp,
  fake: Partial<FakeConfig> = {},
): Promise<void> {
  const native = fakeFor(w, fake);
  const { ctx, stdout, stderr } = captureCtx(w, native);
  const runBefore = w.runDirEntries();
  const code = await main(args(w), ctx);
  expect(code).toBe(exitCode);
  const lines = stderr().split('\n');
  expect(lines).toHaveLength(2); // one line plus the final newline
  expect(lines[1]).toBe('');
  expect(lines[0]).toMatch(/^dmremap-ublk: /);
  const text = (lines[0] as string).slice('dmremap-ublk: '.length);
  if (typeof message === 'string') expect(text).toBe(message);
  else expect(text).toMatch(message);
  expect(stdout()).toBe('');
  expect(w.runDirEntries()).toEqual(runBefore);
  expect(w.devNodes()).toEqual([]);
  // Nothing was left started in the fake kernel either.
  for (const d of native.devices) expect(d.info().state).toBe('dead');
}

const add = (w: World, ...extra: string[]): string[] => ['add', '--main', w.main, '--spare', w.spare, ...extra];

describe('usage errors (exit 2)', () => {
  it('no command', () => expectRejected(() => [], 2, 'missing command (add, list, status, del, recover, restart, remap, unremap, verify, table, stats, recheck, scan, health, watch, map, message, config, exporter, enable, disable, up, down, install-systemd, demo, logs); see dmremap-ublk --help'));
  it('unknown command', () =>
    expectRejected(() => ['frobnicate'], 2, 'unknown command "frobnicate" (commands: add, list, status, del, recover, restart, remap, unremap, verify, table, stats, recheck, scan, health, watch, map, message, config, exporter, enable, disable, up, down, install-systemd, demo, logs; see dmremap-ublk --help)'));
  it('unknown flag', () =>
    expectRejected((w) => add(w, '--sparse', 'x'), 2, 'unknown option --sparse for add (see dmremap-ublk add --help)'));
  it('unknown flag before the command', () => expectRejected(() => ['--frob'], 2, /^unknown option --frob /));
  it('missing --main', () => expectRejected((w) => ['add', '--spare', w.spare], 2, 'missing required option --main <path>'));
  it('missing --spare', () => expectRejected((w) => ['add', '--main', w.main], 2, 'missing required option --spare <path>'));
  it('flag without its value', () => expectRejected((w) => ['add', '--spare', w.spare, '--main'], 2, 'option --main needs a value'));
  it('value given to a boolean flag', () =>
    expectRejected((w) => add(w, '--foreground=yes'), 2, 'option --foreground takes no value'));
  it('non-numeric --queues', () => expectRejected((w) => add(w, '--queues', 'four'), 2, '--queues must be a whole number, got "four"'));
  it('non-numeric --depth', () => expectRejected((w) => add(w, '--depth', '12k'), 2, '--depth must be a whole number, got "12k"'));
  it('non-numeric --max-io', () => expectRejected((w) => add(w, '--max-io', '1.5'), 2, '--max-io must be a whole number, got "1.5"'));
  it('negative number', () => expectRejected((w) => add(w, '--depth=-1'), 2, '--depth must be a whole number, got "-1"'));
  it('--queues out of range', () => expectRejected((w) => add(w, '--queues', '0'), 2, '--queues must be from 1 to 16, got 0'));
  it('--depth out of range', () => expectRejected((w) => add(w, '--depth', '5000'), 2, '--depth must be from 1 to 4096, got 5000'));
  it('--max-io not a multiple of 4', () =>
    expectRejected((w) => add(w, '--max-io', '6'), 2, '--max-io must be from 4 to 1024, a multiple of 4, got 6'));
  it('bad --buffers', () => expectRejected((w) => add(w, '--buffers', 'fast'), 2, '--buffers must be auto, copy or zero-copy, got "fast"'));
  it('bad block size', () => expectRejected((w) => add(w, '--block-size', '1024'), 2, '--block-size must be 512 or 4096, got "1024"'));
  it('bad name', () =>
    expectRejected((w) => add(w, '--name', 'my disk'), 2, /^--name must start with a letter and hold at most 64/));
  it('name that looks like a device id', () =>
    expectRejected((w) => add(w, '--name', 'ublkb3'), 2, '--name must not look like a device id (ublkN, ublkbN, ublkcN)'));
  it('empty --main', () => expectRejected((w) => ['add', '--main', '', '--spare', w.spare], 2, '--main must not be empty'));
  it('positional argument to add', () =>
    expectRejected((w) => [...add(w), 'extra'], 2, 'unexpected argument "extra" for add (see dmremap-ublk add --help)'));
  it('status without a device', () =>
    expectRejected(() => ['status'], 2, 'missing device to status (a /dev/ublkbN path, device id or name)'));
  it('del with two devices', () => expectRejected(() => ['del', 'a', 'b'], 2, 'del takes one device, got 2'));
  it('list with an argument', () => expectRejected(() => ['list', 'x'], 2, /^unexpected argument "x" for list/));
  it('recheck without a device', () => expectRejected(() => ['recheck'], 2, /^recheck takes a device and optional sectors/));
  it('add --persist without --name', () =>
    expectRejected((w) => add(w, '--persist'), 2, '--persist needs --name (the record and /dev/dmremap/<name> are named by it)'));
  it('add --persist --foreground', () =>
    expectRejected((w) => add(w, '--persist', '--name', 'x', '--foreground'), 2, /^--persist is for a detached add/));
  it('enable without a device', () => expectRejected(() => ['enable'], 2, 'missing device to enable (a /dev/ublkbN path, device id or name)'));
  it('disable with two devices', () => expectRejected(() => ['disable', 'a', 'b'], 2, 'disable takes one device, got 2'));
  it('up with an unknown option', () => expectRejected(() => ['up', '--all'], 2, 'unknown option --all for up (see dmremap-ublk up --help)'));
  it('up --foreground with two names', () => expectRejected(() => ['up', '--foreground', 'a', 'b'], 2, 'up --foreground takes one device name, got 2'));
  it('install-systemd with an argument', () => expectRejected(() => ['install-systemd', 'x'], 2, /^unexpected argument "x" for install-systemd/));
  it('install-systemd with an empty --prefix', () => expectRejected(() => ['install-systemd', '--prefix', ''], 2, '--prefix must not be empty'));
  it('recheck with a bad sector', () => expectRejected(() => ['recheck', 'data', '12', 'x'], 2, 'sector must be a whole number of 512-byte sectors, got "x"'));
});

describe('run-time errors (exit 1), detached and foreground', () => {
  for (const fg of [[], ['--foreground']]) {
    const mode = fg.length ? 'foreground' : 'detached';
    it(`missing main device (${mode})`, () =>
      expectRejected((w) => ['add', '--main', path.join(w.root, 'nope'), '--spare', w.spare, ...fg], 1, /^main device \/.*\/nope does not exist$/));
    it(`missing spare device (${mode})`, () =>
      expectRejected((w) => ['add', '--main', w.main, '--spare', path.join(w.root, 'nope'), ...fg], 1, /^spare device \/.*\/nope does not exist$/));
    it(`main equal to spare (${mode})`, () =>
      expectRejected((w) => ['add', '--main', w.main, '--spare', w.main, ...fg], 1, `main and spare are the same device (${w.main})`));
    it(`no ublk driver (${mode})`, () =>
      expectRejected((w) => add(w, ...fg), 1, '/dev/ublk-control is not available (ENOENT); load the driver: modprobe ublk_drv', {
        controlAvailable: false,
      }));
  }

  it('main equal to spare through a symlink', async () => {
    const link = path.join(w.root, 'link');
    fs.symlinkSync(w.main, link);
    await expectRejected((w) => ['add', '--main', w.main, '--spare', link], 1, `main and spare are the same device (${w.main} and ${link})`);
  });
  it('main equal to spare through a hard link', async () => {
    const hard = path.join(w.root, 'hard');
    fs.linkSync(w.main, hard);
    await expectRejected((w) => ['add', '--main', hard, '--spare', w.main], 1, `main and spare are the same device (${hard} and ${w.main})`);
  });
  it('main equal to spare through a relative path', async () => {
    const rel = path.relative(process.cwd(), w.main);
    await expectRejected((w) => ['add', '--main', rel, '--spare', w.main], 1, `main and spare are the same device (${w.main})`);
  });
  it('a directory as main', () =>
    expectRejected((w) => ['add', '--main', w.root, '--spare', w.spare], 1, `main device ${w.root} is not a block device or a regular file`));
  it.skipIf(process.getuid?.() === 0)('an unreadable device', async () => {
    fs.chmodSync(w.spare, 0o400);
    await expectRejected((w) => add(w), 1, `spare device ${w.spare} cannot be opened for reading and writing (EACCES)`);
  });
  it('main smaller than one block', async () => {
    const tiny = w.file('tiny.img', 100);
    await expectRejected((w) => ['add', '--main', tiny, '--spare', w.spare], 1, `main device ${tiny} is smaller than one block (512 bytes)`);
  });
  it('block size below main’s logical block size', () =>
    expectRejected((w) => add(w, '--block-size', '512'), 1, `block size 512 is smaller than main device ${w.main}'s logical block size 4096`, {
      logicalBlockSize: 4096,
    }));
  it('--buffers zero-copy on a kernel without UBLK_F_AUTO_BUF_REG', () =>
    expectRejected((w) => add(w, '--buffers', 'zero-copy'), 1, '--buffers zero-copy needs a kernel with UBLK_F_AUTO_BUF_REG (Linux 6.16 or later)'));
  it('no access to /dev/ublk-control', () =>
    expectRejected((w) => add(w), 1, '/dev/ublk-control: permission denied (run as root)', { controlAvailable: false, controlErrno: 13 }));
  it('device in use (exclusive open fails with EBUSY)', () =>
    expectRejected((w) => add(w, '--foreground'), 1, `main device ${w.main} is in use (mounted, or held by another program)`, {
      busy: [w.main],
    }));
  it('spare in use', () =>
    expectRejected((w) => add(w, '--foreground'), 1, `spare device ${w.spare} is in use (mounted, or held by another program)`, {
      busy: [w.spare],
    }));
  it('kernel refuses START_DEV: the added device is deleted again', () =>
    expectRejected((w) => add(w, '--foreground'), 1, 'cannot start the ublk device: START_DEV: invalid argument (EINVAL)', {
      failStart: 'EINVAL',
    }));
  it('status of an unknown device', () => expectRejected(() => ['status', 'nosuch'], 1, 'no dmremap-ublk device "nosuch"'));
  it('del of an unknown device', () => expectRejected(() => ['del', '/dev/ublkb9'], 1, 'no dmremap-ublk device "/dev/ublkb9"'));
});

describe('devices another daemon already serves', () => {
  let daemon: Daemon;
  beforeEach(async () => {
    const other = w.file('other.img', 4 << 20);
    daemon = await Daemon.start(
      { mainPath: w.main, sparePath: other, name: 'first', queues: 1, depth: 16, blockSize: undefined, maxIoBytes: 512 << 10, buffers: 'auto' },
      { native: fakeFor(w), runDir: w.runDir, log: quietLog(), logFile: null },
    );
  });
  afterEach(async () => {
    await daemon.shutdown('test done');
  });

  async function expectRefused(args: string[], message: string): Promise<void> {
    const { ctx, stderr } = captureCtx(w, fakeFor(w));
    const before = { run: w.runDirEntries(), dev: w.devNodes() };
    expect(await main(args, ctx)).toBe(1);
    expect(stderr()).toBe(`dmremap-ublk: ${message}\n`);
    expect({ run: w.runDirEntries(), dev: w.devNodes() }).toEqual(before);
  }

  it('refuses its main as a new main', () =>
    expectRefused(add(w, '--foreground'), `main device ${w.main} is already the main of dmremap-ublk device ${daemon.info.blockPath} (first)`));
  it('refuses its main as a new spare', async () => {
    const m2 = w.file('m2.img', 4 << 20);
    await expectRefused(['add', '--main', m2, '--spare', w.main], `spare device ${w.main} is already the main of dmremap-ublk device ${daemon.info.blockPath} (first)`);
  });
  it('refuses a name already taken', async () => {
    const m2 = w.file('m2.img', 4 << 20);
    await expectRefused(['add', '--main', m2, '--spare', w.spare, '--name', 'first'], `name "first" is already used by ${daemon.info.blockPath}`);
  });
});

describe('spare region and spare metadata on add', () => {
  it('--spare-offset not a multiple of 4096', () =>
    expectRejected((w) => add(w, '--spare-offset', '100'), 2, '--spare-offset must be a multiple of 4096 bytes, got 100'));
  it('non-numeric --spare-size', () =>
    expectRejected((w) => add(w, '--spare-size', '1M'), 2, '--spare-size must be a whole number of bytes, got "1M"'));
  it('--spare-size 0', () => expectRejected((w) => add(w, '--spare-size', '0'), 2, /^--spare-size must be at least 1/));
  it('a spare region too small for its metadata', () =>
    expectRejected((w) => add(w, '--foreground', '--spare-size', '16384'), 1, /^spare region of 16384 bytes is too small: its metadata and one 512-byte slot need \d+ bytes$/));
  it('a spare region beyond the end of the spare', () =>
    expectRejected((w) => add(w, '--foreground', '--spare-offset', String(8 << 20)), 1, /^spare region \[8388608, end\) does not fit in the spare device \(4194304 bytes\)$/));
  it('a spare of another main device: refused, not one byte changed', async () => {
    const io = await FileSpareIo.open(w.spare);
    await RemapStore.open(io, { main: { size: BigInt(8 << 20), fingerprint: mainFingerprint('another disk') }, blockSize: 512, journalRecords: 4 });
    await io.close();
    const before = fs.readFileSync(w.spare);
    await expectRejected((w) => add(w, '--foreground'), 1, /^the spare holds the remap table of another main device .*; use --force-format to take it over$/);
    expect(fs.readFileSync(w.spare).equals(before)).toBe(true);
  });
});
