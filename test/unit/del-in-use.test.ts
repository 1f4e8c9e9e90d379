// `del` and `down` refuse a device whose own block device is in use (mounted, held by another block device,
// swap; a partition of it included) unless --force, changing nothing; the daemon, told to stop all the same,
// logs a warning naming the mount point. Through the built CLI with the fake addon, whose device ids get a
// sysfs directory and a mount table of the test's making (device/in-use.ts reads them instead of the system's).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readEntries } from '../../src/control/registry.js';
import { inUse } from '../../src/device/claim.js';
import { deletingInUseWarning } from '../../src/device/in-use.js';
import { supervisorOf } from '../../src/supervisor/find.js';
import { cli, killDaemons, makeWorld, pidAlive, REPO, waitFor, type World } from './helpers.js';

let w: World;
let sys: string;
let mountinfo: string;
let swaps: string;
let fake: Record<string, unknown>;

/** Device id `id`'s fake sysfs directory: its devno 259:<id>, no holders. */
function sysfsOf(id: number): string {
  const dir = path.join(sys, `ublkb${id}`);
  fs.mkdirSync(path.join(dir, 'holders'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'dev'), `259:${id}\n`);
  return dir;
}
/** A mountinfo line mounting devno `devno` on `where` (spaces written as the kernel does). */
const mountLine = (devno: string, where: string): string => `36 25 ${devno} / ${where.replace(/ /g, '\\040')} rw,relatime shared:1 - ext4 /dev/x rw\n`;

beforeEach(() => {
  w = makeWorld();
  sys = path.join(w.root, 'sys');
  mountinfo = path.join(w.root, 'mountinfo');
  swaps = path.join(w.root, 'swaps');
  fs.writeFileSync(mountinfo, '');
  fs.writeFileSync(swaps, 'Filename\tType\tSize\tUsed\tPriority\n');
  fake = { features: '0xd8', blockSysfs: { 0: sysfsOf(0), 1: sysfsOf(1) }, mountinfo, swaps };
});
afterEach(() => {
  killDaemons(w);
  w.cleanup();
});

const run = (args: string[]) => cli(w, args, fake);
const node = (id: number): string => path.join(w.devDir, `ublkb${id}`);
const add = (name: string, persist = false): void => {
  const main = w.file(`${name}-main.img`, 8 << 20);
  const spare = w.file(`${name}-spare.img`, 4 << 20);
  const r = run(['add', '--main', main, '--spare', spare, '--name', name, ...(persist ? ['--persist'] : [])]);
  expect([r.status, persist ? '' : r.stderr]).toEqual([0, '']);
};
const liveNames = (): string[] => readEntries(w.runDir).live.map((e) => e.name ?? '');

describe('inUse (claim.ts) over a mount table and sysfs of the test\'s making', () => {
  it('names the mount point (\\040 decoded), the holders, swap, and a partition that is', () => {
    const dir = sysfsOf(0);
    const files = { mountinfo, swaps };
    expect(inUse({ path: '/dev/ublkb0', sysfs: dir }, files)).toBeNull();
    fs.writeFileSync(mountinfo, mountLine('8:1', '/boot') + mountLine('259:0', '/srv/my data'));
    expect(inUse({ path: '/dev/ublkb0', sysfs: dir }, files)).toEqual({ kind: 'mounted', where: '/srv/my data', partition: null, reason: 'is mounted on /srv/my data' });
    fs.writeFileSync(mountinfo, '');
    fs.writeFileSync(path.join(dir, 'holders', 'dm-3'), '');
    expect(inUse({ path: '/dev/ublkb0', sysfs: dir }, files)).toEqual({ kind: 'held', where: '/dev/dm-3', partition: null, reason: 'is held by /dev/dm-3' });
    fs.rmSync(path.join(dir, 'holders', 'dm-3'));
    const part = path.join(dir, 'ublkb0p1');
    fs.mkdirSync(path.join(part, 'holders'), { recursive: true });
    fs.writeFileSync(path.join(part, 'partition'), '1\n');
    fs.writeFileSync(path.join(part, 'dev'), '259:8\n');
    fs.writeFileSync(mountinfo, mountLine('259:8', '/srv'));
    const p = inUse({ path: '/dev/ublkb0', sysfs: dir }, files);
    expect(p).toEqual({ kind: 'mounted', where: '/srv', partition: 'ublkb0p1', reason: 'has partition ublkb0p1, which is mounted on /srv' });
    expect(deletingInUseWarning('/dev/ublkb0', p!)).toBe('deleting /dev/ublkb0 while its partition ublkb0p1 is mounted on /srv: its file system loses its disk; the kernel deletes it only once /srv is unmounted');
  });
});

