// The background scan wired into the daemon, over the real control socket, against the fake addon: the
// scan messages and their refusals, a pass that finds injected bad blocks (pending afterwards), the status
// line's scan=<p>%, and the cursor kept in the state dir across daemons (running resumes, paused stays
// paused, done stays done; an unusable file starts over).
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { request } from '../../src/control/client.js';
import { readEntryOf, writeEntry, type RegistryEntryV2 } from '../../src/control/registry.js';
import { DEFAULT_POLICY } from '../../src/config/policy.js';
import { Daemon } from '../../src/device/daemon.js';
import { describeStatsReport } from '../../src/device/remap-control.js';
import { DmrError } from '../../src/errors.js';
import { loadScan, scanFilePath } from '../../src/scan/scan-file.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

/** Features with ublk user recovery (as recovery.test.ts), and a pid no process has. */
const RECOVERY_FEATURES = '0xd8';
const DEAD_PID = 2 ** 22 + 4321;

let w: World;
let native: FakeNative;
let daemon: Daemon | null;
let sock: string;
let stateDir: string;

const start = async (): Promise<Daemon> => {
  daemon = await Daemon.start(deviceConfig(w, { policy: { ...DEFAULT_POLICY, readRetries: 1, retryBackoffMs: 0 } }), {
    native, runDir: w.runDir, log: quietLog(), logFile: null, stateDir,
  });
  sock = path.join(w.runDir, `${daemon.info.devId}.sock`);
  return daemon;
};
const stop = async (): Promise<void> => {
  await daemon?.shutdown('test');
  daemon = null;
};
const scan = () => request(sock, 'scan', {});
const until = async (what: () => Promise<boolean>, ms = 8000): Promise<void> => {
  const end = Date.now() + ms;
  while (!(await what())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
};
async function rejected(p: Promise<unknown>): Promise<DmrError> {
  const e = await p.then(() => null, (x: unknown) => x);
  expect(e).toBeInstanceOf(DmrError);
  return e as DmrError;
}

beforeEach(() => {
  w = makeWorld();
  stateDir = path.join(w.root, 'state');
  native = fakeFor(w);
  daemon = null;
});
afterEach(async () => {
  await stop();
  w.cleanup();
});

describe('the scan over the control socket', () => {
  it('a pass reads the device, marks unreadable blocks pending, and shows scan=100% when done', async () => {
    await start();
    const bs = daemon?.status().blockSize as number;
    expect(await scan()).toMatchObject({ state: 'idle', progress: 0, pass: 0, position: 0 });
    expect(daemon?.status().remap.line).toMatch(/ scan=0%$/);
    native.cfg.failReads.push({ device: 'main', offset: 3 * 1048576 + 7 * bs, bytes: bs, code: 'EIO' });
    const started = await request(sock, 'scan_start', {});
    expect(started).toMatchObject({ state: 'running', pass: 1 });
    await until(async () => (await scan()).state === 'done');
    const s = await scan();
    expect(s).toMatchObject({ state: 'done', progress: 100, position: s.deviceBytes, errorsFound: 1, etaSeconds: null });
    expect(s.finishedAt).not.toBeNull();
    expect(daemon?.status().remap.line).toMatch(/ scan=100%$/);
    const block = (3 * 1048576) / bs + 7;
    const e = daemon?.['engine']?.store.table.get(block);
    expect(e).toMatchObject({ state: 'lost' });
    const stats = await request(sock, 'stats', {});
    expect(stats).toMatchObject({ readErrors: 1, unrecoveredReads: 1, slowIos: 0, slowBlocks: 0, pendingBlocks: 1 });
    // A remap of origin scan: counted in autoRemaps and, apart, in scanRemaps (stats, status, the outputs).
    expect(e).toMatchObject({ origin: 'scan' });
    expect(stats).toMatchObject({ autoRemaps: 1, scanRemaps: 1, manualRemaps: 0 });
    expect((await request(sock, 'status', {})).remap).toMatchObject({ autoRemaps: 1, scanRemaps: 1, manualRemaps: 0 });
    expect(describeStatsReport(stats)).toMatch(/^remaps {12}1 automatic \(1 found by the background scan\), 0 manual, /m);
    expect((await request(sock, 'message', { words: ['stats'] })).reply).toMatch(/ auto_remaps=1 manual_remaps=0 scan_remaps=1 /);
    // From a daemon older than the field: the automatic remaps without the scan's share.
    const { scanRemaps: _, ...older } = stats;
    expect(describeStatsReport(older)).toMatch(/^remaps {12}1 automatic, 0 manual, /m);
    // The next pass comes to the pending block: it reads on main now, so it goes back there.
    native.cfg.failReads.length = 0;
    await request(sock, 'scan_start', {});
    await until(async () => (await scan()).state === 'done');
    expect(daemon?.['engine']?.store.table.get(block)).toBeUndefined();
    expect(await request(sock, 'stats', {})).toMatchObject({ recoveredBlocks: 1, pendingBlocks: 0 });
    expect(await scan()).toMatchObject({ pass: 2, errorsFound: 0 });
    // Remaps ever made: the block leaving the table takes nothing back, and a new daemon reads it from the spare.
    expect(await request(sock, 'stats', {})).toMatchObject({ autoRemaps: 1, scanRemaps: 1 });
    await stop();
    await start();
    expect(await request(sock, 'stats', {})).toMatchObject({ autoRemaps: 1, scanRemaps: 1, manualRemaps: 0 });
  });

  it('refuses commands that do not fit the state (E_SCAN_STATE) and a rate that is not above 0 (E_USAGE), changing nothing', async () => {
    await start();
    for (const cmd of ['scan_pause', 'scan_resume', 'scan_stop'] as const) {
      const e = await rejected(request(sock, cmd, {}));
      expect(e.code).toBe('E_SCAN_STATE');
      expect(e.message).toMatch(/idle/);
      expect(e.message).not.toContain('\n');
    }
    for (const rateMib of [0, -5, 2_000_000, 1e-300, 0.009]) {
      const e = await rejected(request(sock, 'scan_start', { rateMib }));
      expect(e.code).toBe('E_USAGE');
      expect(e.message).toBe(`scan rate must be a number of MiB/s from 0.01 to 1048576, got ${String(rateMib)}`);
    }
    expect((await rejected(request(sock, 'scan_start', { rateMib: 'fast' as unknown as number }))).code).toBe('E_PROTOCOL');
    expect(await scan()).toMatchObject({ state: 'idle', pass: 0 });
    await request(sock, 'scan_start', { rateMib: 1 });
    const e = await rejected(request(sock, 'scan_start', {}));
    expect(e.code).toBe('E_SCAN_STATE');
    expect(e.message).toMatch(/already running/);
    expect(await scan()).toMatchObject({ state: 'running', pass: 1 });
    // The same as dmsetup-style messages.
    expect((await request(sock, 'message', { words: ['scan', 'pause'] })).reply).toMatch(/^scan paused/);
    expect((await request(sock, 'message', { words: ['scan'] })).reply).toMatch(/^scan paused/);
    expect((await rejected(request(sock, 'message', { words: ['scan', 'start', '0'] }))).code).toBe('E_USAGE');
    expect((await request(sock, 'message', { words: ['scan', 'stop'] })).reply).toMatch(/^scan idle/);
  });
});

describe('users\' slow reads in the daemon', () => {
  it('native is told slow_io_ms; a block slow in two users\' reads (each confirmed by a re-read, no scan running) is relocated with its data, and stats count the reads', async () => {
    await start();
    const dev = native.devices[0] as FakeDevice;
    expect(dev.slowIoUs).toBe(500_000);
    const bs = daemon?.status().blockSize as number;
    const block = 40;
    const before = Buffer.alloc(bs, 0x5a);
    const fd = fs.openSync(w.main, 'r+');
    fs.writeSync(fd, before, 0, bs, block * bs);
    fs.closeSync(fd);
    dev.scanLatencyUs = (b) => (b === block ? 800_000 : 0);
    const slowRead = () => dev.emit({ type: 'slow_io', queue: 0, block, blocks: 1, latencyUs: 800_000, inflight: 1, dropped: 0 });
    slowRead();
    await until(async () => (await request(sock, 'stats', {})).slowBlocks === 1);
    expect(daemon?.['engine']?.store.table.get(block)).toBeUndefined(); // once: not yet
    slowRead();
    await until(async () => daemon?.['engine']?.store.table.get(block)?.state === 'mapped');
    expect(daemon?.['engine']?.store.table.get(block)).toMatchObject({ state: 'mapped', origin: 'scan' });
    expect(await request(sock, 'stats', {})).toMatchObject({ slowIos: 2, userSlowReads: 2, userSlowUnjudged: 0, slowBlocks: 2, slowChunks: 0 });
    expect(await scan()).toMatchObject({ state: 'idle' });
    // Its data moved with it: the block's slot on the spare holds what main held.
    const slot = (daemon?.['engine']?.store.table.get(block) as { slot: number }).slot;
    const base = Number(daemon?.['engine']?.spareDataOffset);
    expect(await dev.readRange('spare', BigInt(base + slot * bs), bs)).toEqual(before);
  }, 20_000);
});

describe('the scan settings', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  it('come from the config file: the device\'s section over the global keys over the defaults', async () => {
    const file = path.join(w.root, 'config.json');
    fs.writeFileSync(file, JSON.stringify({ scanRateMib: 2, slowIoMs: 900, devices: { data: { slowIoMs: 100, scanIntervalDays: 0 } } }));
    vi.stubEnv('DMREMAP_CONFIG', file);
    await start();
    expect(daemon?.['scanner']?.['settings']).toEqual({ scanRateMib: 2, scanMinRateMib: 1, scanIntervalDays: 0, slowIoMs: 100, slowThreshold: 2 });
    await request(sock, 'scan_start', {});
    // The ceiling is the config's: 2 MiB/s, however idle the device.
    await new Promise((r) => setTimeout(r, 1200));
    expect((await scan()).rateBps).toBe(2 * 1048576);
  });

  it('a config file that cannot be used: the defaults, and the device starts', async () => {
    const file = path.join(w.root, 'config.json');
    fs.writeFileSync(file, '{"scanRateMib": 0}');
    vi.stubEnv('DMREMAP_CONFIG', file);
    await start();
    expect(daemon?.['scanner']?.['settings']).toEqual({ scanRateMib: 64, scanMinRateMib: 1, scanIntervalDays: 30, slowIoMs: 500, slowThreshold: 2 });
  });
});

