// The daemon's lifecycle against the fake addon: start publishes the device (registry + socket with the
// right modes), status reflects configuration and events, every way of stopping removes every trace,
// and a crashed daemon's leftovers are cleaned up by the next one.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { readEntries, type RegistryEntry } from '../../src/control/registry.js';
import type { DeviceConfig } from '../../src/device/config.js';
import { Daemon } from '../../src/device/daemon.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { fakeFor, makeWorld, quietLog, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemon: Daemon | null;

const config = (over: Partial<DeviceConfig> = {}): DeviceConfig => ({
  mainPath: w.main,
  sparePath: w.spare,
  name: 'data',
  queues: 2,
  depth: 64,
  blockSize: undefined,
  maxIoBytes: 256 << 10,
  buffers: 'auto',
  ...over,
});
const start = (over: Partial<DeviceConfig> = {}): Promise<Daemon> =>
  Daemon.start(config(over), { native, runDir: w.runDir, log: quietLog(), logFile: '/tmp/x.log' });
const device = (): FakeDevice => native.devices.at(-1) as FakeDevice;

beforeEach(() => {
  w = makeWorld();
  native = fakeFor(w);
  daemon = null;
});
afterEach(async () => {
  await daemon?.shutdown('test done');
  w.cleanup();
});