describe('del of a device in use (built CLI, fake addon)', () => {
  it('is refused while mounted or held, nothing changed; --force deletes it and the daemon warns; unmounted, del deletes it', async () => {
    add('vol');
    const [e] = readEntries(w.runDir).live;
    expect(e?.devId).toBe(0);
    fs.writeFileSync(mountinfo, mountLine('259:0', '/srv'));
    const refused = run(['del', 'vol']);
    expect([refused.status, refused.stdout, refused.stderr]).toEqual([1, '', `dmremap-ublk: ${node(0)} (vol) is mounted on /srv; unmount it first, or use --force to delete it under its users\n`]);
    // Nothing changed: the same daemon serves it, its node is there.
    expect(readEntries(w.runDir).live).toEqual([expect.objectContaining({ name: 'vol', pid: e?.pid })]);
    expect(fs.existsSync(node(0))).toBe(true);
    const json = run(['del', node(0), '--json']);
    expect(json.status).toBe(1);
    expect(JSON.parse(json.stdout)).toEqual({ error: { code: 'E_DEVICE_IN_USE', message: expect.stringMatching(/is mounted on \/srv; unmount it first/) } });
    fs.writeFileSync(mountinfo, '');
    fs.writeFileSync(path.join(sys, 'ublkb0', 'holders', 'dm-3'), '');
    expect(run(['del', '0']).stderr).toBe(`dmremap-ublk: ${node(0)} (vol) is held by /dev/dm-3; remove /dev/dm-3 first, or use --force to delete it under its users\n`);
    fs.rmSync(path.join(sys, 'ublkb0', 'holders', 'dm-3'));
    fs.writeFileSync(mountinfo, mountLine('259:0', '/srv'));
    const forced = run(['del', 'vol', '--force', '--json']);
    expect(forced.status).toBe(0);
    expect(JSON.parse(forced.stdout)).toEqual({ devId: 0, blockPath: node(0), name: 'vol', removed: true });
    expect(readEntries(w.runDir).live).toEqual([]);
    expect(fs.existsSync(node(0))).toBe(false);
    // The daemon did as told, and said what it did.
    const log = fs.readFileSync(path.join(w.logDir, 'vol.log'), 'utf8');
    expect(log).toContain(`"msg":"deleting ${node(0)} while mounted on /srv: its file system loses its disk; the kernel deletes it only once /srv is unmounted"`);
    // Not in use: del needs no --force, and the daemon warns of nothing.
    fs.writeFileSync(mountinfo, mountLine('259:1', '/elsewhere'));
    add('free');
    expect(run(['del', 'free']).status).toBe(0);
    expect(fs.readFileSync(path.join(w.logDir, 'free.log'), 'utf8')).not.toContain('deleting ');
  }, 60_000);

  it('held by a program none of the tables name (its exclusive open fails): refused while served; a quiesced one is not opened', async () => {
    add('ex');
    fake = { ...fake, exclusiveBusy: [0] };
    const refused = run(['del', 'ex']);
    expect([refused.status, refused.stderr]).toEqual([
      1,
      `dmremap-ublk: ${node(0)} (ex) is open exclusively by another program (a file system, journal or export that is not in the mount table as this device); close it first, or use --force to delete it under its users\n`,
    ]);
    expect(readEntries(w.runDir).live.map((e) => e.name)).toEqual(['ex']);
    const [e] = readEntries(w.runDir).live;
    const sup = supervisorOf(e?.pid ?? 0);
    if (sup !== null) process.kill(sup, 'SIGKILL');
    process.kill(e?.pid ?? 0, 'SIGKILL');
    await waitFor(() => !pidAlive(e?.pid ?? 0));
    // Quiesced: its I/O waits for a daemon, so del does not open it; the tables say nothing: deleted.
    expect(run(['del', 'ex']).status).toBe(0);
    expect(fs.existsSync(node(0))).toBe(false);
  }, 60_000);

  it('a quiesced device (its daemon killed) whose file system is mounted is refused too; --force deletes it', async () => {
    add('q');
    const [e] = readEntries(w.runDir).live;
    const sup = supervisorOf(e?.pid ?? 0);
    if (sup !== null) process.kill(sup, 'SIGKILL');
    process.kill(e?.pid ?? 0, 'SIGKILL');
    await waitFor(() => !pidAlive(e?.pid ?? 0));
    expect(readEntries(w.runDir).quiesced.map((q) => q.name)).toEqual(['q']);
    fs.writeFileSync(mountinfo, mountLine('259:0', '/srv'));
    const refused = run(['del', 'q']);
    expect([refused.status, refused.stderr]).toEqual([1, `dmremap-ublk: ${node(0)} (q) is mounted on /srv; unmount it first, or use --force to delete it under its users\n`]);
    expect(readEntries(w.runDir).quiesced.map((q) => q.name)).toEqual(['q']);
    expect(run(['del', 'q', '--force']).status).toBe(0);
    expect(readEntries(w.runDir).quiesced).toEqual([]);
    expect(fs.existsSync(node(0))).toBe(false);
  }, 60_000);
});

