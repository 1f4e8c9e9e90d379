// The config file's controlGroup (src/config/control-group.ts): its schema (global only), `config get|set|unset
// control_group` (a name is checked against the group database before the file is touched), and what a
// daemon makes of it at start: the run directory 02750 and the socket 0660 with that group, the registry file
// 0640; a group that does not resolve: the user's `add` refuses (E_CONFIG, changing nothing), a daemon starts
// with its socket root only (a warning) so that no device stays down for a group lookup.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { parseConfig } from '../../src/config/file.js';
import { etcGroupLookup, parseControlGroup, resolveControlGroup, systemGroupLookup } from '../../src/config/control-group.js';
import { Daemon } from '../../src/device/daemon.js';
import { captureCtx, deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

const MY_GID = process.getegid?.() ?? 0;

let w: World;
let cfgFile: string;
let savedConfig: string | undefined;
beforeEach(() => {
  w = makeWorld();
  cfgFile = path.join(w.root, 'etc', 'config.json');
  savedConfig = process.env.DMREMAP_CONFIG;
});
afterEach(() => {
  process.env.DMREMAP_CONFIG = savedConfig;
  w.cleanup();
});

async function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const c = captureCtx(w, fakeFor(w));
  c.ctx.env.DMREMAP_CONFIG = cfgFile;
  const code = await main(args, c.ctx);
  return { code, stdout: c.stdout(), stderr: c.stderr() };
}

describe('the controlGroup key', () => {
  it('is a gid or a group name, global only', () => {
    expect(parseConfig('f', '{"controlGroup": 4711}')).toEqual({ controlGroup: 4711 });
    expect(parseConfig('f', '{"controlGroup": "dmremap"}')).toEqual({ controlGroup: 'dmremap' });
    for (const bad of ['-1', '1.5', '4294967295', '"-x"', '"a b"', '""', 'true']) {
      expect(() => parseConfig('f', `{"controlGroup": ${bad}}`)).toThrow('f: controlGroup: must be a group name or a gid (a whole number from 0 to 4294967294)');
    }
    expect(() => parseConfig('f', '{"devices": {"vol": {"controlGroup": 1}}}')).toThrow('devices.vol: unknown key "controlGroup"');
  });

  it('parses the command line’s value: digits are a gid, anything else a name', () => {
    expect(parseControlGroup('4711')).toBe(4711);
    expect(parseControlGroup('disk')).toBe('disk');
    expect(() => parseControlGroup('4294967295')).toThrow(expect.objectContaining({ code: 'E_USAGE' }) as Error);
    expect(() => parseControlGroup('no/slash')).toThrow('control_group must be a group name or a gid (0 to 4294967294), got "no/slash"');
  });

  it('resolves a name through the group database; an unknown name is E_CONFIG naming the file', () => {
    const etc = 'root:x:0:\nstaff:x:50:alice,bob\nbroken:x:notanumber:\n';
    expect(etcGroupLookup(etc, 'staff')).toBe(50);
    expect(etcGroupLookup(etc, 'broken')).toBeNull();
    expect(etcGroupLookup(etc, 'nobody-here')).toBeNull();
    expect(resolveControlGroup(undefined, 'f')).toBeNull();
    expect(resolveControlGroup(4711, 'f')).toBe(4711);
    expect(resolveControlGroup('staff', 'f', (n) => etcGroupLookup(etc, n))).toBe(50);
    expect(() => resolveControlGroup('nosuch', '/etc/x.json', () => null)).toThrow(
      '/etc/x.json: controlGroup: no group named "nosuch" (give its gid instead if it is not in the group database)',
    );
    // The system's database: root's group is there on any Linux, a made-up name is not.
    expect(systemGroupLookup('root')).toBe(0);
    expect(systemGroupLookup('dmremap-no-such-group-x')).toBeNull();
  });

  it('config set / get / unset control_group', async () => {
    expect(await run('config', 'get', 'control_group')).toEqual({ code: 0, stdout: 'control_group = (none)\n', stderr: '' });
    expect(await run('config', 'set', 'control_group', '4711')).toEqual({ code: 0, stdout: 'control_group = 4711 (was (none))\n', stderr: '' });
    expect(JSON.parse(fs.readFileSync(cfgFile, 'utf8'))).toEqual({ controlGroup: 4711 });
    expect(await run('config', 'set', 'control_group', 'root', '--json')).toMatchObject({ code: 0 });
    expect(JSON.parse((await run('config', 'get', 'control_group', '--json')).stdout)).toEqual({ controlGroup: 'root' });
    expect(await run('config', 'unset', 'control_group')).toEqual({ code: 0, stdout: 'control_group = (none) (was root)\n', stderr: '' });
    expect(JSON.parse(fs.readFileSync(cfgFile, 'utf8'))).toEqual({});
  });

  it('config set control_group refuses, changing nothing: an unknown group name (E_CONFIG), a bad value or --device (usage)', async () => {
    await run('config', 'set', 'control_group', '4711');
    const before = fs.readFileSync(cfgFile);
    expect(await run('config', 'set', 'control_group', 'dmremap-no-such-group-x')).toEqual({
      code: 1,
      stdout: '',
      stderr: `dmremap-ublk: ${cfgFile}: controlGroup: no group named "dmremap-no-such-group-x" (give its gid instead if it is not in the group database)\n`,
    });
    expect(await run('config', 'set', 'control_group', 'a:b')).toMatchObject({ code: 2, stderr: 'dmremap-ublk: control_group must be a group name or a gid (0 to 4294967294), got "a:b"\n' });
    expect(await run('config', 'set', 'control_group', '5', '--device', 'vol')).toMatchObject({ code: 2, stderr: 'dmremap-ublk: control_group is global: it takes no --device\n' });
    expect(fs.readFileSync(cfgFile)).toEqual(before);
  });
});

