// `recover` and `del` of a quiesced device through the built CLI (node bin/dmremap-ublk.js) with the fake
// addon offering user recovery: a daemon killed -9 leaves its device quiesced; `recover` brings it back
// under a new daemon (detached, like add), refuses a live one, and `del` removes a quiesced one. A daemon
// that hits an exception nothing handles exits 70 with the error in its log, leaving the device quiesced.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readEntries, readEntryOf } from '../../src/control/registry.js';
import { cli, killDaemons, makeWorld, pidAlive, REPO, waitFor, type World } from './helpers.js';
import { supervisorOf } from '../../src/supervisor/find.js';

const FAKE = { features: '0xd8' }; // CMD_IOCTL_ENCODE | USER_COPY | USER_RECOVERY | USER_RECOVERY_REISSUE
let w: World;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => {
  killDaemons(w);
  w.cleanup();
});

async function addAndKill(name: string): Promise<number> {
  const add = cli(w, ['add', '--main', w.main, '--spare', w.spare, '--name', name, '--json'], FAKE);
  expect(add.stderr).toBe('');
  const { pid } = JSON.parse(add.stdout) as { pid: number };
  // add runs the daemon under a supervisor that would recover the device itself: kill that first.
  const sup = supervisorOf(pid);
  if (sup !== null) process.kill(sup, 'SIGKILL');
  process.kill(pid, 'SIGKILL');
  await waitFor(() => !pidAlive(pid));
  return pid;
}

describe('recover (built CLI, fake addon)', () => {
  it('brings a killed daemon\'s device back under a new daemon; refuses it once live; del stops it', async () => {
    const dead = await addAndKill('vol');
    expect(w.devNodes()).toEqual(['ublkb0', 'ublkc0']);
    expect(readEntries(w.runDir).quiesced.map((e) => e.devId)).toEqual([0]);
    const rec = cli(w, ['recover', 'vol', '--json'], FAKE);
    expect(rec.stderr).toBe('');
    expect(rec.status).toBe(0);
    const ready = JSON.parse(rec.stdout) as { devId: number; blockPath: string; name: string; pid: number };
    expect(ready).toMatchObject({ devId: 0, blockPath: path.join(w.devDir, 'ublkb0'), name: 'vol' });
    expect(ready.pid).not.toBe(dead);
    expect(readEntryOf(w.runDir, 0)).toMatchObject({ pid: ready.pid, quiesced: null });
    const st = cli(w, ['status', '0', '--json'], FAKE);
    expect(st.status).toBe(0);
    expect(JSON.parse(st.stdout)).toMatchObject({ devId: 0, pid: ready.pid, name: 'vol' });
    const again = cli(w, ['recover', path.join(w.devDir, 'ublkb0')], FAKE);
    expect([again.status, again.stderr]).toEqual([1, `dmremap-ublk: ${path.join(w.devDir, 'ublkb0')} is live (daemon pid ${ready.pid}): nothing to recover\n`]);
    const json = cli(w, ['recover', '0', '--json'], FAKE);
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { code: 'E_DEVICE_LIVE' } });
    const del = cli(w, ['del', 'vol'], FAKE);
    expect([del.status, del.stderr]).toEqual([0, '']);
    expect(w.devNodes()).toEqual([]);
  });

  it('del of a quiesced device deletes it from the kernel and removes its state', async () => {
    await addAndKill('q');
    const del = cli(w, ['del', 'q', '--json'], FAKE);
    expect(del.stderr).toBe('');
    expect(del.status).toBe(0);
    expect(JSON.parse(del.stdout)).toMatchObject({ devId: 0, removed: true });
    expect(w.devNodes()).toEqual([]);
    expect(readEntryOf(w.runDir, 0)).toBeNull();
    const rec = cli(w, ['recover', '0'], FAKE);
    expect([rec.status, rec.stderr]).toEqual([1, `dmremap-ublk: no dmremap-ublk device 0 (no state file ${path.join(w.runDir, '0.json')})\n`]);
  });

  it('refuses bad input and invalid state with one line, changing nothing', async () => {
    const usage = cli(w, ['recover'], FAKE);
    expect([usage.status, usage.stderr]).toEqual([2, 'dmremap-ublk: missing device to recover (a /dev/ublkbN path, device id or name)\n']);
    const name = cli(w, ['recover', 'nosuch'], FAKE);
    expect([name.status, name.stderr]).toEqual([1, 'dmremap-ublk: no dmremap-ublk device "nosuch"\n']);
    await addAndKill('s');
    const file = path.join(w.runDir, '0.json');
    fs.writeFileSync(file, '{');
    const bad = cli(w, ['recover', '0'], FAKE);
    expect([bad.status, bad.stderr]).toEqual([1, `dmremap-ublk: the state file ${file} of device 0 is not valid (not JSON)\n`]);
    expect(w.devNodes()).toEqual(['ublkb0', 'ublkc0']);
    expect(fs.readFileSync(file, 'utf8')).toBe('{');
    const h = cli(w, ['recover', '--help'], FAKE);
    expect(h.stdout).toMatch(/^Usage: dmremap-ublk recover <device>/);
  });

  it('a daemon with an unhandled exception logs it and exits 70; its device stays quiesced', () => {
    const log = path.join(w.root, 'fatal.log');
    // A foreground daemon (serveForeground, as add --foreground runs it) whose code throws once the device is live.
    const script = `
      const { serveForeground } = await import(${JSON.stringify(path.join(REPO, 'dist/cli/add.js'))});
      const { Daemon } = await import(${JSON.stringify(path.join(REPO, 'dist/device/daemon.js'))});
      const { selectNative } = await import(${JSON.stringify(path.join(REPO, 'dist/native-select.js'))});
      const ctx = { env: process.env, stdout: process.stdout, stderr: process.stderr, stderrIsTTY: false, loadNative: () => selectNative(process.env) };
      const cfg = { mainPath: ${JSON.stringify(w.main)}, sparePath: ${JSON.stringify(w.spare)}, name: 'f', queues: 1, depth: 8, blockSize: undefined, maxIoBytes: 65536, buffers: 'auto' };
      const code = await serveForeground(ctx, { logFile: ${JSON.stringify(log)}, json: false, name: 'f' }, async (deps) => {
        const d = await Daemon.start(cfg, deps);
        setTimeout(() => { throw new Error('boom in a timer'); }, 50);
        return d;
      });
      console.log('returned', code);
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, VITEST: 'true', DMREMAP_RUN_DIR: w.runDir, DMREMAP_FAKE_NATIVE: JSON.stringify({ devDir: w.devDir, ...FAKE }) },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.stdout).not.toContain('returned');
    expect(r.status).toBe(70);
    const fatal = fs.readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('"level":60'));
    expect(fatal).toHaveLength(1);
    expect(fatal[0]).toContain('boom in a timer');
    expect(fatal[0]).toContain('uncaughtException');
    expect(w.devNodes()).toEqual(['ublkb0', 'ublkc0']);
    expect(readEntries(w.runDir).quiesced.map((e) => e.devId)).toEqual([0]);
  });
});
