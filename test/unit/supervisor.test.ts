// The supervisor with real child processes (a fake daemon script standing in for `add|recover
// --foreground`): readiness relay, recovery after a crash, restart without counting, give-up, clean exit,
// hand-off to another daemon, and SIGTERM forwarding.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import type { ReadyMessage } from '../../src/cli/readiness.js';
import { startChild, startStandby } from '../../src/supervisor/child-process.js';
import { STANDBY_RESPAWN_MS, Supervisor, type StandbyChild, type SupervisedChild } from '../../src/supervisor/supervisor.js';
import { MAX_CRASHES, RELEASE_PAUSE_MS } from '../../src/supervisor/restart-policy.js';
import { DELETING_EXIT_CODE, PREDECESSOR_BUSY_EXIT_CODE, RECOVERY_STUCK_EXIT_CODE } from '../../src/errors.js';

const FAKE = fileURLToPath(new URL('./fixtures/fake-daemon.mjs', import.meta.url));
const FAKE_STANDBY = fileURLToPath(new URL('./fixtures/fake-standby.mjs', import.meta.url));

let dir: string;
let started: SupervisedChild[];
let standbys: StandbyChild[];
let marks: string[];
let relayed: ReadyMessage[];
let exists: boolean;
let owner: number | null;
let logLines: string[];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-sup-'));
  started = [];
  standbys = [];
  marks = [];
  relayed = [];
  exists = true;
  owner = null;
  logLines = [];
});
// A test that failed early leaves its supervisor running: from here on it sees no device (so it ends) and
// records nothing into the next test's state.
let generation = 0;
afterEach(() => {
  generation++;
  for (const c of [...started, ...standbys]) c.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

function plan(...steps: string[]): void {
  fs.writeFileSync(path.join(dir, 'plan'), steps.map((s) => `${s}\n`).join(''));
}

/** The args each fake daemon was started with, in order. */
function starts(): string[] {
  const f = path.join(dir, 'log');
  return fs.existsSync(f) ? fs.readFileSync(f, 'utf8').trim().split('\n').map((l) => l.slice(l.indexOf(' ') + 1)) : [];
}

/** "<pid> waiting" for each standby started, in order. */
function standbyLog(): string[] {
  const f = path.join(dir, 'standby-log');
  return fs.existsSync(f) ? fs.readFileSync(f, 'utf8').trim().split('\n') : [];
}

const alive = (pid: number | undefined): boolean => {
  try {
    process.kill(pid ?? -1, 0);
    return true;
  } catch {
    return false;
  }
};

function supervisor(opts: { standby?: boolean } = {}): Supervisor {
  const gen = generation;
  const mine = (): boolean => gen === generation;
  const env = {
    ...process.env,
    FAKE_DAEMON_LOG: path.join(dir, 'log'),
    FAKE_DAEMON_PLAN: path.join(dir, 'plan'),
    FAKE_STANDBY_LOG: path.join(dir, 'standby-log'),
  };
  return new Supervisor(['add', '--main', '/x', '--foreground', '--log-file', '/tmp/d.log'], {
    start: (args) => {
      const c = startChild(args, env, [process.execPath, FAKE]);
      started.push(c);
      return c;
    },
    startStandby: opts.standby
      ? () => {
          const s = startStandby(env, [process.execPath, FAKE_STANDBY]);
          standbys.push(s);
          return s;
        }
      : undefined,
    deviceExists: () => mine() && exists,
    ownerPid: () => owner,
    markQuiesced: (devId, reason) => void (mine() && marks.push(`${devId}: ${reason}`)),
    relay: (m) => void (mine() && relayed.push(m)),
    log: createLogger({ stderr: { write: (s: string) => logLines.push(s) } }),
  });
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const readyPid = async (c: SupervisedChild | undefined): Promise<number> => {
  const r = await c?.ready;
  if (!r?.ok) throw new Error('child not ready');
  return r.pid;
};

describe('supervisor', () => {
  it('relays the first readiness once, and recovers a daemon killed with SIGKILL within a second', async () => {
    plan('ready', 'ready');
    const sup = supervisor();
    const running = sup.run();
    const pid = await readyPid(started[0]);
    expect(relayed).toEqual([{ ok: true, devId: 7, blockPath: '/dev/ublkb7', name: null, pid }]);
    const killedAt = Date.now();
    process.kill(pid, 'SIGKILL');
    await until(() => started.length === 2);
    // The recovery is started within a second (how fast node then starts is the machine's business).
    expect(Date.now() - killedAt).toBeLessThan(1000);
    const pid2 = await readyPid(started[1]);
    expect(pid2).not.toBe(pid);
    expect(starts()).toEqual(['add --main /x --foreground --log-file /tmp/d.log', 'recover 7 --foreground --log-file /tmp/d.log']);
    expect(marks).toEqual(['7: daemon exited (signal SIGKILL)']);
    expect(relayed).toHaveLength(1); // add heard only from the first daemon
    sup.stop('SIGTERM');
    expect(await running).toBe(0);
    expect(started).toHaveLength(2);
  });

  it('exit 75 (restart) starts the successor at once and is never counted as a crash', async () => {
    const n = MAX_CRASHES + 2;
    plan(...Array.from({ length: n }, () => 'ready-exit 75'), 'ready');
    const sup = supervisor();
    const running = sup.run();
    await until(() => started.length === n + 1);
    await readyPid(started[n]);
    expect(starts().slice(1)).toEqual(Array.from({ length: n }, () => 'recover 7 --foreground --log-file /tmp/d.log'));
    expect(marks).toEqual([]);
    sup.stop('SIGTERM');
    expect(await running).toBe(0);
  });

  it(`gives up after ${MAX_CRASHES} crashes within 60 s, records why and exits non-zero`, async () => {
    plan('ready', 'die', 'die', 'die', 'die', 'ready');
    const sup = supervisor();
    const running = sup.run();
    process.kill(await readyPid(started[0]), 'SIGKILL');
    expect(await running).toBe(1);
    expect(started).toHaveLength(MAX_CRASHES);
    expect(marks.at(-1)).toBe('7: gave up after 5 crashes in 60 s (last: exit code 3)');
    expect(logLines.join('')).toContain('not restarting the daemon again');
  });

  it('a successor that finds the device still held by the dead daemon is retried after a pause, not counted as a crash', async () => {
    // One kill and three crashes: a fifth crash would give up. The successor that exits with the
    // predecessor-busy code is started again after RELEASE_PAUSE_MS instead.
    plan('ready', 'die', 'die', 'die', `fail ${PREDECESSOR_BUSY_EXIT_CODE}`, 'ready');
    const sup = supervisor();
    const running = sup.run();
    process.kill(await readyPid(started[0]), 'SIGKILL');
    await until(() => started.length === 5);
    const busyAt = Date.now();
    await until(() => started.length === 6);
    expect(Date.now() - busyAt).toBeGreaterThanOrEqual(RELEASE_PAUSE_MS - 50);
    await readyPid(started[5]);
    expect(logLines.join('')).toContain('device not released yet by the dead daemon; trying again');
    expect(logLines.join('')).not.toContain('not restarting the daemon again');
    expect(marks).toHaveLength(4);
    sup.stop('SIGTERM');
    expect(await running).toBe(0);
  });

  it('exit 0 ends the supervisor without a restart', async () => {
    plan('ready-exit 0');
    expect(await supervisor().run()).toBe(0);
    expect(started).toHaveLength(1);
    expect(marks).toEqual([]);
  });

  it('a crash that leaves no device (it was deleted) ends the supervisor', async () => {
    plan('ready');
    const sup = supervisor();
    const running = sup.run();
    const pid = await readyPid(started[0]);
    exists = false;
    process.kill(pid, 'SIGKILL');
    expect(await running).toBe(0);
    expect(started).toHaveLength(1);
  });

  it('hands off when another daemon serves the device by the time it would recover', async () => {
    plan('ready');
    const sup = supervisor();
    const running = sup.run();
    const pid = await readyPid(started[0]);
    owner = 4242;
    process.kill(pid, 'SIGKILL');
    expect(await running).toBe(0);
    expect(started).toHaveLength(1);
  });

  it('a daemon that fails to start: its failure is relayed and nothing is restarted', async () => {
    plan('fail');
    expect(await supervisor().run()).toBe(1);
    expect(relayed).toEqual([{ ok: false, code: 'E_DEVICE_BUSY', message: 'spare is in use' }]);
    expect(started).toHaveLength(1);
  });

  it('stop forwards SIGTERM to the daemon; stopped in the pause after a crash, it recovers and then stops the new one', async () => {
    plan('ready', 'ready');
    const sup = supervisor();
    const running = sup.run();
    const pid = await readyPid(started[0]);
    process.kill(pid, 'SIGKILL');
    sup.stop('SIGTERM'); // during the pause: the recovery starts at once and is told to stop once ready
    expect(await running).toBe(0);
    expect(starts()).toEqual(['add --main /x --foreground --log-file /tmp/d.log', 'recover 7 --foreground --log-file /tmp/d.log']);
    expect(await started[1]?.exited).toEqual({ code: 0, signal: null });
  });
});

describe('supervisor with a warm standby', () => {
  // The successor refuses the device: a del is under way (E_DELETING), or the kernel refuses the recovery for
  // good (E_RECOVERY_STUCK). The standby is the successor after a crash (exit 1 here: marked quiesced first);
  // a spawned process is the successor after a restart (exit 75).
  for (const standby of [true, false]) {
    const how = standby ? 'the standby' : 'a spawned successor';
    const first = standby ? 'ready-exit 1 1500' : 'ready-exit 75 1500';
    const crashMarks = standby ? ['7: daemon exited (exit code 1)'] : [];
    it(`${how} refusing with E_DELETING: the supervisor exits 0 at once, the registry entry untouched`, async () => {
      plan(first, `fail ${DELETING_EXIT_CODE}`);
      const sup = supervisor({ standby });
      const running = sup.run();
      await readyPid(started[0]);
      if (standby) await until(() => standbyLog().length === 1);
      expect(await running).toBe(0);
      expect(starts()).toHaveLength(2);
      expect(started).toHaveLength(standby ? 1 : 2);
      expect(marks).toEqual(crashMarks); // nothing more: del owns the entry
    });

    it(`${how} refusing with E_RECOVERY_STUCK: the supervisor gives up at once, recording why and what to do`, async () => {
      plan(first, `fail ${RECOVERY_STUCK_EXIT_CODE}`);
      const sup = supervisor({ standby });
      const running = sup.run();
      await readyPid(started[0]);
      if (standby) await until(() => standbyLog().length === 1);
      expect(await running).toBe(1);
      expect(starts()).toHaveLength(2);
      expect(started).toHaveLength(standby ? 1 : 2);
      expect(marks.slice(0, crashMarks.length)).toEqual(crashMarks);
      expect(marks).toHaveLength(crashMarks.length + 1);
      expect(marks.at(-1)).toMatch(/^7: gave up: the kernel refuses START_USER_RECOVERY .*dmremap-ublk del/);
    });
  }

  it('keeps one standby while the daemon runs, hands it the recovery after a SIGKILL, then starts the next', async () => {
    plan('ready', 'ready');
    const sup = supervisor({ standby: true });
    const running = sup.run();
    const pid = await readyPid(started[0]);
    await until(() => standbyLog().length === 1);
    expect(standbys).toHaveLength(1);
    const standbyPid = standbys[0]?.pid;
    process.kill(pid, 'SIGKILL');
    // The successor is the standby, told what to run: no process is spawned for it.
    await until(() => starts().length === 2);
    expect(starts()).toEqual(['add --main /x --foreground --log-file /tmp/d.log', 'recover 7 --foreground --log-file /tmp/d.log']);
    expect(started).toHaveLength(1);
    expect(fs.readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n')[1]).toBe(`${standbyPid} recover 7 --foreground --log-file /tmp/d.log`);
    expect(marks).toEqual(['7: daemon exited (signal SIGKILL)']);
    // Once it is the live daemon, the next standby waits; it is the successor of the next crash.
    await until(() => standbys.length === 2 && standbyLog().length === 2);
    process.kill(standbyPid ?? -1, 'SIGKILL');
    await until(() => starts().length === 3);
    expect(fs.readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n')[2]).toBe(`${standbys[1]?.pid} recover 7 --foreground --log-file /tmp/d.log`);
    expect(started).toHaveLength(1);
    sup.stop('SIGTERM');
    expect(await running).toBe(0);
  });

  it('exit 75 (restart, the upgrade path) spawns a fresh successor, never the standby that imported the code of before; not counted as a crash', async () => {
    plan('ready-exit 75 1500', 'ready');
    const sup = supervisor({ standby: true });
    const running = sup.run();
    await readyPid(started[0]);
    await until(() => standbyLog().length === 1);
    const warmedBefore = standbys[0]?.pid;
    await until(() => starts().length === 2);
    expect(started).toHaveLength(2); // a new process: the code on disk now
    expect(fs.readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n')[1]).not.toMatch(new RegExp(`^${warmedBefore} `));
    expect(marks).toEqual([]);
    sup.stop('SIGTERM');
    expect(await running).toBe(0);
  });

  it('a standby that dies while waiting is replaced after a pause and never counted as a crash', async () => {
    plan('ready', 'ready');
    const sup = supervisor({ standby: true });
    const running = sup.run();
    const pid = await readyPid(started[0]);
    await until(() => standbyLog().length === 1);
    const diedAt = Date.now();
    process.kill(standbys[0]?.pid ?? -1, 'SIGKILL');
    await until(() => standbyLog().length === 2);
    expect(Date.now() - diedAt).toBeGreaterThanOrEqual(STANDBY_RESPAWN_MS - 50);
    expect(marks).toEqual([]);
    expect(logLines.join('')).toContain('standby exited while waiting; replacing it (not a daemon crash)');
    // The replacement is the successor.
    process.kill(pid, 'SIGKILL');
    await until(() => starts().length === 2);
    expect(fs.readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n')[1]).toBe(`${standbys[1]?.pid} recover 7 --foreground --log-file /tmp/d.log`);
    expect(started).toHaveLength(1);
    sup.stop('SIGTERM');
    expect(await running).toBe(0);
  });

  it('a dead standby is not used: the successor is spawned', async () => {
    plan('ready', 'ready');
    const sup = supervisor({ standby: true });
    const running = sup.run();
    const pid = await readyPid(started[0]);
    await until(() => standbyLog().length === 1);
    const s = standbys[0];
    s?.kill('SIGKILL');
    await s?.exited;
    process.kill(pid, 'SIGKILL'); // before the replacement is due
    await until(() => started.length === 2);
    expect(await readyPid(started[1])).not.toBe(s?.pid);
    expect(marks).toEqual(['7: daemon exited (signal SIGKILL)']);
    sup.stop('SIGTERM');
    expect(await running).toBe(0);
  });

  it('no orphan: the waiting standby is killed when the supervisor ends (stop, give-up; its death: supervisor-cli.test.ts)', async () => {
    plan('ready');
    let sup = supervisor({ standby: true });
    let running = sup.run();
    await readyPid(started[0]);
    await until(() => standbyLog().length === 1);
    const first = standbys[0];
    sup.stop('SIGTERM');
    expect(await running).toBe(0);
    await first?.exited;
    expect(alive(first?.pid)).toBe(false);

    // Each successor gets ready (so a standby is started after it) and then crashes: at the give-up a standby waits.
    plan('ready', ...Array.from({ length: 4 }, () => 'ready-exit 3 400'));
    sup = supervisor({ standby: true });
    running = sup.run();
    await readyPid(started[1]);
    await until(() => standbyLog().length === 2);
    process.kill(await readyPid(started[1]), 'SIGKILL');
    expect(await running).toBe(1);
    expect(marks.at(-1)).toBe('7: gave up after 5 crashes in 60 s (last: exit code 3)');
    const last = standbys.at(-1);
    expect(last?.pid).not.toBe(standbys[1]?.pid);
    expect(await last?.exited).toEqual({ code: null, signal: 'SIGTERM' });
    expect(standbys.every((s) => !alive(s.pid))).toBe(true);

  });
});

describe('a standby that cannot be started', () => {
  it('a spawn of the standby that throws (ENOMEM from fork) does not take the supervisor down: the next crash is still recovered', async () => {
    plan('ready', 'ready');
    const env = { ...process.env, FAKE_DAEMON_LOG: path.join(dir, 'log'), FAKE_DAEMON_PLAN: path.join(dir, 'plan') };
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    const saved = process.listeners('unhandledRejection');
    process.removeAllListeners('unhandledRejection');
    process.on('unhandledRejection', onUnhandled);
    try {
      const sup = new Supervisor(['add', '--main', '/x', '--foreground', '--log-file', '/tmp/d.log'], {
        start: (args) => {
          const c = startChild(args, env, [process.execPath, FAKE]);
          started.push(c);
          return c;
        },
        startStandby: () => {
          throw Object.assign(new Error('spawn ENOMEM'), { code: 'ENOMEM' });
        },
        deviceExists: () => true,
        ownerPid: () => null,
        markQuiesced: () => {},
        relay: () => {},
        log: createLogger({ stderr: { write: () => true } }),
      });
      const running = sup.run();
      const pid = await readyPid(started[0]);
      await new Promise((r) => setTimeout(r, 200));
      // In the real supervisor (node's default --unhandled-rejections=throw) this rejection ends the process.
      expect(unhandled).toEqual([]);
      process.kill(pid, 'SIGKILL');
      await until(() => started.length === 2);
      sup.stop('SIGTERM');
      expect(await running).toBe(0);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      for (const l of saved) process.on('unhandledRejection', l as (...a: unknown[]) => void);
    }
  });
});
