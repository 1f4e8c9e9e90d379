// `watch` over the control socket and the CLI: the subscription (reply, then events; no idle timeout; no more
// requests; ended at stop), the client, the daemon's events against the fake addon, `dmremap-ublk watch`'s
// lines, its exit on a signal (0) and when the daemon goes away (E_DAEMON), and its bad input.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { COMMANDS, parseRequestLine, type Handlers } from '../../src/control/protocol.js';
import { ControlServer } from '../../src/control/server.js';
import { watchEvents } from '../../src/control/watch-client.js';
import { main } from '../../src/cli/main.js';
import { describeEvent, formatEvent } from '../../src/cli/watch.js';
import { Daemon } from '../../src/device/daemon.js';
import { DeviceEvents, deviceEventSchema, type DeviceEvent } from '../../src/device/device-events.js';
import { DmrError } from '../../src/errors.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { captureCtx, deviceConfig, fakeFor, makeWorld, quietLog, testAccess, waitFor, type World } from './helpers.js';

let w: World;
let sock: string;
let server: ControlServer | null;

const handlers = (): Handlers =>
  Object.fromEntries(
    COMMANDS.filter((c) => c !== 'watch').map((c) => [c, c === 'ping' ? () => 'pong' : () => Promise.reject(new DmrError('E_INTERNAL', 'not under test'))]),
  ) as unknown as Handlers;

async function startServer(events?: DeviceEvents, idleTimeoutMs = 60_000): Promise<void> {
  server = new ControlServer({ socketPath: sock, handlers: handlers(), log: quietLog(), access: testAccess(), idleTimeoutMs, ...(events ? { events, device: () => '/dev/ublkb9' } : {}) });
  await server.listen();
}

/** A raw client: lines as they come, and whether the server ended the connection. */
function client(): { c: net.Socket; lines: unknown[]; ended: () => boolean } {
  const c = net.createConnection(sock);
  const lines: unknown[] = [];
  let buf = '';
  let ended = false;
  c.setEncoding('utf8');
  c.on('data', (d: string) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buf.slice(0, nl)));
      buf = buf.slice(nl + 1);
    }
  });
  c.on('end', () => (ended = true));
  c.on('close', () => (ended = true));
  return { c, lines, ended: () => ended };
}

/** The promise's rejection (null if it resolved), caught at once: a rejection while the test awaits something else is not unhandled. */
const failure = (p: Promise<unknown>): Promise<unknown> => p.then(() => null, (e: unknown) => e);

