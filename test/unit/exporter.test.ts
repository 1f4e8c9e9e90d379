// The Prometheus exporter (src/exporter/) against real daemons over the fake addon, a socket that never
// answers and a daemon that is gone: what /metrics says, that it passes promtool's lint, that a device that
// does not answer is up 0 within the timeout, that a removed device disappears, and the CLI's bad input.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { processStartTime, writeEntry } from '../../src/control/registry.js';
import { Daemon } from '../../src/device/daemon.js';
import { main } from '../../src/cli/main.js';
import { downLine } from '../../src/cli/exporter.js';
import { Exporter } from '../../src/exporter/server.js';
import { latencyBuckets, remapCounters } from '../../src/exporter/metrics.js';
import { DEFAULT_POLICY } from '../../src/config/policy.js';
import { listenSchema } from '../../src/exporter/listen.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { captureCtx, cliSpawn, DEAD_PID, deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';
import { promtool, SKIP_PROMTOOL } from './promtool.js';

let w: World;
let native: FakeNative;
const daemons: Daemon[] = [];
const closers: (() => Promise<void> | void)[] = [];

beforeEach(() => {
  w = makeWorld();
  fs.mkdirSync(w.runDir, { mode: 0o700 });
  native = fakeFor(w);
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  for (const d of daemons.splice(0)) await d.shutdown('test');
  w.cleanup();
});

async function startDaemon(name: string, main: string, spare: string): Promise<{ d: Daemon; dev: FakeDevice; sock: string }> {
  const d = await Daemon.start(deviceConfig(w, { name, mainPath: main, sparePath: spare }), { native, runDir: w.runDir, log: quietLog(), logFile: null });
  daemons.push(d);
  return { d, dev: native.devices.at(-1) as FakeDevice, sock: path.join(w.runDir, `${d.info.devId}.sock`) };
}

async function exporter(timeoutMs = 2000): Promise<string> {
  const e = await Exporter.listen({ host: '127.0.0.1', port: 0 }, { runDir: w.runDir, deviceTimeoutMs: timeoutMs });
  closers.push(() => e.close());
  return `http://127.0.0.1:${e.address.port}`;
}

