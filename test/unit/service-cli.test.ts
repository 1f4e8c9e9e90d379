// Devices that come back, through the built CLI with the fake addon (its kernel keeps devices across
// processes, with user recovery): add --persist, down/up (idempotent, a missing disk skipped, a quiesced
// device recovered, a bad record reported), enable/disable; `up --foreground` as the systemd unit runs it,
// telling a bound notification socket READY=1 once /dev/dmremap/<name> exists; install-systemd, and
// systemd-analyze verify on the units it writes.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readEntries } from '../../src/control/registry.js';
import { DAEMON_THREADPOOL_SIZE } from '../../src/supervisor/child-process.js';
import { supervisorOf } from '../../src/supervisor/find.js';
import { cli, cliEnv, cliSpawn, killDaemons, makeWorld, pidAlive, REPO, waitFor, type World } from './helpers.js';
import { IN_CI } from './promtool.js';

const FAKE = { features: '0xd8' }; // user recovery: a killed daemon leaves its device quiesced
let w: World;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => {
  killDaemons(w);
  w.cleanup();
});

interface Line {
  name: string | null;
  record: string;
  result: string;
  blockPath: string | null;
  error: { code: string; message: string } | null;
}
const run = (args: string[]) => cli(w, args, FAKE);
const lines = (args: string[]): { status: number | null; lines: Line[] } => {
  const r = run([...args, '--json']);
  return { status: r.status, lines: JSON.parse(r.stdout) as Line[] };
};
const results = (ls: Line[]): Record<string, string> => Object.fromEntries(ls.map((l) => [l.name ?? path.basename(l.record), l.result]));

describe('persist, up, down (built CLI, fake addon)', () => {
  it('down keeps the records, up brings them back (again: already up), a quiesced one is recovered, a missing disk skipped', async () => {
    const main2 = w.file('main2.img', 8 << 20);
    const spare2 = w.file('spare2.img', 4 << 20);
    const a = run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--persist']);
    expect([a.status, a.stdout]).toEqual([0, `${path.join(w.devDir, 'ublkb0')}\n`]);
    expect(a.stderr).toContain(`a: recorded in ${path.join(w.devicesDir, 'a.json')}`);
    const b = run(['add', '--main', main2, '--spare', spare2, '--name', 'b', '--persist', '--json']);
    expect(JSON.parse(b.stdout)).toMatchObject({ devId: 1, name: 'b', record: path.join(w.devicesDir, 'b.json'), systemd: { enabled: false } });
    // A remap made now is still there after down and up (it lives on the spare).
    expect(run(['remap', 'a', '8']).status).toBe(0);
    expect(fs.readlinkSync(path.join(w.nameDir, 'a'))).toBe(path.join(w.devDir, 'ublkb0'));
    // The names udev's rule reads (90-dmremap-ublk.rules), removed with the devices.
    expect(fs.readFileSync(path.join(w.runDir, '0.name'), 'utf8')).toBe('a\n');
    expect(fs.readFileSync(path.join(w.runDir, '1.name'), 'utf8')).toBe('b\n');

    const down = lines(['down']);
    expect([down.status, results(down.lines)]).toEqual([0, { a: 'down', b: 'down' }]);
    expect(w.devNodes()).toEqual([]);
    expect(fs.readdirSync(w.nameDir)).toEqual([]);
    expect(w.runDirEntries().filter((n) => n.endsWith('.name'))).toEqual([]);
    expect(fs.readdirSync(w.devicesDir).sort()).toEqual(['a.json', 'b.json']);
    expect(results(lines(['down']).lines)).toEqual({ a: 'not-running', b: 'not-running' });

    const up = run(['up']);
    expect(up.status).toBe(0);
    expect(up.stdout).toBe(`a: up ${path.join(w.devDir, 'ublkb0')}\nb: up ${path.join(w.devDir, 'ublkb1')}\n`);
    expect(JSON.parse(run(['table', '/'.concat(path.relative('/', path.join(w.nameDir, 'a'))), '--json']).stdout)).toMatchObject({ entries: [expect.objectContaining({ block: 8 })] });
    expect(results(lines(['up']).lines)).toEqual({ a: 'already-up', b: 'already-up' });

    // b's daemon and supervisor die: its device waits, quiesced; up recovers it (not added again).
    const [, eb] = readEntries(w.runDir).live;
    const sup = supervisorOf(eb?.pid ?? 0);
    if (sup !== null) process.kill(sup, 'SIGKILL');
    process.kill(eb?.pid ?? 0, 'SIGKILL');
    await waitFor(() => !pidAlive(eb?.pid ?? 0));
    expect(readEntries(w.runDir).quiesced.map((e) => e.name)).toEqual(['b']);
    const rec = lines(['up', 'b']);
    expect([rec.status, rec.lines]).toEqual([0, [expect.objectContaining({ name: 'b', result: 'recovered', blockPath: path.join(w.devDir, 'ublkb1') })]]);
    expect(w.devNodes()).toEqual(['ublkb0', 'ublkb1', 'ublkc0', 'ublkc1']);

    // a's main is gone: a is reported and skipped, b still comes up; a bad record is reported by file.
    expect(results(lines(['down']).lines)).toEqual({ a: 'down', b: 'down' });
    fs.renameSync(w.main, `${w.main}.away`);
    fs.writeFileSync(path.join(w.devicesDir, 'zz.json'), '{"version": 1, "name": "zz"}');
    const partial = run(['up']);
    expect(partial.status).toBe(1);
    expect(partial.stdout).toBe(
      `${path.join(w.devicesDir, 'zz.json')}: invalid record: main: Invalid input: expected object, received undefined\n` +
        `a: failed: main ${w.main} is missing\n` +
        `b: up ${path.join(w.devDir, 'ublkb0')}\n`,
    );
    expect(lines(['up', 'nosuch']).lines).toEqual([expect.objectContaining({ name: 'nosuch', result: 'failed', error: expect.objectContaining({ code: 'E_NOT_FOUND' }) })]);

    // disable: the device keeps running, and up no longer knows it.
    fs.rmSync(path.join(w.devicesDir, 'zz.json'));
    const dis = run(['disable', 'b']);
    expect([dis.status, dis.stdout]).toEqual([0, `b: disabled, record ${path.join(w.devicesDir, 'b.json')}\n`]);
    expect(readEntries(w.runDir).live.map((e) => e.name)).toEqual(['b']);
    expect(results(lines(['up']).lines)).toEqual({ a: 'failed' });
    expect(run(['disable', 'b']).stderr).toBe('dmremap-ublk: no dmremap-ublk device "b"\n');
  }, 90_000);

  it('enable records a running device from what it runs with; refuses an unnamed one; conflicting records refused', () => {
    run(['add', '--main', w.main, '--spare', w.spare, '--name', 'vol', '--queues', '2', '--read-retries', '6']);
    const en = run(['enable', path.join(w.devDir, 'ublkb0'), '--json']);
    expect(en.stderr).toBe('');
    expect(JSON.parse(en.stdout)).toMatchObject({ name: 'vol', enabled: true, main: w.main, spare: w.spare });
    const rec = JSON.parse(fs.readFileSync(path.join(w.devicesDir, 'vol.json'), 'utf8')) as Record<string, unknown>;
    expect(rec).toMatchObject({ version: 1, name: 'vol', queues: 2, depth: 128, maxIoKib: 512, policy: expect.objectContaining({ readRetries: 6 }) });
    // Idempotent; the same name for other disks is refused.
    expect(run(['enable', 'vol']).status).toBe(0);
    const main2 = w.file('main2.img', 8 << 20);
    const spare2 = w.file('spare2.img', 4 << 20);
    run(['add', '--main', main2, '--spare', spare2]);
    const unnamed = run(['enable', '1']);
    expect([unnamed.status, unnamed.stderr]).toEqual([2, `dmremap-ublk: ${path.join(w.devDir, 'ublkb1')} has no name: only a device added with --name can be recorded (del it and add it again with --name and --persist)\n`]);
    expect(run(['enable', 'nosuch']).stderr).toBe('dmremap-ublk: no dmremap-ublk device "nosuch"\n');
    const bad = run(['add', '--main', w.main, '--spare', spare2, '--name', 'other', '--persist']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/main\.img is already recorded for device "vol" \(disable it first\)\n$/);
    expect(w.devNodes()).toEqual(['ublkb0', 'ublkb1', 'ublkc0', 'ublkc1']);
  }, 60_000);
});