async function expectDaemonError(failed: Promise<unknown>, message: RegExp): Promise<void> {
  const err = await failed;
  expect(err).toBeInstanceOf(DmrError);
  expect((err as DmrError).code).toBe('E_DAEMON');
  expect((err as DmrError).message).toMatch(message);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeEach(() => {
  w = makeWorld();
  fs.mkdirSync(w.runDir, { mode: 0o700 });
  sock = path.join(w.runDir, '9.sock');
  server = null;
});
afterEach(async () => {
  await server?.close();
  w.cleanup();
});

describe('the watch request', () => {
  it('has its own schema: exactly id and cmd', () => {
    expect(parseRequestLine('{"id":3,"cmd":"watch"}')).toEqual({ ok: true, request: { id: 3, cmd: 'watch' } });
    const bad = parseRequestLine('{"id":3,"cmd":"watch","types":["remap"]}');
    expect(bad.ok).toBe(false);
  });

  it('replies watching, then streams events one per line; outlives the idle timeout; takes no more requests', async () => {
    const events = new DeviceEvents({ device: () => '/dev/ublkb9', now: () => 123 });
    await startServer(events, 100);
    const { c, lines, ended } = client();
    c.write('{"id":4,"cmd":"watch"}\n');
    await waitFor(() => lines.length === 1);
    expect(lines[0]).toEqual({ id: 4, ok: true, result: { watching: true } });
    await sleep(350); // three idle timeouts
    expect(ended()).toBe(false);
    events.outage('read', true);
    await waitFor(() => lines.length === 2);
    expect(lines[1]).toEqual({ type: 'outage', at: 123, device: '/dev/ublkb9', phase: 'begin', kind: 'read' });
    c.write('{"id":5,"cmd":"ping"}\n');
    await waitFor(() => lines.length === 3);
    expect(lines[2]).toMatchObject({ id: 5, ok: false, error: { code: 'E_PROTOCOL', message: expect.stringMatching(/watching/) } });
    expect(ended()).toBe(false);
    c.destroy();
    await waitFor(() => events.listenerCount === 0);
  });

  it('many watchers each get every event; a connection that does not watch still times out', async () => {
    const events = new DeviceEvents({ device: () => 'd' });
    await startServer(events, 150);
    const a = client();
    const b = client();
    const idle = client();
    a.c.write('{"id":1,"cmd":"watch"}\n');
    b.c.write('{"id":1,"cmd":"watch"}\n');
    await waitFor(() => events.listenerCount === 2);
    for (let i = 0; i < 5; i++) events.outage('write', i % 2 === 0);
    await waitFor(() => a.lines.length === 6 && b.lines.length === 6);
    expect(a.lines.slice(1)).toEqual(b.lines.slice(1));
    await waitFor(() => idle.ended());
    a.c.destroy();
    b.c.destroy();
  });

  it('stop ends every watcher cleanly', async () => {
    const events = new DeviceEvents({ device: () => 'd' });
    await startServer(events);
    const { c, lines, ended } = client();
    c.write('{"id":1,"cmd":"watch"}\n');
    await waitFor(() => lines.length === 1);
    await server?.close();
    server = null;
    await waitFor(() => ended());
    await waitFor(() => events.listenerCount === 0);
    c.destroy();
  });

  it('a server without events refuses watch and answers what follows as usual', async () => {
    await startServer();
    const { c, lines } = client();
    c.write('{"id":1,"cmd":"watch"}\n{"id":2,"cmd":"ping"}\n');
    await waitFor(() => lines.length === 2);
    expect(lines[0]).toMatchObject({ id: 1, ok: false, error: { code: 'E_PROTOCOL' } });
    expect(lines[1]).toEqual({ id: 2, ok: true, result: 'pong' });
    c.destroy();
  });
});

describe('watchEvents (the client)', () => {
  it('hands over each event with its line, resolves when aborted, and rejects with E_DAEMON when the daemon goes', async () => {
    const events = new DeviceEvents({ device: () => 'd', now: () => 7 });
    await startServer(events);
    const got: Array<[DeviceEvent, string]> = [];
    const stop = new AbortController();
    const p = watchEvents(sock, (ev, line) => got.push([ev, line]), stop.signal);
    await waitFor(() => events.listenerCount === 1);
    events.outage('read', false);
    await waitFor(() => got.length === 1);
    expect(got[0]).toEqual([{ type: 'outage', at: 7, device: 'd', phase: 'end', kind: 'read' }, '{"type":"outage","at":7,"device":"d","phase":"end","kind":"read"}']);
    stop.abort();
    await expect(p).resolves.toBeUndefined();
    await waitFor(() => events.listenerCount === 0);

    const gone = failure(watchEvents(sock, () => {}));
    await waitFor(() => events.listenerCount === 1);
    await server?.close();
    server = null;
    await expectDaemonError(gone, /closed the connection/);
  });

  it('no daemon: E_DAEMON, not running', async () => {
    await expectDaemonError(failure(watchEvents(sock, () => {})), /is not running/);
  });
});

describe('readable lines', () => {
  const at = Date.UTC(2026, 11, 2, 9, 41, 4, 123);
  const d = { at, device: '/dev/ublkb0' };
  it('one line each: time, type, a sentence', () => {
    const cases: Array<[DeviceEvent, string]> = [
      [{ type: 'remap', ...d, block: 154, sector: 1232, slot: 0, origin: 'auto', state: 'mapped' }, 'block 154 (sector 1232) to slot 0, origin auto'],
      [{ type: 'remap', ...d, block: 2, sector: 16, slot: 1, origin: 'scan', state: 'lost' }, 'block 2 (sector 16) to slot 1, origin scan, its data lost: reads fail until it is written'],
      [{ type: 'pending', ...d, change: 'added', blocks: [1, 2], count: 3 }, '3 blocks pending (unreadable, lost until written): 1, 2, ...'],
      [{ type: 'pending', ...d, change: 'cleared', blocks: [5], count: 1 }, '1 pending block cleared (written or read again): 5'],
      [{ type: 'burst', ...d, kind: 'write:main', level: 'warn', message: 'write errors on main', events: 12, count: 40, unit: 'blocks', blocks: [7, 8] }, 'write errors on main: 40 blocks in 12 more events (7, 8, ...)'],
      [{ type: 'health', ...d, previous: 'healthy', state: 'watch', score: 84, reason: '3 new bad blocks in 24 h' }, 'healthy -> watch (score 84): 3 new bad blocks in 24 h'],
      [{ type: 'alarm', ...d, alarm: 'spare_forecast', state: 'watch', score: 75, reason: 'spare full in 9 days' }, 'the spare is forecast to run out soon; health watch (score 75): spare full in 9 days'],
      [{ type: 'scan', ...d, state: 'running', previous: 'idle', progress: 0, position: 0, deviceBytes: 1 << 30, rateBps: 0, pass: 2, errorsFound: 0 }, 'idle -> running, pass 2 at 0% (0 B of 1.0 GiB), 0 errors found'],
      [{ type: 'outage', ...d, phase: 'begin', kind: 'write' }, 'main refuses writes: write outage began (writes are held)'],
      [{ type: 'missed', ...d, count: 17 }, '17 events missed (this watcher read too slowly)'],
    ];
    for (const [ev, sentence] of cases) {
      expect(deviceEventSchema.safeParse(ev).success).toBe(true);
      expect(describeEvent(ev)).toBe(sentence);
      expect(formatEvent(ev)).toBe(`2026-12-02T09:41:04.123Z ${ev.type.padEnd(7)} ${sentence}`);
    }
  });
});

describe('dmremap-ublk watch against a daemon (fake addon)', () => {
  let native: FakeNative;
  let daemon: Daemon | null = null;
  beforeEach(() => {
    fs.rmSync(w.runDir, { recursive: true, force: true });
    native = fakeFor(w);
  });
  afterEach(async () => {
    await daemon?.shutdown('test');
    daemon = null;
  });

  it('--json streams the remaps with their origin and the pending blocks; ends with E_DAEMON when the device is stopped', async () => {
    daemon = await Daemon.start(deviceConfig(w, { alertCommand: null }), { native, runDir: w.runDir, log: quietLog(), logFile: null });
    const devSock = path.join(w.runDir, `${daemon.info.devId}.sock`);
    const c = captureCtx(w, native);
    const running = main(['watch', daemon.info.blockPath, '--json'], c.ctx);
    const events = daemon['events'] as DeviceEvents;
    await waitFor(() => events.listenerCount === 1);
    await request(devSock, 'remap', { sector: 8 });
    const engine = daemon['engine'];
    if (!engine) throw new Error('no engine');
    await engine.markLost([{ block: 20, slotFailed: false, errorCount: 1, origin: 'scan' }]);
    const lines = (): DeviceEvent[] => c.stdout().split('\n').filter(Boolean).map((l) => deviceEventSchema.parse(JSON.parse(l)));
    await waitFor(() => lines().some((e) => e.type === 'pending'));
    expect(lines().filter((e) => e.type === 'remap')).toMatchObject([
      { type: 'remap', device: daemon.info.blockPath, origin: 'manual', state: 'mapped' },
      { type: 'remap', device: daemon.info.blockPath, block: 20, origin: 'scan', state: 'lost' },
    ]);
    expect(lines().find((e) => e.type === 'pending')).toMatchObject({ change: 'added', blocks: [20], count: 1 });
    await daemon.shutdown('test');
    daemon = null;
    expect(await running).toBe(1);
    expect(c.stderr()).toMatch(/^dmremap-ublk: daemon at .* closed the connection\n$/);
  });

  it('without --json: one readable line per event; exits 0 when the watch is aborted (SIGINT/SIGTERM)', async () => {
    daemon = await Daemon.start(deviceConfig(w, { alertCommand: null }), { native, runDir: w.runDir, log: quietLog(), logFile: null });
    const devSock = path.join(w.runDir, `${daemon.info.devId}.sock`);
    const c = captureCtx(w, native);
    const { runWatch } = await import('../../src/cli/watch.js');
    const stop = new AbortController();
    const running = runWatch(c.ctx, daemon.info.blockPath, false, { signal: stop.signal });
    const events = daemon['events'] as DeviceEvents;
    await waitFor(() => events.listenerCount === 1);
    await request(devSock, 'remap', { sector: 16 });
    await waitFor(() => c.stdout().includes('remap'));
    expect(c.stdout()).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z remap {3}block \d+ \(sector \d+\) to slot \d+, origin manual\n$/);
    stop.abort();
    expect(await running).toBe(0);
    await waitFor(() => events.listenerCount === 0);
  });

  it('a device event of the data path: an auto-remapped write is a remap of origin auto', async () => {
    daemon = await Daemon.start(deviceConfig(w, { alertCommand: null }), { native, runDir: w.runDir, log: quietLog(), logFile: null });
    const got: DeviceEvent[] = [];
    const events = daemon['events'] as DeviceEvents;
    events.on((e) => got.push(e));
    const dev = native.devices.at(-1) as FakeDevice;
    const f1 = { type: 'io_fault' as const, queue: 0, tag: 1, seq: 1, kind: 'error' as const, op: 'write' as const, block: 3, blocks: 1, attempt: 0, latencyUs: 100, written: [], failed: [{ device: 'main' as const, block: 3, blocks: 1, errno: 5 }] };
    dev.emit(f1);
    expect(await dev.awaitResolution(f1, 3000)).toEqual({ action: 'retry' });
    const f2 = { ...f1, attempt: 1, kind: 'lost_written' as const, failed: [], written: dev.writtenRanges(3, 1) };
    dev.emit(f2);
    await dev.awaitResolution(f2, 3000);
    await waitFor(() => got.some((e) => e.type === 'remap'));
    expect(got.find((e) => e.type === 'remap')).toMatchObject({ block: 3, origin: 'auto', state: 'mapped' });
    expect(got.find((e) => e.type === 'burst')).toMatchObject({ kind: 'write:main', level: 'warn' });
  });
});