describe('down of devices in use (built CLI, fake addon)', () => {
  interface Line {
    name: string | null;
    result: string;
    error: { code: string; message: string } | null;
  }
  const down = (args: string[]): { status: number | null; lines: Line[] } => {
    const r = run(['down', ...args, '--json']);
    return { status: r.status, lines: JSON.parse(r.stdout) as Line[] };
  };

  it('brings the free devices down and reports the one in use (exit 1), which keeps running; --force brings it down', () => {
    add('a', true);
    add('b', true);
    fs.writeFileSync(mountinfo, mountLine('259:1', '/srv'));
    const r = down([]);
    expect(r.status).toBe(1);
    expect(r.lines.map((l) => [l.name, l.result, l.error?.code ?? null])).toEqual([
      ['a', 'down', null],
      ['b', 'failed', 'E_DEVICE_IN_USE'],
    ]);
    expect(r.lines[1]?.error?.message).toBe(`${node(1)} (b) is mounted on /srv; unmount it first, or use --force to delete it under its users`);
    expect(liveNames()).toEqual(['b']);
    // The human output: one line each.
    const text = run(['down', 'b']);
    expect([text.status, text.stdout]).toEqual([1, `b: failed: ${node(1)} (b) is mounted on /srv; unmount it first, or use --force to delete it under its users\n`]);
    const forced = down(['--force']);
    expect([forced.status, forced.lines.map((l) => [l.name, l.result])]).toEqual([0, [['a', 'not-running'], ['b', 'down']]]);
    expect(liveNames()).toEqual([]);
  }, 60_000);

  it('of a device whose unit is enabled refuses before systemctl stop', () => {
    const units = path.join(w.root, 'units');
    const log = path.join(w.root, 'systemctl.log');
    const systemctl = path.join(w.root, 'systemctl');
    fs.writeFileSync(systemctl, `#!/bin/sh\necho "$@" >> ${log}\n`, { mode: 0o755 });
    const env = {
      ...process.env,
      VITEST: 'true',
      DMREMAP_UNIT_DIR: units,
      DMREMAP_UDEV_DIR: path.join(w.root, 'rules'),
      DMREMAP_SYSTEMCTL: systemctl,
      DMREMAP_RUN_DIR: w.runDir,
      DMREMAP_NAME_DIR: w.nameDir,
      DMREMAP_DEVICES_DIR: w.devicesDir,
      DMREMAP_DISK_DIR: w.diskDir,
      DMREMAP_LOG_DIR: w.logDir,
      DMREMAP_FAKE_NATIVE: JSON.stringify({ devDir: w.devDir, ...fake }),
    };
    const go = (args: string[]) => spawnSync(process.execPath, [path.join(REPO, 'bin/dmremap-ublk.js'), ...args], { env, encoding: 'utf8', timeout: 30_000 });
    expect(go(['install-systemd']).status).toBe(0);
    expect(go(['add', '--main', w.main, '--spare', w.spare, '--name', 'svc', '--persist']).status).toBe(0);
    fs.writeFileSync(mountinfo, mountLine('259:0', '/srv'));
    fs.writeFileSync(log, '');
    const r = go(['down', 'svc']);
    expect([r.status, r.stdout]).toEqual([1, `svc: failed: ${node(0)} (svc) is mounted on /srv; unmount it first, or use --force to delete it under its users\n`]);
    expect(fs.readFileSync(log, 'utf8')).toBe('');
    expect(liveNames()).toEqual(['svc']);
    fs.writeFileSync(mountinfo, '');
    expect(go(['down', 'svc']).status).toBe(0);
    expect(fs.readFileSync(log, 'utf8')).toContain('stop dmremap-ublk@svc.service');
  }, 60_000);
});
