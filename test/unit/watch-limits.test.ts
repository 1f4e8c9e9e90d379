// Watchers against the control socket's limits, the remap commit path, and a watch CLI whose reader goes away
// (from a cold review of `watch`; each test failed on the first version): watchers leave the clients' count, so
// idle ones cannot lock status/shutdown/del out; a commit makes no events inside RemapStore.onCommitted;
// `watch --json | head -n 1` ends cleanly.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { COMMANDS, type Handlers } from '../../src/control/protocol.js';
import { ControlServer } from '../../src/control/server.js';
import { CommitEvents, DeviceEvents, type DeviceEvent } from '../../src/device/device-events.js';
import { Daemon } from '../../src/device/daemon.js';
import { DmrError } from '../../src/errors.js';
import type { CommittedOp } from '../../src/remap/index.js';
import { cliSpawn, deviceConfig, fakeFor, makeWorld, quietLog, testAccess, waitFor, type World } from './helpers.js';

const T0 = Date.UTC(2026, 0, 1);

let w: World;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => {
  w.cleanup();
});

describe('watchers and the control socket', () => {
  let server: ControlServer | null = null;
  const conns: net.Socket[] = [];
  afterEach(async () => {
    for (const c of conns) c.destroy();
    conns.length = 0;
    await server?.close();
    server = null;
  });

  const handlers = (): Handlers =>
    Object.fromEntries(
      COMMANDS.filter((c) => c !== 'watch').map((c) => [c, c === 'ping' ? () => 'pong' : () => Promise.reject(new DmrError('E_INTERNAL', 'not under test'))]),
    ) as unknown as Handlers;

  /** A watcher that subscribes, gets its reply, and then never reads (as a stuck `watch` process would). */
  const watcher = (sock: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const c = net.createConnection(sock);
      conns.push(c);
      c.setEncoding('utf8');
      let buf = '';
      c.on('connect', () => c.write(`${JSON.stringify({ id: 1, cmd: 'watch' })}\n`));
      c.on('data', (d: string) => {
        buf += d;
        if (buf.includes('\n')) {
          if (buf.includes('"watching":true')) resolve();
          else reject(new Error(buf));
          c.pause();
        }
      });
      c.on('error', reject);
    });

  it('15 watchers leave room for a request', async () => {
    fs.mkdirSync(w.runDir, { mode: 0o700 });
    const sock = path.join(w.runDir, '9.sock');
    server = new ControlServer({ socketPath: sock, handlers: handlers(), log: quietLog(), access: testAccess(), events: new DeviceEvents({ device: () => '/dev/ublkb9' }), device: () => '/dev/ublkb9' });
    await server.listen();
    for (let i = 0; i < 15; i++) await watcher(sock);
    await expect(request(sock, 'ping', {}, 3000)).resolves.toBe('pong');
  });

  it('16 watchers (the default client limit) do not lock out ping/status/shutdown: a request is still answered', async () => {
    fs.mkdirSync(w.runDir, { mode: 0o700 });
    const sock = path.join(w.runDir, '9.sock');
    server = new ControlServer({ socketPath: sock, handlers: handlers(), log: quietLog(), access: testAccess(), events: new DeviceEvents({ device: () => '/dev/ublkb9' }), device: () => '/dev/ublkb9' });
    await server.listen();
    for (let i = 0; i < 16; i++) await watcher(sock);
    await expect(request(sock, 'ping', {}, 3000)).resolves.toBe('pong');
  });
});

describe('watchers and del', () => {
  let daemon: Daemon | null = null;
  const conns: net.Socket[] = [];
  afterEach(async () => {
    for (const c of conns) c.destroy();
    conns.length = 0;
    await daemon?.shutdown('test');
    daemon = null;
  });

  it('a device with 16 idle watchers still answers status and shutdown (what `del` sends), not "too many clients"', async () => {
    const native = fakeFor(w);
    daemon = await Daemon.start(deviceConfig(w, { alertCommand: null }), { native, runDir: w.runDir, log: quietLog(), logFile: null });
    const devSock = path.join(w.runDir, `${daemon.info.devId}.sock`);
    for (let i = 0; i < 16; i++) {
      await new Promise<void>((resolve, reject) => {
        const c = net.createConnection(devSock);
        conns.push(c);
        c.on('connect', () => c.write(`${JSON.stringify({ id: 1, cmd: 'watch' })}\n`));
        c.once('data', () => resolve());
        c.on('error', reject);
      });
    }
    // `del` asks the daemon to shut down over the same socket: status and shutdown are answered.
    await expect(request(devSock, 'status', {}, 3000)).resolves.toMatchObject({ blockPath: daemon.info.blockPath });
    await expect(request(devSock, 'shutdown', {}, 3000)).resolves.toBeTruthy();
  }, 60_000);
});