describe('the systemd unit\'s ExecStart (up --foreground) and install-systemd', () => {
  it('READY=1 reaches the notification socket once the device is live and /dev/dmremap/<name> exists; SIGTERM deletes it', async () => {
    const rec = run(['add', '--main', w.main, '--spare', w.spare, '--name', 'svc', '--persist']);
    expect(rec.status).toBe(0);
    expect(run(['down', 'svc']).status).toBe(0);
    const link = path.join(w.nameDir, 'svc');
    const sock = path.join(w.root, 'notify.sock');
    const recv = spawn('python3', [path.join(REPO, 'test/unit/notify-receiver.py'), sock, link, '20'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let got = '';
    recv.stdout.on('data', (d: Buffer) => (got += d.toString()));
    await waitFor(() => got.startsWith('bound\n'));
    const daemon = spawn(process.execPath, [path.join(REPO, 'bin/dmremap-ublk.js'), 'up', '--foreground', 'svc'], {
      env: { ...process.env, VITEST: 'true', NOTIFY_SOCKET: sock, DMREMAP_RUN_DIR: w.runDir, DMREMAP_NAME_DIR: w.nameDir, DMREMAP_DEVICES_DIR: w.devicesDir, DMREMAP_DISK_DIR: w.diskDir, DMREMAP_FAKE_NATIVE: JSON.stringify({ devDir: w.devDir, ...FAKE }) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    await waitFor(() => got.includes('READY=1'), 15_000);
    const first = JSON.parse(got.split('\n')[1] ?? '{}') as { text: string; linked: boolean };
    expect(first.linked).toBe(true);
    expect(first.text).toBe(`READY=1\nMAINPID=${daemon.pid}\nSTATUS=serving ${path.join(w.devDir, 'ublkb0')} (svc), 0 remaps`);
    expect(readEntries(w.runDir).live).toEqual([expect.objectContaining({ name: 'svc', pid: daemon.pid })]);
    // A second start of the unit while it runs is refused (it never adds the device twice).
    const again = run(['up', '--foreground', 'svc']);
    expect([again.status, again.stderr]).toEqual([73, `dmremap-ublk: svc is already up (${path.join(w.devDir, 'ublkb0')}, daemon pid ${daemon.pid}, not run by this command): "dmremap-ublk down svc" first\n`]);
    const exited = new Promise<number | null>((r) => daemon.on('exit', (code) => r(code)));
    daemon.kill('SIGTERM');
    expect(await exited).toBe(0);
    await waitFor(() => got.includes('STOPPING=1'));
    expect(got).toContain('"text": "STOPPING=1\\nSTATUS=stopping (signal SIGTERM)"');
    expect(w.devNodes()).toEqual([]);
    expect(fs.existsSync(path.join(w.nameDir, 'svc'))).toBe(false);
    recv.kill();
  }, 60_000);

  it('up --foreground recovers a quiesced device (a restarted unit), and refuses what it cannot serve', async () => {
    run(['add', '--main', w.main, '--spare', w.spare, '--name', 'svc', '--persist']);
    const [e] = readEntries(w.runDir).live;
    const sup = supervisorOf(e?.pid ?? 0);
    if (sup !== null) process.kill(sup, 'SIGKILL');
    process.kill(e?.pid ?? 0, 'SIGKILL');
    await waitFor(() => !pidAlive(e?.pid ?? 0));
    const daemon = cliSpawn(w, ['up', '--foreground', 'svc'], FAKE);
    await waitFor(() => readEntries(w.runDir).live.some((x) => x.pid === daemon.pid), 15_000);
    expect(w.devNodes()).toEqual(['ublkb0', 'ublkc0']);
    expect(fs.readlinkSync(path.join(w.nameDir, 'svc'))).toBe(path.join(w.devDir, 'ublkb0'));
    const exited = new Promise<number | null>((r) => daemon.on('exit', (code) => r(code)));
    daemon.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(run(['up', '--foreground']).stderr).toBe('dmremap-ublk: up --foreground takes one device name, got 0\n');
    expect(run(['up', '--foreground', 'nosuch']).stderr).toBe(`dmremap-ublk: no device record named "nosuch" in ${w.devicesDir}\n`);
  }, 60_000);

  it('install-systemd writes the units and the udev rule (idempotent), reloads through systemctl; enable/disable then enable/disable the instance', () => {
    const units = path.join(w.root, 'units');
    const rules = path.join(w.root, 'rules');
    const log = path.join(w.root, 'systemctl.log');
    const fake = path.join(w.root, 'systemctl');
    fs.writeFileSync(fake, `#!/bin/sh\necho "$@" >> ${log}\n`, { mode: 0o755 });
    const env = { DMREMAP_UNIT_DIR: units, DMREMAP_UDEV_DIR: rules, DMREMAP_SYSTEMCTL: fake };
    const install = (args: string[]) => spawnSync(process.execPath, [path.join(REPO, 'bin/dmremap-ublk.js'), 'install-systemd', ...args], { env: { ...process.env, ...env }, encoding: 'utf8' });
    const inst = install(['--json']);
    expect(inst.stderr).toBe('');
    const files = [path.join(units, 'dmremap-ublk@.service'), path.join(units, 'dmremap-ublk.target'), path.join(rules, '90-dmremap-ublk.rules')];
    expect(JSON.parse(inst.stdout)).toEqual({ reloaded: true, kept: [], files: files.map((file) => ({ file, changed: true, action: 'written' })) });
    const unit = fs.readFileSync(path.join(units, 'dmremap-ublk@.service'), 'utf8');
    expect(unit).toContain(`\nExecStart=${process.execPath} ${path.join(REPO, 'bin/dmremap-ublk.js')} up --foreground %i\n`);
    expect(unit).toMatch(/\nType=notify\n/);
    // systemd starts the daemon itself: the pool size the supervisor gives its children is in the unit.
    expect(unit).toContain(`\nEnvironment=UV_THREADPOOL_SIZE=${DAEMON_THREADPOOL_SIZE}\n`);
    // Written from bin/spawn-env.js's value; the shipped file (verified as it is) says the same.
    expect(fs.readFileSync(path.join(REPO, 'scripts/systemd/dmremap-ublk@.service'), 'utf8')).toContain(`\nEnvironment=UV_THREADPOOL_SIZE=${DAEMON_THREADPOOL_SIZE}\n`);
    expect(fs.readFileSync(path.join(rules, '90-dmremap-ublk.rules'), 'utf8')).toMatch(/KERNEL=="ublkb\[0-9\]\*".*SYMLINK\+="dmremap\/%c"/);
    expect(install([]).stdout).toBe(`${files.map((f) => `${f}: unchanged`).join('\n')}\nsystemd reloaded, dmremap-ublk.target enabled; "dmremap-ublk enable <name>" enables a device's unit\n`);
    expect(fs.readFileSync(log, 'utf8')).toBe('daemon-reload\nenable dmremap-ublk.target\ndaemon-reload\nenable dmremap-ublk.target\n');
    // --prefix: a root being prepared; nothing is reloaded.
    const root = path.join(w.root, 'root');
    expect(install(['--prefix', root]).stdout).toMatch(new RegExp(`${root}/etc/systemd/system/dmremap-ublk@\\.service: written\n.*${root}/etc/udev/rules\\.d/90-dmremap-ublk\\.rules: written\ninstalled under ${root}: nothing reloaded\n$`, 's'));
    expect(fs.readFileSync(log, 'utf8').split('\n')).toHaveLength(5);

    const withUnits = (args: string[]) =>
      spawnSync(process.execPath, [path.join(REPO, 'bin/dmremap-ublk.js'), ...args], {
        env: { ...process.env, ...env, VITEST: 'true', DMREMAP_RUN_DIR: w.runDir, DMREMAP_NAME_DIR: w.nameDir, DMREMAP_DEVICES_DIR: w.devicesDir, DMREMAP_DISK_DIR: w.diskDir, DMREMAP_FAKE_NATIVE: JSON.stringify({ devDir: w.devDir, ...FAKE }) },
        encoding: 'utf8',
      });
    const add = withUnits(['add', '--main', w.main, '--spare', w.spare, '--name', 'vol', '--persist']);
    expect(add.stderr).toContain('vol: recorded in');
    expect(add.stderr).toContain('(systemd: dmremap-ublk@vol.service enabled)');
    expect(withUnits(['disable', 'vol']).stdout).toBe(`vol: disabled, record ${path.join(w.devicesDir, 'vol.json')}\n`);
    expect(withUnits(['enable', 'vol']).stdout).toBe(`vol: enabled, record ${path.join(w.devicesDir, 'vol.json')} (systemd: dmremap-ublk@vol.service enabled)\n`);
    expect(fs.readFileSync(log, 'utf8').split('\n').slice(4)).toEqual(['enable dmremap-ublk@vol.service', 'disable dmremap-ublk@vol.service', 'enable dmremap-ublk@vol.service', '']);
  }, 60_000);

  it('install-systemd keeps a unit, target or udev rule edited here (one line; --json lists it), --force replaces it; an earlier version\'s unedited file is replaced', () => {
    const root = path.join(w.root, 'root');
    const install = (args: string[]) => spawnSync(process.execPath, [path.join(REPO, 'bin/dmremap-ublk.js'), 'install-systemd', '--prefix', root, ...args], { encoding: 'utf8' });
    expect(install([]).status).toBe(0);
    const unit = path.join(root, 'etc/systemd/system/dmremap-ublk@.service');
    const target = path.join(root, 'etc/systemd/system/dmremap-ublk.target');
    const rule = path.join(root, 'etc/udev/rules.d/90-dmremap-ublk.rules');
    const written = fs.readFileSync(unit, 'utf8');
    expect(written).toMatch(/^# Written by dmremap-ublk install-systemd; sha256 of the lines below: [0-9a-f]{64} /);
    // An admin edits the unit and the rule.
    const editedUnit = written.replace('TimeoutStartSec=180', 'TimeoutStartSec=600');
    fs.writeFileSync(unit, editedUnit);
    fs.writeFileSync(rule, `${fs.readFileSync(rule, 'utf8')}# local addition\n`);
    const again = install([]);
    expect(again.status).toBe(0);
    expect(again.stdout).toBe(
      `${unit}: kept: edited here (it differs from what install-systemd wrote); left as it is ("dmremap-ublk install-systemd --force" replaces it)\n` +
        `${target}: unchanged\n` +
        `${rule}: kept: edited here (it differs from what install-systemd wrote); left as it is ("dmremap-ublk install-systemd --force" replaces it)\n` +
        `installed under ${root}: nothing reloaded\n`,
    );
    expect(fs.readFileSync(unit, 'utf8')).toBe(editedUnit);
    expect(JSON.parse(install(['--json']).stdout)).toEqual({
      reloaded: false,
      kept: [unit, rule],
      files: [
        { file: unit, changed: false, action: 'kept' },
        { file: target, changed: false, action: 'unchanged' },
        { file: rule, changed: false, action: 'kept' },
      ],
    });
    // An admin's own file (no mark) is kept too.
    fs.writeFileSync(target, '[Unit]\nDescription=mine\n');
    expect(JSON.parse(install(['--json']).stdout).kept).toEqual([unit, target, rule]);
    // --force replaces them all.
    expect(JSON.parse(install(['--force', '--json']).stdout).files.map((f: { action: string }) => f.action)).toEqual(['written', 'written', 'written']);
    expect(fs.readFileSync(unit, 'utf8')).toBe(written);
    expect(JSON.parse(install(['--json']).stdout).kept).toEqual([]);
    // A unit an earlier version wrote (before the mark line; its own ExecStart), unedited, is this program's to replace.
    fs.copyFileSync(path.join(REPO, 'test/unit/fixtures/units-8855ced/dmremap-ublk@.service'), unit);
    expect(JSON.parse(install(['--json']).stdout).files[0]).toEqual({ file: unit, changed: true, action: 'written' });
    expect(fs.readFileSync(unit, 'utf8')).toBe(written);
    // ... but one an earlier version wrote and an admin then edited is kept.
    fs.writeFileSync(unit, fs.readFileSync(path.join(REPO, 'test/unit/fixtures/units-8855ced/dmremap-ublk@.service'), 'utf8').replace('RestartSec=2', 'RestartSec=5'));
    expect(JSON.parse(install(['--json']).stdout).kept).toEqual([unit]);
  }, 60_000);

  const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' }).status === 0;
  it.skipIf(!analyze && !IN_CI)('systemd-analyze verify passes on the installed units (no systemd as PID 1 needed: --man=no)', () => {
    expect(analyze, 'systemd-analyze is missing (apt-get install systemd)').toBe(true);
    const root = path.join(w.root, 'root');
    const units = path.join(root, 'etc/systemd/system');
    const inst = spawnSync(process.execPath, [path.join(REPO, 'bin/dmremap-ublk.js'), 'install-systemd', '--prefix', root], { encoding: 'utf8' });
    expect(inst.status).toBe(0);
    const v = spawnSync('systemd-analyze', ['verify', '--man=no', path.join(units, 'dmremap-ublk@data.service'), path.join(units, 'dmremap-ublk.target')], { cwd: units, encoding: 'utf8' });
    expect(v.stderr).toBe('');
    expect(v.status).toBe(0);
    // The check can fail: a unit it cannot parse is reported.
    fs.writeFileSync(path.join(units, 'broken@.service'), fs.readFileSync(path.join(units, 'dmremap-ublk@.service'), 'utf8').replace('Type=notify', 'Type=notifyy'));
    const bad = spawnSync('systemd-analyze', ['verify', '--man=no', path.join(units, 'broken@data.service')], { cwd: units, encoding: 'utf8' });
    expect(bad.stderr).toMatch(/Failed to parse service type/);
  });
});

describe('review: devices that come back (stale names, wrong devices)', () => {
  it('a named device whose daemon died and whose device is reaped leaves no /dev/dmremap/<name> or <N>.name to point at the next device', async () => {
    // No user recovery (features 0xc2): a killed daemon's device is gone, and the next add reaps it.
    const a = cli(w, ['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--persist']);
    expect(a.status).toBe(0);
    const [e] = readEntries(w.runDir).live;
    const sup = supervisorOf(e?.pid ?? 0);
    if (sup !== null) process.kill(sup, 'SIGKILL');
    process.kill(e?.pid ?? 0, 'SIGKILL');
    await waitFor(() => !pidAlive(e?.pid ?? 0));
    const main2 = w.file('main2.img', 8 << 20);
    const spare2 = w.file('spare2.img', 4 << 20);
    // Another, unnamed device: the kernel gives it the number a's device had.
    const b = cli(w, ['add', '--main', main2, '--spare', spare2]);
    expect([b.status, b.stdout]).toEqual([0, `${path.join(w.devDir, 'ublkb0')}\n`]);
    // /dev/dmremap/a must not lead to b's device (an fstab line naming it would mount b's data), nor may the
    // udev rule be told to link "a" to it.
    const stale = fs.existsSync(path.join(w.nameDir, 'a')) ? fs.readlinkSync(path.join(w.nameDir, 'a')) : null;
    expect(stale).toBeNull();
    expect(w.runDirEntries().filter((n) => n.endsWith('.name'))).toEqual([]);
    // And a can come back under its name.
    const up = cli(w, ['up', 'a', '--json']);
    expect(JSON.parse(up.stdout)).toEqual([expect.objectContaining({ name: 'a', result: 'up' })]);
  }, 60_000);

  it('up never formats a recorded device\'s spare: a blank disk in the spare\'s place is refused, the remaps are not dropped', () => {
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--persist']).status).toBe(0);
    expect(run(['remap', 'a', '8']).status).toBe(0);
    expect(lines(['down']).status).toBe(0);
    // The spare's place now holds a blank disk of the same size (a replaced or swapped disk, a re-created
    // image): same path, same identity as far as the record can tell.
    fs.rmSync(w.spare);
    w.file('spare.img', 4 << 20);
    const up = lines(['up', 'a']);
    expect(up.lines).toEqual([expect.objectContaining({ name: 'a', result: 'failed' })]);
    expect(up.status).toBe(1);
    expect(w.devNodes()).toEqual([]);
  }, 60_000);

  it('up of a record whose spare now holds another main\'s table names the record\'s disks to check, never --force-format', () => {
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--persist']).status).toBe(0);
    expect(lines(['down', 'a']).status).toBe(0);
    // The spare was taken over by hand for another main since.
    const main2 = w.file('main2.img', 8 << 20);
    expect(run(['add', '--main', main2, '--spare', w.spare, '--force-format']).status).toBe(0);
    expect(run(['del', path.join(w.devDir, 'ublkb0')]).status).toBe(0);
    const up = lines(['up', 'a']);
    expect(up.status).toBe(1);
    expect(up.lines).toEqual([expect.objectContaining({ name: 'a', result: 'failed', error: expect.objectContaining({ code: 'E_SPARE_FOREIGN' }) })]);
    const msg = up.lines[0]?.error?.message ?? '';
    expect(msg).toMatch(new RegExp(`^the spare .*spare\\.img holds another main's remap table \\(formatted for a main of .*\\): check the record's disks \\(device a: main .*main\\.img, spare .*spare\\.img\\); not formatted$`));
    expect(msg).not.toContain('--force-format');
  }, 60_000);

  const record = (name: string): Record<string, unknown> => JSON.parse(fs.readFileSync(path.join(w.devicesDir, `${name}.json`), 'utf8')) as Record<string, unknown>;
  const pairIdOf = (dev: string): string => (JSON.parse(run(['status', dev, '--json']).stdout) as { remap: { pairId: string } }).remap.pairId;
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

  it('the record names the spare\'s table (its UUID): up comes up on that table and refuses an old copy of the spare holding another, changing nothing', () => {
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--persist']).status).toBe(0);
    const first = pairIdOf('a');
    expect(first).toMatch(UUID);
    expect(record('a').tableUuid).toBe(first);
    expect(run(['remap', 'a', '8']).status).toBe(0);
    expect(lines(['down', 'a']).status).toBe(0);
    // The matching table comes up (with its remap).
    expect(lines(['up', 'a']).lines).toEqual([expect.objectContaining({ name: 'a', result: 'up' })]);
    expect(pairIdOf('a')).toBe(first);
    expect(lines(['down', 'a']).status).toBe(0);

    // A copy of the spare disk is kept; the spare is then wiped and formatted again for the same main (a new
    // table), and the record follows it (enable of the running device).
    const clone = fs.readFileSync(w.spare);
    fs.writeFileSync(w.spare, Buffer.alloc(clone.length));
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a']).status).toBe(0);
    const second = pairIdOf('a');
    expect(second).not.toBe(first);
    expect(run(['enable', 'a']).status).toBe(0);
    expect(record('a').tableUuid).toBe(second);
    expect(lines(['down', 'a']).status).toBe(0);

    // The old copy is back in the spare's place: same main, its table, but not the recorded one.
    fs.writeFileSync(w.spare, clone);
    const recBefore = fs.readFileSync(path.join(w.devicesDir, 'a.json'), 'utf8');
    const up = lines(['up', 'a']);
    expect(up.status).toBe(1);
    expect(up.lines).toEqual([expect.objectContaining({ name: 'a', result: 'failed', error: expect.objectContaining({ code: 'E_SPARE_OTHER_TABLE' }) })]);
    expect(up.lines[0]?.error?.message).toBe(
      `the spare ${w.spare} holds remap table ${first}, not table ${second} recorded for device a (an old copy of the spare, or one formatted again since?): not brought up, nothing written`,
    );
    // The unit's command refuses it the same way, in one line, with the exit code the unit does not restart on.
    const fg = run(['up', '--foreground', 'a']);
    expect([fg.status, fg.stderr]).toEqual([73, `dmremap-ublk: ${up.lines[0]?.error?.message}\n`]);
    // Nothing changed: no device, no registry entry, the spare's bytes and the record as they were.
    expect(w.devNodes()).toEqual([]);
    expect(readEntries(w.runDir).live).toEqual([]);
    expect(fs.readFileSync(w.spare).equals(clone)).toBe(true);
    expect(fs.readFileSync(path.join(w.devicesDir, 'a.json'), 'utf8')).toBe(recBefore);
  }, 90_000);

  it('the add that up runs (and the daemon itself) refuse another table too: add --table-uuid, detached and in the foreground', () => {
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a']).status).toBe(0);
    const mine = pairIdOf('a');
    expect(run(['del', 'a']).status).toBe(0);
    const other = '00000000-1111-2222-3333-444444444444';
    const spareBefore = fs.readFileSync(w.spare);
    const detached = run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--table-uuid', other]);
    expect([detached.status, detached.stderr]).toEqual([73, `dmremap-ublk: the spare ${w.spare} holds remap table ${mine}, not table ${other} recorded for device a (an old copy of the spare, or one formatted again since?): not brought up, nothing written\n`]);
    // In the foreground no precheck runs before the daemon: Daemon.start refuses it (before the store opens the table).
    const fg = run(['add', '--main', w.main, '--spare', w.spare, '--table-uuid', other, '--foreground']);
    expect([fg.status, fg.stderr]).toEqual([73, `dmremap-ublk: the spare ${w.spare} holds remap table ${mine}, not table ${other} recorded for main ${w.main} (an old copy of the spare, or one formatted again since?): not brought up, nothing written\n`]);
    expect(w.devNodes()).toEqual([]);
    expect(fs.readFileSync(w.spare).equals(spareBefore)).toBe(true);
    // Bad input: not a UUID; contradicting --force-format.
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--table-uuid', 'ABC']).stderr).toBe('dmremap-ublk: --table-uuid must be a remap table\'s UUID (lower-case hex, 8-4-4-4-12, as status --json shows remap.pairId), got "ABC"\n');
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--table-uuid', other, '--force-format']).status).toBe(2);
    // The right one comes up.
    const ok = run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--table-uuid', mine]);
    expect([ok.status, ok.stderr]).toEqual([0, '']);
  }, 60_000);

  it('a record written before the table UUID was kept (no tableUuid) still comes up; enable again adds it', () => {
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--persist']).status).toBe(0);
    expect(lines(['down', 'a']).status).toBe(0);
    const { tableUuid, ...old } = record('a');
    expect(tableUuid).toMatch(UUID);
    fs.writeFileSync(path.join(w.devicesDir, 'a.json'), JSON.stringify(old, null, 2));
    expect(lines(['up', 'a']).lines).toEqual([expect.objectContaining({ name: 'a', result: 'up' })]);
    expect(record('a').tableUuid).toBeUndefined();
    expect(run(['enable', 'a']).status).toBe(0);
    expect(record('a').tableUuid).toBe(tableUuid);
    // A malformed one is an invalid record, reported by file.
    fs.writeFileSync(path.join(w.devicesDir, 'a.json'), JSON.stringify({ ...old, tableUuid: 'nope' }));
    expect(lines(['up', 'a']).lines).toEqual([expect.objectContaining({ result: 'invalid', error: { code: 'E_RECORD', message: 'tableUuid: is not a remap table UUID (8-4-4-4-12 lower-case hex)' } })]);
  }, 60_000);

  it('up does not report a recorded device as already up when only another device of the same name (other disks) runs', () => {
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--persist']).status).toBe(0);
    expect(lines(['down', 'a']).status).toBe(0);
    const main2 = w.file('main2.img', 8 << 20);
    const spare2 = w.file('spare2.img', 4 << 20);
    expect(run(['add', '--main', main2, '--spare', spare2, '--name', 'a']).status).toBe(0);
    const up = lines(['up', 'a']);
    expect(up.lines[0]?.result).not.toBe('already-up');
    expect(up.status).toBe(1);
  }, 60_000);

  it('down stops only the recorded device: a running device that merely shares the record\'s name (other disks) is not deleted', () => {
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--persist']).status).toBe(0);
    expect(lines(['down', 'a']).status).toBe(0);
    const main2 = w.file('main2.img', 8 << 20);
    const spare2 = w.file('spare2.img', 4 << 20);
    // Started by hand with the same name, not recorded.
    expect(run(['add', '--main', main2, '--spare', spare2, '--name', 'a']).status).toBe(0);
    const down = lines(['down', 'a']);
    expect(down.lines[0]?.result).not.toBe('down');
    expect(readEntries(w.runDir).live.map((x) => x.main.path)).toContain(main2);
  }, 60_000);

  it('add --persist whose systemctl enable fails does not report failure for a device it left running and recorded', () => {
    const units = path.join(w.root, 'units');
    const rules = path.join(w.root, 'rules');
    const ok = path.join(w.root, 'systemctl-ok');
    fs.writeFileSync(ok, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    const failing = path.join(w.root, 'systemctl-fails');
    fs.writeFileSync(failing, '#!/bin/sh\necho "Failed to enable unit: Access denied" >&2\nexit 1\n', { mode: 0o755 });
    const base = { ...process.env, VITEST: 'true', DMREMAP_UNIT_DIR: units, DMREMAP_UDEV_DIR: rules, DMREMAP_RUN_DIR: w.runDir, DMREMAP_NAME_DIR: w.nameDir, DMREMAP_DEVICES_DIR: w.devicesDir, DMREMAP_DISK_DIR: w.diskDir, DMREMAP_LOG_DIR: w.logDir, DMREMAP_FAKE_NATIVE: JSON.stringify({ devDir: w.devDir, ...FAKE }) };
    const bin = path.join(REPO, 'bin/dmremap-ublk.js');
    expect(spawnSync(process.execPath, [bin, 'install-systemd'], { env: { ...base, DMREMAP_SYSTEMCTL: ok }, encoding: 'utf8' }).status).toBe(0);
    const add = spawnSync(process.execPath, [bin, 'add', '--main', w.main, '--spare', w.spare, '--name', 'vol', '--persist'], { env: { ...base, DMREMAP_SYSTEMCTL: failing }, encoding: 'utf8', timeout: 30_000 });
    const live = readEntries(w.runDir).live.map((e) => e.name);
    // Either add succeeded (the device runs, recorded; the unit's failure a warning) or it left nothing behind.
    if (live.includes('vol')) {
      expect([add.status, add.stdout]).toEqual([0, `${path.join(w.devDir, 'ublkb0')}\n`]);
      expect(add.stderr).toContain('dmremap-ublk: warning: vol: ' + `${failing} enable dmremap-ublk@vol.service failed (exit 1): Failed to enable unit: Access denied`);
      expect(fs.existsSync(path.join(w.devicesDir, 'vol.json'))).toBe(true);
    } else {
      expect(add.status).not.toBe(0);
      expect(fs.existsSync(path.join(w.devicesDir, 'vol.json'))).toBe(false);
    }
  }, 60_000);

  it('a detached add under a unit (NOTIFY_SOCKET set) passes on neither the socket nor the watchdog to its supervisor and daemon', () => {
    const env = { ...cliEnv(w, FAKE), NOTIFY_SOCKET: path.join(w.root, 'notify.sock'), WATCHDOG_USEC: '1000000', WATCHDOG_PID: String(process.pid) };
    const add = spawnSync(process.execPath, [path.join(REPO, 'bin/dmremap-ublk.js'), 'add', '--main', w.main, '--spare', w.spare, '--name', 'vol'], { env, encoding: 'utf8', timeout: 30_000 });
    expect([add.status, add.stderr]).toEqual([0, '']);
    const [e] = readEntries(w.runDir).live;
    const sup = supervisorOf(e?.pid ?? 0);
    expect(sup).not.toBeNull();
    const environ = (pid: number): string[] => fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    for (const pid of [e?.pid ?? 0, sup ?? 0]) {
      const names = environ(pid).map((kv) => kv.slice(0, kv.indexOf('=')));
      expect(names).toContain('DMREMAP_RUN_DIR');
      expect(names.filter((n) => ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID'].includes(n))).toEqual([]);
    }
  }, 60_000);

  it('enable records the policy flags given, as add --persist does, not the config file\'s values of the day (a later config change must still apply after up)', () => {
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'vol']).status).toBe(0);
    expect(run(['enable', 'vol']).status).toBe(0);
    const viaEnable = JSON.parse(fs.readFileSync(path.join(w.devicesDir, 'vol.json'), 'utf8')) as { policy: Record<string, unknown> };
    expect(run(['disable', 'vol']).status).toBe(0);
    expect(run(['del', 'vol']).status).toBe(0);
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'vol', '--persist']).status).toBe(0);
    const viaPersist = JSON.parse(fs.readFileSync(path.join(w.devicesDir, 'vol.json'), 'utf8')) as { policy: Record<string, unknown> };
    expect(viaPersist.policy).toEqual({});
    expect(viaEnable.policy).toEqual(viaPersist.policy);
  }, 60_000);

  it('enable records the policy flags a detached add was given (and only those), also after a restart of its daemon in recovery', async () => {
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'vol', '--read-retries', '5', '--auto-remap', 'off']).status).toBe(0);
    const [e] = readEntries(w.runDir).live;
    process.kill(e?.pid ?? 0, 'SIGKILL'); // its supervisor recovers it: the successor keeps what was given
    await waitFor(() => readEntries(w.runDir).live.some((x) => x.pid !== e?.pid));
    expect(run(['enable', 'vol']).status).toBe(0);
    const rec = JSON.parse(fs.readFileSync(path.join(w.devicesDir, 'vol.json'), 'utf8')) as { policy: Record<string, unknown> };
    expect(rec.policy).toEqual({ readRetries: 5, autoRemap: false });
  }, 60_000);

  it('the unit does not restart in a loop when its device is already up by hand: up --foreground\'s "already up" exit is in RestartPreventExitStatus', () => {
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'svc', '--persist']).status).toBe(0);
    const again = run(['up', '--foreground', 'svc']);
    expect(again.stderr).toContain('svc is already up');
    const unit = fs.readFileSync(path.join(REPO, 'scripts/systemd/dmremap-ublk@.service'), 'utf8');
    const prevent = (/^RestartPreventExitStatus=(.*)$/m.exec(unit)?.[1] ?? '').split(/\s+/);
    expect(prevent).toContain(String(again.status));
  }, 60_000);

  it('install-systemd never writes an ExecStart that systemd splits inside a path (node in a directory with a space)', () => {
    const dir = path.join(w.root, 'my node');
    fs.mkdirSync(dir);
    const node = path.join(dir, 'node');
    fs.linkSync(fs.realpathSync(process.execPath), node); // a hard link: the same node, under a path with a space
    const root = path.join(w.root, 'root');
    const inst = spawnSync(node, [path.join(REPO, 'bin/dmremap-ublk.js'), 'install-systemd', '--prefix', root], { encoding: 'utf8' });
    if (inst.status === 0) {
      const unit = fs.readFileSync(path.join(root, 'etc/systemd/system/dmremap-ublk@.service'), 'utf8');
      const exec = /^ExecStart=(.*)$/m.exec(unit)?.[1] ?? '';
      // systemd splits ExecStart on spaces outside quotes: the program must be the whole path.
      expect(exec.startsWith(`"${node}" `) || exec.startsWith(`${node.replace(/ /g, '\\x20')} `)).toBe(true);
    } else {
      expect(inst.stderr).toMatch(/^dmremap-ublk: cannot write a unit for a program whose path holds spaces/);
      expect(fs.existsSync(root)).toBe(false);
    }
  });

  it('down of a device whose unit is enabled stops the unit too, so that a pending Restart=on-failure does not add the device back', async () => {
    const units = path.join(w.root, 'units');
    const log = path.join(w.root, 'systemctl.log');
    const fake = path.join(w.root, 'systemctl');
    fs.writeFileSync(fake, `#!/bin/sh\necho "$@" >> ${log}\n`, { mode: 0o755 });
    const env = { ...process.env, VITEST: 'true', DMREMAP_UNIT_DIR: units, DMREMAP_UDEV_DIR: path.join(w.root, 'rules'), DMREMAP_SYSTEMCTL: fake, DMREMAP_RUN_DIR: w.runDir, DMREMAP_NAME_DIR: w.nameDir, DMREMAP_DEVICES_DIR: w.devicesDir, DMREMAP_DISK_DIR: w.diskDir, DMREMAP_LOG_DIR: w.logDir, DMREMAP_FAKE_NATIVE: JSON.stringify({ devDir: w.devDir, ...FAKE }) };
    const bin = path.join(REPO, 'bin/dmremap-ublk.js');
    const go = (args: string[]) => spawnSync(process.execPath, [bin, ...args], { env, encoding: 'utf8', timeout: 30_000 });
    expect(go(['install-systemd']).status).toBe(0);
    expect(go(['add', '--main', w.main, '--spare', w.spare, '--name', 'svc', '--persist']).status).toBe(0);
    // The unit's daemon has just died: the device waits, quiesced, for the restart systemd has scheduled.
    const [e] = readEntries(w.runDir).live;
    const sup = supervisorOf(e?.pid ?? 0);
    if (sup !== null) process.kill(sup, 'SIGKILL');
    process.kill(e?.pid ?? 0, 'SIGKILL');
    await waitFor(() => !pidAlive(e?.pid ?? 0));
    fs.writeFileSync(log, '');
    expect(go(['down', 'svc']).status).toBe(0);
    // What systemd's restart would run next adds it back unless down told systemd to stop the unit.
    expect(fs.readFileSync(log, 'utf8')).toContain('stop dmremap-ublk@svc.service');
  }, 60_000);

  it('up of a device whose unit is enabled leaves it to systemd (systemctl start), never a second manager outside the unit', () => {
    const units = path.join(w.root, 'units');
    const log = path.join(w.root, 'systemctl.log');
    const fake = path.join(w.root, 'systemctl');
    fs.writeFileSync(fake, `#!/bin/sh\necho "$@" >> ${log}\n`, { mode: 0o755 });
    const env = { ...process.env, VITEST: 'true', DMREMAP_UNIT_DIR: units, DMREMAP_UDEV_DIR: path.join(w.root, 'rules'), DMREMAP_SYSTEMCTL: fake, DMREMAP_RUN_DIR: w.runDir, DMREMAP_NAME_DIR: w.nameDir, DMREMAP_DEVICES_DIR: w.devicesDir, DMREMAP_DISK_DIR: w.diskDir, DMREMAP_LOG_DIR: w.logDir, DMREMAP_FAKE_NATIVE: JSON.stringify({ devDir: w.devDir, ...FAKE }) };
    const bin = path.join(REPO, 'bin/dmremap-ublk.js');
    const go = (args: string[]) => spawnSync(process.execPath, [bin, ...args], { env, encoding: 'utf8', timeout: 30_000 });
    expect(go(['install-systemd']).status).toBe(0);
    expect(go(['add', '--main', w.main, '--spare', w.spare, '--name', 'svc', '--persist']).status).toBe(0);
    expect(go(['down', 'svc']).status).toBe(0);
    fs.writeFileSync(log, '');
    go(['up', 'svc']);
    // A detached daemon under a supervisor here would be one the unit then fails to start ("already up")
    // and one systemd neither stops at shutdown nor orders against the mounts on it.
    expect(fs.readFileSync(log, 'utf8')).toContain('start dmremap-ublk@svc.service');
    expect(readEntries(w.runDir).live.filter((e) => supervisorOf(e.pid) !== null)).toEqual([]);
  }, 60_000);
});