describe('bad input', () => {
  async function rejected(args: string[]): Promise<{ code: number; err: string; out: string }> {
    const native = fakeFor(w);
    const c = captureCtx(w, native);
    const code = await main(args, c.ctx);
    return { code, err: c.stderr(), out: c.stdout() };
  }
  it('a missing device, two devices, an unknown option: usage errors (exit 2), one line', async () => {
    expect(await rejected(['watch'])).toEqual({ code: 2, err: 'dmremap-ublk: missing device to watch (a /dev/ublkbN path, device id or name)\n', out: '' });
    expect(await rejected(['watch', 'a', 'b'])).toEqual({ code: 2, err: 'dmremap-ublk: watch takes one device, got 2\n', out: '' });
    expect(await rejected(['watch', 'a', '--follow'])).toEqual({ code: 2, err: 'dmremap-ublk: unknown option --follow for watch (see dmremap-ublk watch --help)\n', out: '' });
  });
  it('an unknown device: one line, exit 1', async () => {
    const r = await rejected(['watch', 'nosuch']);
    expect(r.code).toBe(1);
    expect(r.err.split('\n')).toHaveLength(2);
    expect(r.err).toMatch(/^dmremap-ublk: .*nosuch/);
  });
  it('--help prints the watch help', async () => {
    const r = await rejected(['watch', '--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^Usage: dmremap-ublk watch <device> \[--json\]/);
  });
});