describe('daemon', () => {
  it('publishes a live device: registry entry, socket, modes', async () => {
    daemon = await start();
    expect(daemon.info.blockPath).toBe(path.join(w.devDir, 'ublkb0'));
    expect(w.devNodes()).toEqual(['ublkb0', 'ublkc0']);
    expect(fs.statSync(w.runDir).mode & 0o777).toBe(0o700);
    expect(fs.statSync(path.join(w.runDir, '0.sock')).mode & 0o777).toBe(0o600);
    // 0640: the run directory (0700 here) decides who reads it; with a controlGroup, that group too.
    expect(fs.statSync(path.join(w.runDir, '0.json')).mode & 0o777).toBe(0o640);
    const { live, stale } = readEntries(w.runDir);
    expect(stale).toEqual([]);
    expect(live).toHaveLength(1);
    expect(live[0]).toMatchObject({ devId: 0, name: 'data', pid: process.pid, blockPath: daemon.info.blockPath, logFile: '/tmp/x.log' });
    expect(live[0]?.main.path).toBe(w.main);
    expect(live[0]?.main.identity).toMatch(/^f:\d+:\d+$/);
  });

  it('passes the planned geometry to the device', async () => {
    daemon = await start({ blockSize: 4096 });
    expect(device().opts).toMatchObject({
      mainPath: w.main,
      sparePath: w.spare,
      queues: 2,
      depth: 64,
      blockSize: 4096,
      sizeBytes: BigInt(8 << 20),
      maxIoBytes: 256 << 10,
      discard: true,
      devId: -1,
    });
  });

  it('serves zero-copy where the kernel offers UBLK_F_AUTO_BUF_REG, unless told to copy', async () => {
    daemon = await start();
    expect(device().opts.zeroCopy).toBe(false); // the fake's default features: no AUTO_BUF_REG
    expect(daemon.status().kernel.zeroCopy).toBe(false);
    await daemon.shutdown('next');
    native = fakeFor(w, { features: '0x3fde' }); // 7.x: AUTO_BUF_REG (bit 11) among others
    daemon = await start();
    expect(device().opts.zeroCopy).toBe(true);
    expect(daemon.status().kernel.zeroCopy).toBe(true);
    await daemon.shutdown('next');
    daemon = await start({ buffers: 'copy' });
    expect(device().opts.zeroCopy).toBe(false);
  });

  it('rounds the size down to the block size and defaults queues to min(4, CPUs)', async () => {
    const odd = w.file('odd.img', (1 << 20) + 1000);
    daemon = await start({ mainPath: odd, queues: undefined, blockSize: 4096 });
    expect(device().opts.sizeBytes).toBe(BigInt(1 << 20));
    expect(device().opts.queues).toBeGreaterThanOrEqual(1);
    expect(device().opts.queues).toBeLessThanOrEqual(4);
  });

  it('answers ping and status over its socket', async () => {
    daemon = await start();
    const sock = path.join(w.runDir, '0.sock');
    expect(await request(sock, 'ping', {})).toBe('pong');
    const s = await request(sock, 'status', {});
    expect(s).toMatchObject({
      devId: 0,
      name: 'data',
      pid: process.pid,
      state: 'live',
      sizeBytes: 8 << 20,
      blockSize: 512,
      queues: 2,
      depth: 64,
      maxIoBytes: 256 << 10,
      main: { path: w.main, sizeBytes: 8 << 20, isBlockDevice: false },
      spare: { path: w.spare, sizeBytes: 4 << 20 },
      io: { reads: 0, writes: 0, latencyP50Us: null },
      ioErrors: { total: 0, last: null, discardsRefused: 0 },
      kernel: { features: '0xc2', featureNames: ['URING_CMD_COMP_IN_TASK', 'CMD_IOCTL_ENCODE', 'USER_COPY'], opcodeEncoding: 'ioctl' },
      logFile: '/tmp/x.log',
    });
    expect(s.perQueue).toHaveLength(2);
  });

  it('sums queue counters and reports latency percentiles', async () => {
    daemon = await start();
    const [q0, q1] = device().queueStats as [FakeDevice['queueStats'][0], FakeDevice['queueStats'][0]];
    Object.assign(q0, { reads: 10, readBytes: 40960, writes: 1, writeBytes: 4096 });
    Object.assign(q1, { reads: 5, readBytes: 20480, inflight: 2 });
    q0.latencyLog2Us[3] = 90; // [8, 16) us
    q1.latencyLog2Us[10] = 10; // [1024, 2048) us
    const s = daemon.status();
    expect(s.io).toMatchObject({ reads: 15, readBytes: 61440, writes: 1, inflight: 2, latencyP50Us: 16, latencyP99Us: 2048 });
    // The merged histogram itself (the exporter's dmremap_io_latency_seconds): the queues' buckets summed.
    const hist = new Array<number>(24).fill(0);
    hist[3] = 90;
    hist[10] = 10;
    q0.latencyLog2Us[10] = 1;
    expect(daemon.status().io.latencyLog2Us).toEqual(hist.map((n, i) => (i === 10 ? 11 : n)));
    expect(s.perQueue.map((q) => q.reads)).toEqual([10, 5]);
  });

  it('counts I/O error events by device and errno', async () => {
    daemon = await start();
    device().emit({ type: 'io_error', queue: 0, op: 'read', device: 'main', sector: 2048n, sectors: 8, errno: 61, latencyUs: 10 });
    device().emit({ type: 'io_error', queue: 1, op: 'write', device: 'main', sector: 16n, sectors: 1, errno: 5, latencyUs: 10 });
    device().emit({ type: 'io_error', queue: 1, op: 'write', device: 'spare', sector: 0n, sectors: 1, errno: 5, latencyUs: 10 });
    const e = daemon.status().ioErrors;
    expect(e).toMatchObject({ total: 3, main: 2, spare: 1, byErrno: { ENODATA: 1, EIO: 2 } });
    expect(e.last).toMatchObject({ op: 'write', device: 'spare', sector: '0', sectors: 1, errno: 'EIO' });
  });

  it('counts a discard main refused apart: not an I/O error, not a write error (the request succeeded)', async () => {
    daemon = await start();
    device().emit({ type: 'io_error', queue: 0, op: 'discard', device: 'main', sector: 2048n, sectors: 8, errno: 5, latencyUs: 10 });
    device().emit({ type: 'io_error', queue: 1, op: 'discard', device: 'main', sector: 4096n, sectors: 1, errno: 22, latencyUs: 10 });
    let s = daemon.status();
    expect(s.ioErrors).toMatchObject({ total: 0, main: 0, byErrno: {}, last: null, discardsRefused: 2 });
    expect(s.remap.line).toContain(' errors=W0:R0 ');
    // A write error still counts as one (the same path, another op).
    device().emit({ type: 'io_error', queue: 1, op: 'write', device: 'main', sector: 16n, sectors: 1, errno: 5, latencyUs: 10 });
    s = daemon.status();
    expect(s.ioErrors).toMatchObject({ total: 1, main: 1, discardsRefused: 2 });
    expect(s.remap.line).toContain(' errors=W1:R0 ');
  });

  it('shuts down on the shutdown command: device stopped, files removed, exit 0', async () => {
    daemon = await start();
    const sock = path.join(w.runDir, '0.sock');
    expect(await request(sock, 'shutdown', {})).toEqual({ stopping: true });
    expect(await daemon.exited).toBe(0);
    expect(w.devNodes()).toEqual([]);
    expect(w.runDirEntries()).toEqual([]);
    expect(device().info().state).toBe('dead');
  });

  it('shutdown is idempotent', async () => {
    native = fakeFor(w, { stopDelayMs: 50 });
    daemon = await start();
    const [a, b] = [daemon.shutdown('one'), daemon.shutdown('two')];
    expect(a).toBe(b);
    expect(await a).toBe(0);
    expect(await daemon.shutdown('three')).toBe(0);
  });

  it('reports "stopping" while the device stops', async () => {
    native = fakeFor(w, { stopDelayMs: 200 });
    daemon = await start();
    void daemon.shutdown('test');
    expect(daemon.status().state).toBe('stopping');
    await daemon.exited;
  });

  it('stops with exit code 1 when a queue stops on its own', async () => {
    daemon = await start();
    device().emit({ type: 'queue_stopped', queue: 1, reason: 'ublk io command: No such device' });
    expect(await daemon.exited).toBe(1);
    expect(w.devNodes()).toEqual([]);
    expect(w.runDirEntries()).toEqual([]);
  });

  it('takes the lowest free device id and keeps devices apart', async () => {
    daemon = await start();
    const m2 = w.file('m2.img', 1 << 20);
    const s2 = w.file('s2.img', 1 << 20);
    const second = await start({ mainPath: m2, sparePath: s2, name: 'two' });
    expect(second.info.devId).toBe(1);
    expect(readEntries(w.runDir).live.map((e) => e.name)).toEqual(['data', 'two']);
    expect(await second.shutdown('done')).toBe(0);
    expect(readEntries(w.runDir).live.map((e) => e.name)).toEqual(['data']);
  });

  it('deletes the kernel device of a daemon that died, then starts', async () => {
    // A daemon that was killed -9: its registry entry and its kernel device remain; its pid is gone.
    const deadPid = 2 ** 22 + 12345;
    fs.mkdirSync(w.runDir, { mode: 0o700 });
    fs.writeFileSync(path.join(w.devDir, 'ublkc0'), String(deadPid));
    fs.writeFileSync(path.join(w.devDir, 'ublkb0'), '');
    const entry: RegistryEntry = {
      version: 1,
      devId: 0,
      name: 'old',
      pid: deadPid,
      pidStart: null,
      blockPath: path.join(w.devDir, 'ublkb0'),
      charPath: path.join(w.devDir, 'ublkc0'),
      socket: path.join(w.runDir, '0.sock'),
      logFile: null,
      startedAt: new Date().toISOString(),
      main: { path: w.main, identity: 'f:1:1' },
      spare: { path: w.spare, identity: 'f:1:2' },
    };
    fs.writeFileSync(path.join(w.runDir, '0.json'), JSON.stringify(entry));
    fs.writeFileSync(path.join(w.runDir, '0.sock'), '');
    expect(readEntries(w.runDir).stale).toHaveLength(1);
    daemon = await start({ name: 'old' });
    expect(daemon.info.devId).toBe(0);
    expect(readEntries(w.runDir)).toMatchObject({ live: [{ pid: process.pid, name: 'old' }], stale: [] });
  });

  it('deletes an orphan whose pid the kernel reset to -1 when its server died', async () => {
    fs.mkdirSync(w.runDir, { mode: 0o700 });
    fs.writeFileSync(path.join(w.devDir, 'ublkc0'), '-1'); // what GET_DEV_INFO reports after kill -9
    const stale = { version: 1, devId: 0, name: null, pid: 2 ** 22 + 7, pidStart: null, blockPath: 'b', charPath: 'c', socket: path.join(w.runDir, '0.sock'), logFile: null, startedAt: '', main: { path: 'm', identity: 'x' }, spare: { path: 's', identity: 'y' } };
    fs.writeFileSync(path.join(w.runDir, '0.json'), JSON.stringify(stale));
    daemon = await start();
    expect(daemon.info.devId).toBe(0); // the orphan's id was freed and reused
    expect(readEntries(w.runDir).stale).toEqual([]);
  });

  it('leaves a kernel device whose id a newer daemon reused', async () => {
    fs.mkdirSync(w.runDir, { mode: 0o700 });
    fs.writeFileSync(path.join(w.devDir, 'ublkc0'), String(process.pid)); // now owned by a live process
    const stale = { version: 1, devId: 0, name: null, pid: 2 ** 22 + 7, pidStart: null, blockPath: 'b', charPath: 'c', socket: path.join(w.runDir, '0.sock'), logFile: null, startedAt: '', main: { path: 'm', identity: 'x' }, spare: { path: 's', identity: 'y' } };
    fs.writeFileSync(path.join(w.runDir, '0.json'), JSON.stringify(stale));
    daemon = await start();
    expect(fs.existsSync(path.join(w.devDir, 'ublkc0'))).toBe(true);
    expect(daemon.info.devId).toBe(1);
  });
});