describe('the scan across daemons', () => {
  it('a running scan resumes where it was; a paused one stays paused; a done one stays done', async () => {
    await start();
    const pairId = daemon?.status().remap.pairId as string;
    const size = daemon?.status().sizeBytes as number;
    await request(sock, 'scan_start', { rateMib: 2 });
    await until(async () => (await scan()).position >= 2 * 1048576);
    await stop();
    const saved = loadScan(stateDir, pairId, size);
    expect(saved?.cursor.state).toBe('running');
    const at = saved?.cursor.position as number;
    expect(at).toBeGreaterThanOrEqual(2 * 1048576);

    await start();
    const s = await scan();
    expect(s.state).toBe('running');
    expect(s.position).toBeGreaterThanOrEqual(at);
    expect(s.pass).toBe(1);
    await request(sock, 'scan_pause', {});
    const pausedAt = (await scan()).position;
    await stop();

    await start();
    expect(await scan()).toMatchObject({ state: 'paused', position: pausedAt, pass: 1 });
    await new Promise((r) => setTimeout(r, 300));
    expect((await scan()).position).toBe(pausedAt);
    await request(sock, 'scan_resume', {});
    await until(async () => (await scan()).state === 'done');
    await stop();

    await start();
    expect(await scan()).toMatchObject({ state: 'done', progress: 100, pass: 1 });
    expect(daemon?.status().remap.line).toMatch(/ scan=100%$/);
  });

  it('detach (restart) and recover: a running scan goes on where it was, in the successor', async () => {
    native = fakeFor(w, { features: RECOVERY_FEATURES });
    await start();
    const id = daemon?.info.devId as number;
    await request(sock, 'scan_start', { rateMib: 2 });
    await until(async () => (await scan()).position >= 2 * 1048576);
    await daemon?.detach('upgrade');
    daemon = null;
    const e = readEntryOf(w.runDir, id) as RegistryEntryV2;
    writeEntry(w.runDir, { ...e, pid: DEAD_PID, pidStart: null });
    daemon = await Daemon.recover(id, { native, runDir: w.runDir, log: quietLog(), logFile: null, stateDir });
    const s = await scan();
    expect(s.state).toBe('running');
    expect(s.position).toBeGreaterThanOrEqual(2 * 1048576);
  });

  it('an unusable scan file is set aside for a fresh cursor; the daemon starts', async () => {
    await start();
    const pairId = daemon?.status().remap.pairId as string;
    await stop();
    fs.mkdirSync(stateDir, { recursive: true });
    fs.writeFileSync(scanFilePath(stateDir, pairId), 'not a scan file');
    await start();
    expect(await scan()).toMatchObject({ state: 'idle', pass: 0 });
    await request(sock, 'scan_start', { rateMib: 1 });
    expect(await scan()).toMatchObject({ state: 'running', pass: 1 });
  });
});