describe('a daemon with a control group', () => {
  let daemon: Daemon | null = null;
  afterEach(async () => {
    await daemon?.shutdown('test');
    daemon = null;
  });

  it('makes the run directory 02750, the socket 0660 and the registry file 0640, all of the group', async () => {
    fs.mkdirSync(path.dirname(cfgFile), { recursive: true });
    fs.writeFileSync(cfgFile, JSON.stringify({ controlGroup: MY_GID }));
    process.env.DMREMAP_CONFIG = cfgFile;
    daemon = await Daemon.start(deviceConfig(w, { alertCommand: null }), { native: fakeFor(w), runDir: w.runDir, log: quietLog(), logFile: null });
    const st = (p: string): { mode: string; gid: number } => {
      const s = fs.statSync(p);
      return { mode: (s.mode & 0o7777).toString(8), gid: s.gid };
    };
    expect(st(w.runDir)).toEqual({ mode: '2750', gid: MY_GID });
    expect(st(path.join(w.runDir, `${daemon.info.devId}.sock`))).toEqual({ mode: '660', gid: MY_GID });
    expect(st(path.join(w.runDir, `${daemon.info.devId}.json`))).toEqual({ mode: '640', gid: MY_GID });
  });

  it('without one: 0700 and 0600 as before, the registry file 0640 inside the closed directory', async () => {
    process.env.DMREMAP_CONFIG = cfgFile; // no file: no group
    daemon = await Daemon.start(deviceConfig(w, { alertCommand: null }), { native: fakeFor(w), runDir: w.runDir, log: quietLog(), logFile: null });
    expect(fs.statSync(w.runDir).mode & 0o7777).toBe(0o700);
    expect(fs.statSync(path.join(w.runDir, `${daemon.info.devId}.sock`)).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.join(w.runDir, `${daemon.info.devId}.json`)).mode & 0o777).toBe(0o640);
  });

  it('a config file that cannot be used: no control group (root only), and the device starts', async () => {
    fs.mkdirSync(path.dirname(cfgFile), { recursive: true });
    fs.writeFileSync(cfgFile, '{"controlGroup": 4711, "scanRateMib": 0}');
    process.env.DMREMAP_CONFIG = cfgFile;
    daemon = await Daemon.start(deviceConfig(w, { alertCommand: null }), { native: fakeFor(w), runDir: w.runDir, log: quietLog(), logFile: null });
    expect(fs.statSync(w.runDir).mode & 0o7777).toBe(0o700);
    expect(fs.statSync(path.join(w.runDir, `${daemon.info.devId}.sock`)).mode & 0o777).toBe(0o600);
  });

  it('a group name that does not resolve now (no such group, NSS down): the device starts, its socket root only (0600), the run directory left as it was, a warning logged', async () => {
    fs.mkdirSync(path.dirname(cfgFile), { recursive: true });
    fs.writeFileSync(cfgFile, JSON.stringify({ controlGroup: 'dmremap-no-such-group-x' }));
    process.env.DMREMAP_CONFIG = cfgFile;
    fs.mkdirSync(w.runDir, { mode: 0o700 });
    fs.chmodSync(w.runDir, 0o2750); // as a daemon that resolved the group left it
    const warnings: string[] = [];
    const log = quietLog();
    const warn = log.warn.bind(log);
    log.warn = ((...a: unknown[]) => {
      warnings.push(a.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join(' '));
      return (warn as (...b: unknown[]) => void)(...a);
    }) as typeof log.warn;
    daemon = await Daemon.start(deviceConfig(w, { alertCommand: null }), { native: fakeFor(w), runDir: w.runDir, log, logFile: null });
    expect(fs.statSync(path.join(w.runDir, `${daemon.info.devId}.sock`)).mode & 0o777).toBe(0o600);
    expect(fs.statSync(w.runDir).mode & 0o7777).toBe(0o2750);
    expect(warnings.join('\n')).toContain('the control group does not resolve now: this control socket is root only');
    expect(warnings.join('\n')).toContain('no group named \\"dmremap-no-such-group-x\\"');
  });

  it('the user\'s add refuses a group name that does not resolve: E_CONFIG, no device, no run directory', async () => {
    fs.mkdirSync(path.dirname(cfgFile), { recursive: true });
    fs.writeFileSync(cfgFile, JSON.stringify({ controlGroup: 'dmremap-no-such-group-x' }));
    expect(await run('add', '--main', w.main, '--spare', w.spare)).toEqual({
      code: 1,
      stdout: '',
      stderr: `dmremap-ublk: ${cfgFile}: controlGroup: no group named "dmremap-no-such-group-x" (give its gid instead if it is not in the group database)\n`,
    });
    expect(w.devNodes()).toEqual([]);
    expect(fs.existsSync(w.runDir)).toBe(false);
  });
});
