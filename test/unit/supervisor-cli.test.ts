// The supervisor through the built CLI with the fake addon offering user recovery: a daemon killed -9 is
// replaced without anyone running `recover`; `restart` replaces the daemon (supervised, and started with
// --foreground); the supervisor exits after `del`.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readEntries } from '../../src/control/registry.js';
import { supervisorOf } from '../../src/supervisor/find.js';
import { deviceLogFile } from '../../src/paths.js';
import { cli, cliSpawn, killDaemons, makeWorld, pidAlive, waitFor, type World } from './helpers.js';

const FAKE = { features: '0xd8' }; // CMD_IOCTL_ENCODE | USER_COPY | USER_RECOVERY | USER_RECOVERY_REISSUE
let w: World;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => {
  killDaemons(w);
  w.cleanup();
});

function cliAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const c = cliSpawn(w, args, FAKE);
  let stdout = '';
  let stderr = '';
  c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => c.on('close', (status) => resolve({ status, stdout, stderr })));
}

/** The pid of the live daemon of device 0 once it is not `old`. */
async function newDaemon(old: number): Promise<number> {
  let pid = 0;
  await waitFor(() => {
    const e = readEntries(w.runDir).live.find((x) => x.devId === 0);
    pid = e !== undefined && e.pid !== old ? e.pid : 0;
    return pid !== 0;
  }, 15_000);
  return pid;
}

/** The pid of supervisor `sup`'s waiting standby (`supervise standby`), or 0. */
function standbyOf(sup: number, not = 0): number {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const ppid = Number(/^PPid:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${d}/status`, 'utf8'))?.[1]);
      const argv = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (ppid === sup && argv.includes('standby') && Number(d) !== not) return Number(d);
    } catch {
      // gone
    }
  }
  return 0;
}

describe('supervisor (built CLI, fake addon)', () => {
  it('recovers a daemon killed -9 by itself; restart replaces the daemon; del ends the supervisor', async () => {
    const add = cli(w, ['add', '--main', w.main, '--spare', w.spare, '--name', 'vol', '--json'], FAKE);
    expect(add.stderr).toBe('');
    const { pid } = JSON.parse(add.stdout) as { pid: number };
    const sup = supervisorOf(pid);
    expect(sup).not.toBeNull();
    process.kill(pid, 'SIGKILL');
    const second = await newDaemon(pid);
    expect(supervisorOf(second)).toBe(sup);
    const st = cli(w, ['status', 'vol', '--json'], FAKE);
    expect(st.stderr).toBe('');
    expect(JSON.parse(st.stdout)).toMatchObject({ devId: 0, pid: second, name: 'vol', state: 'live' });
    const log = fs.readFileSync(path.join(w.logDir, 'vol.log'), 'utf8');
    expect(log).toContain('daemon died; recovering the device');
    expect(log).toContain('"exit":"signal SIGKILL"');

    const rs = cli(w, ['restart', 'vol', '--json'], FAKE);
    expect(rs.stderr).toBe('');
    expect(rs.status).toBe(0);
    const out = JSON.parse(rs.stdout) as { pid: number; previousPid: number; supervised: boolean };
    expect(out).toMatchObject({ previousPid: second, supervised: true });
    expect(pidAlive(second)).toBe(false);
    expect(supervisorOf(out.pid)).toBe(sup);
    expect(JSON.parse(cli(w, ['list', '--json'], FAKE).stdout)).toEqual([expect.objectContaining({ pid: out.pid, state: 'running', supervisorPid: sup })]);

    const del = cli(w, ['del', 'vol'], FAKE);
    expect([del.status, del.stderr]).toEqual([0, '']);
    await waitFor(() => !pidAlive(sup ?? 0), 10_000);
    expect(w.devNodes()).toEqual([]);
  });

  it('keeps a warm standby that holds no device, is the successor of a kill -9, and exits when its supervisor is killed', async () => {
    const add = cli(w, ['add', '--main', w.main, '--spare', w.spare, '--json'], FAKE);
    const { pid } = JSON.parse(add.stdout) as { pid: number };
    const sup = supervisorOf(pid) ?? 0;
    let standby = 0;
    await waitFor(() => {
      standby = standbyOf(sup);
      return standby !== 0;
    }, 10_000);
    // Waiting, it has neither main, the spare nor a device node open.
    const held = [w.main, w.spare].map((f) => fs.realpathSync(f));
    const devDir = fs.realpathSync(w.devDir);
    const open = fs.readdirSync(`/proc/${standby}/fd`).map((f) => {
      try {
        return fs.readlinkSync(`/proc/${standby}/fd/${f}`);
      } catch {
        return '';
      }
    });
    expect(open.filter((l) => held.includes(l) || l.startsWith(`${devDir}/`))).toEqual([]);
    expect(open.length).toBeGreaterThan(0);
    process.kill(pid, 'SIGKILL');
    expect(await newDaemon(pid)).toBe(standby);
    expect(fs.readFileSync(deviceLogFile({ DMREMAP_LOG_DIR: w.logDir }, null, w.main), 'utf8')).toContain('successor: the warm standby');
    // The next standby, then the supervisor killed: the standby's stdin closes and it exits by itself.
    let next = 0;
    await waitFor(() => {
      next = standbyOf(sup, standby);
      return next !== 0;
    }, 10_000);
    process.kill(sup, 'SIGKILL');
    await waitFor(() => !pidAlive(next), 10_000);
    process.kill(standby, 'SIGKILL');
  });

  it('restart of a daemon started with --foreground: the CLI runs recover itself', async () => {
    const child = cliSpawn(w, ['add', '--main', w.main, '--spare', w.spare, '--foreground', '--json'], FAKE);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await waitFor(() => out.includes('\n'), 10_000);
    const { pid } = JSON.parse(out) as { pid: number };
    expect(supervisorOf(pid)).toBeNull();
    // Not spawnSync: this process must reap the old daemon (its parent) while restart waits for it to exit.
    const rs = await cliAsync(['restart', '0']);
    expect(rs.stderr).toBe('');
    expect(rs.status).toBe(0);
    expect(await exited).toBe(75);
    const next = await newDaemon(pid);
    expect(rs.stdout).toBe(`restarted ${path.join(w.devDir, 'ublkb0')}: daemon pid ${next} (was ${pid})\n`);
    // `recover` without --foreground starts its daemon under a supervisor too.
    expect(supervisorOf(next)).not.toBeNull();
    expect(cli(w, ['del', '0'], FAKE).status).toBe(0);
  });
});