/** The value of the one sample `series` (name{labels} exactly as printed), or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** A registry entry whose daemon "runs" (this process) at a socket that accepts and never answers. */
async function silentDevice(devId: number): Promise<string> {
  const sockPath = path.join(w.runDir, `${devId}.sock`);
  const held: net.Socket[] = [];
  const server = net.createServer((s) => held.push(s));
  await new Promise<void>((r) => server.listen(sockPath, r));
  closers.push(() => {
    for (const s of held) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  const blockPath = path.join(w.devDir, `ublkb${devId}`);
  writeEntry(w.runDir, {
    version: 1, devId, name: 'silent', pid: process.pid, pidStart: processStartTime(process.pid), blockPath,
    charPath: path.join(w.devDir, `ublkc${devId}`), socket: sockPath, logFile: null, startedAt: new Date().toISOString(),
    main: { path: '/dev/sdx', identity: 'b:1' }, spare: { path: '/dev/sdy', identity: 'b:2' },
  });
  return blockPath;
}

describe('exporter', () => {
  it('exports a running device\'s counters, histogram, health and scan, as its daemon reports them, and promtool accepts it', async () => {
    const { d, dev, sock } = await startDaemon('data', w.main, w.spare);
    Object.assign(dev.queueStats[0] as object, { reads: 10, readBytes: 40960, writes: 3, writeBytes: 12288, flushes: 2, discards: 1 });
    (dev.queueStats[0] as FakeDevice['queueStats'][0]).latencyLog2Us[3] = 7; // [8, 16) µs
    (dev.queueStats[0] as FakeDevice['queueStats'][0]).latencyLog2Us[10] = 3; // [1024, 2048) µs
    await request(sock, 'remap', { sector: 100 });
    const url = await exporter();
    const res = await fetch(`${url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    const l = `device="${d.info.blockPath}",name="data"`;
    const stats = await request(sock, 'stats', {});
    const status = await request(sock, 'status', {});
    expect(sample(text, `dmremap_up{${l}}`)).toBe(1);
    expect(sample(text, `dmremap_io_requests_total{${l},op="read"}`)).toBe(10);
    expect(sample(text, `dmremap_io_requests_total{${l},op="write"}`)).toBe(3);
    expect(sample(text, `dmremap_io_requests_total{${l},op="flush"}`)).toBe(2);
    expect(sample(text, `dmremap_io_requests_total{${l},op="discard"}`)).toBe(1);
    expect(sample(text, `dmremap_io_bytes_total{${l},op="read"}`)).toBe(40960);
    expect(sample(text, `dmremap_io_bytes_total{${l},op="write"}`)).toBe(12288);
    expect(sample(text, `dmremap_remaps_total{${l},origin="manual"}`)).toBe(1);
    expect(sample(text, `dmremap_remaps_total{${l},origin="manual"}`)).toBe(stats.manualRemaps);
    expect(sample(text, `dmremap_remapped_blocks{${l},state="mapped"}`)).toBe(1);
    expect(sample(text, `dmremap_spare_slots_used{${l}}`)).toBe(status.remap.used);
    expect(sample(text, `dmremap_spare_slots_free{${l}}`)).toBe(status.remap.free);
    expect(sample(text, `dmremap_health_score{${l}}`)).toBe(status.health.score);
    expect(sample(text, `dmremap_health_state{${l},state="${status.health.state}"}`)).toBe(1);
    expect(text.split('\n').filter((s) => s.startsWith(`dmremap_health_state{${l}`) && s.endsWith(' 1'))).toHaveLength(1);
    expect(sample(text, `dmremap_scan_state{${l},state="idle"}`)).toBe(1);
    expect(sample(text, `dmremap_daemon_start_time_seconds{${l}}`)).toBe(Date.parse(status.startedAt) / 1000);
    // The histogram: cumulative, le in seconds, +Inf = _count = every request counted.
    expect(sample(text, `dmremap_io_latency_seconds_bucket{${l},le="0.000008"}`)).toBe(0);
    expect(sample(text, `dmremap_io_latency_seconds_bucket{${l},le="0.000016"}`)).toBe(7);
    expect(sample(text, `dmremap_io_latency_seconds_bucket{${l},le="0.001024"}`)).toBe(7);
    expect(sample(text, `dmremap_io_latency_seconds_bucket{${l},le="0.002048"}`)).toBe(10);
    expect(sample(text, `dmremap_io_latency_seconds_bucket{${l},le="+Inf"}`)).toBe(10);
    expect(sample(text, `dmremap_io_latency_seconds_count{${l}}`)).toBe(10);
    expect(text).not.toMatch(/dmremap_io_latency_seconds_sum/);
    expect(text).toMatch(/^# TYPE dmremap_io_requests_total counter$/m);
    expect(text).toMatch(/^# TYPE dmremap_io_latency_seconds histogram$/m);
    if (!SKIP_PROMTOOL) {
      const r = promtool(['check', 'metrics'], text);
      expect(r.output).toBe('');
      expect(r.status).toBe(0);
    }
  });

  it('remaps by origin: auto (a user read that failed every try, and the background scan), manual; the scan part apart in dmremap_scan_remaps_total; promtool accepts it', async () => {
    const policy = { ...DEFAULT_POLICY, autoRemap: true, errorThreshold: 1, readRetries: 0, retryBackoffMs: 0 };
    const d = await Daemon.start(deviceConfig(w, { name: 'data', policy }), {
      native, runDir: w.runDir, log: quietLog(), logFile: null, stateDir: path.join(w.root, 'state'),
    });
    daemons.push(d);
    const dev = native.devices.at(-1) as FakeDevice;
    const sock = path.join(w.runDir, `${d.info.devId}.sock`);
    const bs = d.status().blockSize;
    const until = async (what: () => Promise<boolean>): Promise<void> => {
      const end = Date.now() + 8000;
      while (!(await what())) {
        if (Date.now() > end) throw new Error('timed out');
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    // Two blocks the scan finds unreadable: pending, origin scan.
    native.cfg.failReads.push({ device: 'main', offset: 100 * bs, bytes: bs, code: 'EIO' }, { device: 'main', offset: 300 * bs, bytes: bs, code: 'EIO' });
    await request(sock, 'scan_start', {});
    await until(async () => (await request(sock, 'scan', {})).state === 'done');
    // A user's read of block 12 fails every try: pending, origin auto.
    native.cfg.failReads.push({ device: 'main', offset: 12 * bs, bytes: bs, code: 'ENODATA' });
    const f = { type: 'io_fault' as const, queue: 0, tag: 1, seq: 1, kind: 'error' as const, op: 'read' as const, block: 12, blocks: 1, attempt: 0, latencyUs: 100, written: [],
      failed: [{ device: 'main' as const, block: 12, blocks: 1, errno: 61 }] };
    dev.emit(f);
    expect(await dev.awaitResolution(f)).toEqual({ action: 'fail', errno: 5 });
    await request(sock, 'remap', { sector: (500 * bs) / 512 });
    const origins = (await request(sock, 'table', {})).entries.map((e) => `${e.block}:${e.origin}`);
    expect(origins).toEqual(['12:auto', '100:scan', '300:scan', '500:manual']);
    const stats = await request(sock, 'stats', {});
    expect(stats).toMatchObject({ autoRemaps: 3, scanRemaps: 2, manualRemaps: 1 });
    const text = await (await fetch(`${await exporter()}/metrics`)).text();
    const l = `device="${d.info.blockPath}",name="data"`;
    expect(sample(text, `dmremap_remaps_total{${l},origin="auto"}`)).toBe(3);
    expect(sample(text, `dmremap_remaps_total{${l},origin="manual"}`)).toBe(1);
    expect(text).not.toContain('origin="scan"');
    expect(sample(text, `dmremap_scan_remaps_total{${l}}`)).toBe(2);
    expect(text).toMatch(/^# HELP dmremap_remaps_total .*auto .*manual/m);
    expect(text).toMatch(/^# TYPE dmremap_scan_remaps_total counter$/m);
    if (!SKIP_PROMTOOL) {
      const r = promtool(['check', 'metrics'], text);
      expect(r.output).toBe('');
      expect(r.status).toBe(0);
    }
  });

  it('a device whose daemon never answers is up 0 within the timeout; the others are still exported', async () => {
    const { d } = await startDaemon('data', w.main, w.spare);
    const silent = await silentDevice(7);
    const url = await exporter(300);
    const t0 = Date.now();
    const text = await (await fetch(`${url}/metrics`)).text();
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(sample(text, `dmremap_up{device="${silent}",name="silent"}`)).toBe(0);
    expect(text).not.toMatch(new RegExp(`dmremap_io_requests_total\\{device="${silent}"`));
    expect(sample(text, `dmremap_up{device="${d.info.blockPath}",name="data"}`)).toBe(1);
    expect(sample(text, `dmremap_info{device="${silent}",name="silent",dev_id="7",main="/dev/sdx",spare="/dev/sdy"}`)).toBe(1);
  });

  it('a device whose daemon is gone is up 0 without being asked', async () => {
    writeEntry(w.runDir, {
      version: 1, devId: 3, name: null, pid: DEAD_PID, pidStart: null, blockPath: '/dev/ublkb3', charPath: '/dev/ublkc3',
      socket: path.join(w.runDir, '3.sock'), logFile: null, startedAt: new Date().toISOString(),
      main: { path: '/dev/sdx', identity: 'b:1' }, spare: { path: '/dev/sdy', identity: 'b:2' },
    });
    const url = await exporter();
    const text = await (await fetch(`${url}/metrics`)).text();
    expect(sample(text, 'dmremap_up{device="/dev/ublkb3",name=""}')).toBe(0);
  });

  it('a device that is removed disappears from the next scrape; two devices each have their own series', async () => {
    const a = await startDaemon('a', w.main, w.spare);
    const b = await startDaemon('b', w.file('main2.img', 8 << 20), w.file('spare2.img', 4 << 20));
    const url = await exporter();
    let text = await (await fetch(`${url}/metrics`)).text();
    expect(sample(text, `dmremap_up{device="${a.d.info.blockPath}",name="a"}`)).toBe(1);
    expect(sample(text, `dmremap_up{device="${b.d.info.blockPath}",name="b"}`)).toBe(1);
    expect(sample(text, 'dmremap_exporter_devices')).toBe(2);
    await b.d.shutdown('test');
    daemons.splice(daemons.indexOf(b.d), 1);
    text = await (await fetch(`${url}/metrics`)).text();
    expect(text).not.toContain(`device="${b.d.info.blockPath}"`);
    expect(sample(text, `dmremap_up{device="${a.d.info.blockPath}",name="a"}`)).toBe(1);
    if (!SKIP_PROMTOOL) expect(promtool(['check', 'metrics'], text)).toEqual({ status: 0, output: '' });
  });

  it('serves / as a page pointing to /metrics; other paths are 404, other methods 405', async () => {
    const url = await exporter();
    const index = await fetch(`${url}/`);
    expect(index.status).toBe(200);
    expect(await index.text()).toContain('href="/metrics"');
    expect((await fetch(`${url}/nope`)).status).toBe(404);
    expect((await fetch(`${url}/metrics`, { method: 'POST' })).status).toBe(405);
    // No device: still valid, with up absent and the exporter's own gauges.
    const text = await (await fetch(`${url}/metrics`)).text();
    expect(sample(text, 'dmremap_exporter_devices')).toBe(0);
    if (!SKIP_PROMTOOL) expect(promtool(['check', 'metrics'], text)).toEqual({ status: 0, output: '' });
  });
});

describe('exporter (the built CLI)', () => {
  it('serves until SIGTERM, then exits 0; a device that is down is one stderr line, not one per scrape', async () => {
    writeEntry(w.runDir, {
      version: 1, devId: 3, name: 'gone', pid: DEAD_PID, pidStart: null, blockPath: '/dev/ublkb3', charPath: '/dev/ublkc3',
      socket: path.join(w.runDir, '3.sock'), logFile: null, startedAt: new Date().toISOString(),
      main: { path: '/dev/sdx', identity: 'b:1' }, spare: { path: '/dev/sdy', identity: 'b:2' },
    });
    const child = cliSpawn(w, ['exporter', '--listen', '127.0.0.1:0', '--json']);
    closers.push(() => void child.kill('SIGKILL'));
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (t: string) => (err += t));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const first = await new Promise<{ listening: string; url: string; pid: number }>((resolve, reject) => {
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (t: string) => {
        out += t;
        if (out.includes('\n')) resolve(JSON.parse(out.slice(0, out.indexOf('\n'))) as { listening: string; url: string; pid: number });
      });
      void exited.then((code) => reject(new Error(`exporter exited ${code}: ${err}`)));
    });
    expect(first.url).toBe(`http://${first.listening}/metrics`);
    expect(first.pid).toBe(child.pid);
    for (let i = 0; i < 2; i++) {
      const text = await (await fetch(first.url)).text();
      expect(sample(text, 'dmremap_up{device="/dev/ublkb3",name="gone"}')).toBe(0);
    }
    expect(err).toBe(`dmremap-ublk exporter: /dev/ublkb3 (gone) is down: its daemon (pid ${DEAD_PID}) is gone\n`);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});

describe('the exporter\'s "is down" line', () => {
  it('escapes control characters in the device, its name and the reason (a path holding ESC or a newline): one line', () => {
    const line = downLine({ device: '/dev/ublkb3', name: 'gone', error: 'cannot connect to /run/x\u001b[2J\nfake: line.sock: ENOENT' });
    expect(line).toBe('dmremap-ublk exporter: /dev/ublkb3 (gone) is down: cannot connect to /run/x\\u001b[2J\\u000afake: line.sock: ENOENT\n');
    expect(downLine({ device: '/dev/ublkb\u009b4', name: '', error: null })).toBe('dmremap-ublk exporter: /dev/ublkb\\u009b4 is down: down\n');
  });
});

describe('remapCounters', () => {
  it('exports each persisted counter as it is (never a difference that a reset of one could make go backwards); no scan series without scanRemaps', () => {
    expect(remapCounters({ autoRemaps: 5, scanRemaps: 2, manualRemaps: 1 })).toEqual({ byOrigin: [['auto', 5], ['manual', 1]], scan: 2 });
    // A rollback wrote scanRemaps back as 0: auto does not move, only the scan counter resets.
    expect(remapCounters({ autoRemaps: 5, scanRemaps: 0, manualRemaps: 1 })).toEqual({ byOrigin: [['auto', 5], ['manual', 1]], scan: 0 });
    expect(remapCounters({ autoRemaps: 5, manualRemaps: 1 })).toEqual({ byOrigin: [['auto', 5], ['manual', 1]], scan: undefined });
  });
});

describe('latencyBuckets', () => {
  it('turns native\'s log2 counts into cumulative le buckets in seconds; the last count is only in +Inf', () => {
    expect(latencyBuckets([1, 0, 2, 5])).toEqual([
      { le: '0.000002', count: 1 },
      { le: '0.000004', count: 1 },
      { le: '0.000008', count: 3 },
      { le: '+Inf', count: 8 },
    ]);
  });
});

describe('exporter --listen', () => {
  it('takes HOST:PORT, [v6]:PORT and :PORT', () => {
    expect(listenSchema.parse('127.0.0.1:9730')).toEqual({ host: '127.0.0.1', port: 9730 });
    expect(listenSchema.parse('[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(listenSchema.parse(':9730')).toEqual({ host: undefined, port: 9730 });
    expect(listenSchema.parse('localhost:80')).toEqual({ host: 'localhost', port: 80 });
  });

  it.each(['9730', '127.0.0.1', '127.0.0.1:', '127.0.0.1:65536', '127.0.0.1:-1', '[1.2.3.4]:80', 'a b:80', '::1:80', '127.0.0.1:9x'])(
    'refuses %j with one usage line, exit 2',
    async (bad) => {
      const c = captureCtx(w, native);
      expect(await main(['exporter', '--listen', bad], c.ctx)).toBe(2);
      expect(c.stderr()).toMatch(/^dmremap-ublk: --listen .*expected HOST:PORT.*\n$/);
      expect(c.stdout()).toBe('');
    },
  );

  it('a port in use is one line, E_LISTEN, exit 1', async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise<void>((r) => busy.close(() => r())));
    const port = (busy.address() as net.AddressInfo).port;
    const c = captureCtx(w, native);
    expect(await main(['exporter', '--listen', `127.0.0.1:${port}`, '--json'], c.ctx)).toBe(1);
    expect(c.stderr()).toBe(`dmremap-ublk: cannot listen on 127.0.0.1:${port}: the port is in use\n`);
    expect(JSON.parse(c.stdout())).toEqual({ error: { code: 'E_LISTEN', message: `cannot listen on 127.0.0.1:${port}: the port is in use` } });
  });
});
