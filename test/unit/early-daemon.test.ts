// bin/early-daemon.js: the supervisor's first daemon, started before the CLI's bundle loads, and its adoption
// by `supervise` (src/cli/supervise.ts, src/supervisor/child-process.ts adoptChild).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
// @ts-expect-error plain JS module of bin/ (no types)
import * as early from '../../bin/early-daemon.js';
import { READY_FD_ENV } from '../../src/cli/readiness.js';
import { DAEMON_THREADPOOL_SIZE, SUPERVISOR_PID_ENV, adoptChild, startChild, supervisedEnv } from '../../src/supervisor/child-process.js';
import { runSupervise } from '../../src/cli/supervise.js';
import type { CliContext, EarlyDaemon } from '../../src/cli/context.js';

const FAKE = fileURLToPath(new URL('./fixtures/fake-daemon.mjs', import.meta.url));
const startEarly = early.startEarlyDaemon as (argv: string[], env: NodeJS.ProcessEnv, command: string[]) => EarlyDaemon | null;
const earlyArgs = early.earlyDaemonArgs as (argv: string[]) => string[] | null;

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'early-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const fakeEnv = (plan: string[]): NodeJS.ProcessEnv => {
  fs.writeFileSync(path.join(dir, 'plan'), plan.map((l) => `${l}\n`).join(''));
  return { ...process.env, FAKE_DAEMON_LOG: path.join(dir, 'log'), FAKE_DAEMON_PLAN: path.join(dir, 'plan') };
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('early daemon', () => {
  /** The environment a child spawned by `spawnWith` (given a command that runs `script`) really starts with. */
  const envOf = async (spawnWith: (command: string[]) => Promise<unknown>, name: string): Promise<Record<string, string>> => {
    const out = path.join(dir, name);
    const script = `require('fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify(process.env))`;
    await spawnWith([process.execPath, '-e', script]);
    return JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, string>;
  };
  const SERVICE = { NOTIFY_SOCKET: '/run/systemd/notify', WATCHDOG_USEC: '30000000', WATCHDOG_PID: '1' };

  it('the early daemon and every later supervised daemon start with the same environment, built in one place', async () => {
    const given: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: '/root', DMREMAP_RUN_DIR: '/run/x', UV_THREADPOOL_SIZE: undefined, ...SERVICE };
    const fromEarly = await envOf(async (command) => {
      const e = startEarly(['supervise', 'add', '--foreground'], given, command);
      if (e === null) throw new Error('not started');
      await e.exited;
    }, 'early');
    const fromSupervisor = await envOf((command) => startChild([], given, command).exited, 'later');
    expect(fromEarly).toEqual(fromSupervisor);
    expect(fromEarly).toEqual({
      PATH: process.env.PATH,
      HOME: '/root',
      DMREMAP_RUN_DIR: '/run/x',
      UV_THREADPOOL_SIZE: DAEMON_THREADPOOL_SIZE,
      [READY_FD_ENV]: '3',
      [SUPERVISOR_PID_ENV]: String(process.pid),
    });
  });

  it('a supervised daemon never inherits the service manager\'s NOTIFY_SOCKET or watchdog: it is not the unit\'s main process', () => {
    const env = supervisedEnv({ PATH: '/bin', ...SERVICE });
    for (const k of Object.keys(SERVICE)) expect(env).not.toHaveProperty(k);
    expect(env).toMatchObject({ PATH: '/bin', [READY_FD_ENV]: '3' });
  });

  it('gives the daemon a libuv pool of DAEMON_THREADPOOL_SIZE threads (UV_THREADPOOL_SIZE), keeping a size the user set', () => {
    expect(supervisedEnv({ PATH: '/bin' })).toMatchObject({ PATH: '/bin', UV_THREADPOOL_SIZE: '16', [READY_FD_ENV]: '3', [SUPERVISOR_PID_ENV]: String(process.pid) });
    expect(supervisedEnv({ UV_THREADPOOL_SIZE: '6' }).UV_THREADPOOL_SIZE).toBe('6');
  });

  it('starts only for a supervise add|recover command line in the foreground', () => {
    expect(earlyArgs(['supervise', 'add', '--main', '/m', '--spare', '/s', '--foreground'])).toEqual(['add', '--main', '/m', '--spare', '/s', '--foreground']);
    expect(earlyArgs(['supervise', 'recover', '3', '--foreground'])).toEqual(['recover', '3', '--foreground']);
    expect(earlyArgs(['supervise', 'add', '--main', '/m'])).toBeNull();
    expect(earlyArgs(['supervise', 'standby'])).toBeNull();
    expect(earlyArgs(['supervise', 'del', '0', '--foreground'])).toBeNull();
    expect(earlyArgs(['add', '--main', '/m', '--foreground'])).toBeNull();
    expect(earlyArgs([])).toBeNull();
    expect(startEarly(['supervise', 'add', '--foreground'], { ...process.env, DMREMAP_NO_EARLY_DAEMON: '1' }, [process.execPath, FAKE])).toBeNull();
  });

  it('adopting it after it is gone misses neither its readiness line nor its exit', async () => {
    // A daemon refused at once: its reason on fd 3, then exit 1, all before anyone adopts it (a slow bundle load).
    const e = startEarly(['supervise', 'add', '--main', '/x', '--foreground'], fakeEnv(['fail 4']), [process.execPath, FAKE]);
    expect(e).not.toBeNull();
    await expect(e?.exited).resolves.toEqual({ code: 4, signal: null });
    await sleep(200);
    const c = adoptChild(e as EarlyDaemon);
    expect(await c.ready).toMatchObject({ ok: false, code: 'E_DEVICE_BUSY' });
    expect(await c.exited).toEqual({ code: 4, signal: null });
    expect(fs.readFileSync(path.join(dir, 'log'), 'utf8')).toContain(' add --main /x --foreground');
  });

  it('supervise adopts it as its first daemon and relays its readiness', async () => {
    const e = startEarly(['supervise', 'add', '--main', '/x', '--foreground'], fakeEnv(['ready-exit 0 50']), [process.execPath, FAKE]) as EarlyDaemon;
    const readyFile = path.join(dir, 'ready');
    const fd = fs.openSync(readyFile, 'w');
    const sink = { write: () => true };
    const ctx: CliContext = {
      env: { ...process.env, [READY_FD_ENV]: String(fd), DMREMAP_NO_STANDBY: '1', DMREMAP_RUN_DIR: path.join(dir, 'run') },
      stdout: sink,
      stderr: sink,
      stderrIsTTY: false,
      loadNative: () => Promise.reject(new Error('no addon')),
      earlyDaemon: e,
    };
    // Exit 0 and no device left: the supervisor exits 0 after its one daemon.
    expect(await runSupervise(ctx, ['add', '--main', '/x', '--foreground'])).toBe(0);
    expect(JSON.parse(fs.readFileSync(readyFile, 'utf8'))).toMatchObject({ ok: true, pid: e.child.pid });
    // One daemon in all: the early one (nothing else was spawned: the real CLI would have appended no line).
    expect(fs.readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n')).toHaveLength(1);
  });

  it('a supervise command line that is refused leaves no early daemon running', async () => {
    const e = startEarly(['supervise', 'add', '--main', '/x', '--foreground'], fakeEnv(['ready']), [process.execPath, FAKE]) as EarlyDaemon;
    const sink = { write: () => true };
    const ctx: CliContext = { env: { ...process.env }, stdout: sink, stderr: sink, stderrIsTTY: false, loadNative: () => Promise.reject(new Error('no addon')), earlyDaemon: e };
    await expect(runSupervise(ctx, ['add', '--main', '/x'])).rejects.toThrow(/foreground/);
    // SIGTERM: the fake exits 0 on it once it has set up, or dies of it before.
    expect(await e.exited).toSatisfy((x: { code: number | null; signal: string | null }) => x.code === 0 || x.signal === 'SIGTERM');
  });
});