describe('events on the remap commit path', () => {
  it('a commit does no watcher work inside RemapStore.onCommitted (as the health judgement no longer does): its events reach listeners on a later turn', async () => {
    // Measured on this host: a 1000-op commit with 15 reading watchers spent 31-78 ms inside onCommitted
    // (JSON.stringify and a socket write per event per watcher), which the commit's caller waits for.
    const bus = new DeviceEvents({ device: () => '/dev/ublkb9' });
    const got: DeviceEvent[] = [];
    bus.on((ev) => got.push(ev));
    const commits = new CommitEvents(bus, 8, []);
    const ops: CommittedOp[] = Array.from({ length: 100 }, (_, i) => ({
      op: { op: 'remap', block: i, slot: i, lost: false, auto: true, scan: false, dataOnMain: false, time: T0, errorCount: 1 },
      origin: 'auto',
    }));
    commits.committed(ops);
    expect(got.length).toBe(0);
    await new Promise((r) => setImmediate(r));
    expect(got.filter((e) => e.type === 'remap').length).toBe(100);
  });
});

describe('the watch CLI in a pipe', () => {
  let daemon: Daemon | null = null;
  afterEach(async () => {
    await daemon?.shutdown('test');
    daemon = null;
  });

  it('`watch --json | head -n 1`: the reader going away ends the watch cleanly at the next event (no stack trace, exit 0)', async () => {
    const native = fakeFor(w);
    daemon = await Daemon.start(deviceConfig(w, { alertCommand: null }), { native, runDir: w.runDir, log: quietLog(), logFile: null });
    const devSock = path.join(w.runDir, `${daemon.info.devId}.sock`);
    const child = cliSpawn(w, ['watch', daemon.info.blockPath, '--json']);
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const events = daemon['events'] as DeviceEvents;
    await waitFor(() => events.listenerCount === 1, 20_000);
    await request(devSock, 'remap', { sector: 8 });
    await waitFor(() => out.includes('\n'), 10_000);
    child.stdout.destroy(); // head -n 1 exits
    await new Promise((r) => setTimeout(r, 200));
    await request(devSock, 'remap', { sector: 16 });
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running'), 10_000))]);
    if (code === 'still running') child.kill('SIGKILL');
    expect({ code, stackTrace: /\n\s+at /.test(err) }).toEqual({ code: 0, stackTrace: false });
  }, 60_000);
});

describe('watchers have a limit of their own', () => {
  it('a watcher past maxWatchers is refused with one error line; requests are still answered', async () => {
    fs.mkdirSync(w.runDir, { mode: 0o700 });
    const sock = path.join(w.runDir, '9.sock');
    const handlers = Object.fromEntries(COMMANDS.filter((c) => c !== 'watch').map((c) => [c, () => 'pong'])) as unknown as Handlers;
    const server = new ControlServer({ socketPath: sock, handlers, log: quietLog(), access: testAccess(), events: new DeviceEvents({ device: () => '/dev/ublkb9' }), device: () => '/dev/ublkb9', maxWatchers: 2 });
    await server.listen();
    const conns: net.Socket[] = [];
    try {
      const subscribe = (): Promise<string> =>
        new Promise((resolve, reject) => {
          const c = net.createConnection(sock);
          conns.push(c);
          c.setEncoding('utf8');
          c.on('connect', () => c.write(`${JSON.stringify({ id: 1, cmd: 'watch' })}\n`));
          c.once('data', (d: string) => resolve(d));
          c.on('error', reject);
        });
      expect(await subscribe()).toContain('"watching":true');
      expect(await subscribe()).toContain('"watching":true');
      const third = await subscribe();
      expect(third).toContain('too many watchers (2)');
      expect(third.trim().split('\n')).toHaveLength(1);
      await expect(request(sock, 'ping', {}, 3000)).resolves.toBe('pong');
    } finally {
      for (const c of conns) c.destroy();
      await server.close();
    }
  });
});
