// `dmremap-ublk scan` against a daemon in this process (fake addon): the status, the actions, bad input
// (one line, exit code, nothing changed), start --wait and --watch (a bar on a terminal, plain lines
// otherwise, ending when the pass is done or the display is aborted).
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { main } from '../../src/cli/main.js';
import { runScan } from '../../src/cli/scan.js';
import { Daemon } from '../../src/device/daemon.js';
import type { FakeNative } from '../../src/testing/fake-native.js';
import { captureCtx, deviceConfig, fakeFor, makeWorld, quietLog, type Captured, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemon: Daemon | null;
let sock: string;

beforeEach(async () => {
  w = makeWorld();
  native = fakeFor(w);
  daemon = await Daemon.start(deviceConfig(w), { native, runDir: w.runDir, log: quietLog(), logFile: null, stateDir: path.join(w.root, 'state') });
  sock = path.join(w.runDir, `${daemon.info.devId}.sock`);
});
afterEach(async () => {
  await daemon?.shutdown('test');
  daemon = null;
  w.cleanup();
});

const run = async (args: string[], tty = false): Promise<{ code: number; out: string; err: string; cap: Captured }> => {
  const cap = captureCtx(w, native);
  if (tty) cap.ctx.stdoutIsTTY = true;
  const code = await main(['scan', ...args], cap.ctx);
  return { code, out: cap.stdout(), err: cap.stderr(), cap };
};

describe('dmremap-ublk scan', () => {
  it('shows the status, as a line or JSON', async () => {
    const a = await run(['data']);
    expect(a.code).toBe(0);
    expect(a.out).toMatch(/^scan idle, 0%, 0\/\d+ bytes, pass 0, errors 0, slow 0, started -, finished -\n$/);
    const j = await run(['data', '--json']);
    expect(JSON.parse(j.out)).toMatchObject({ state: 'idle', progress: 0, position: 0, pass: 0, rateBps: 0, etaSeconds: null, startedAt: null });
  });

  it('refuses bad input with one line and the right exit code, changing nothing', async () => {
    const cases: Array<[string[], number, RegExp]> = [
      [['data', 'start', '--rate', '0'], 2, /--rate must be a number of MiB\/s from 0.01 to 1048576, got "0"/],
      [['data', 'start', '--rate=-3'], 2, /--rate must be a number of MiB\/s from 0.01 to 1048576, got "-3"/],
      [['data', 'start', '--rate', 'fast'], 2, /--rate must be a number of MiB\/s from 0.01 to 1048576, got "fast"/],
      [['data', 'start', '--rate', '2000000'], 2, /--rate must be a number of MiB\/s from 0.01 to 1048576, got "2000000"/],
      [['data', 'pause', '--rate', '5'], 2, /--rate goes with "scan <device> start"/],
      [['data', 'frobnicate'], 2, /unknown scan action "frobnicate"/],
      [['data', 'start', 'now'], 2, /one action/],
      [['data', 'pause'], 1, /no scan is running \(the scan is idle\)/],
      [['data', 'resume'], 1, /no scan is paused \(the scan is idle\)/],
      [['data', 'stop'], 1, /no scan is running or paused \(the scan is idle\)/],
      [['data', 'stop', '--watch'], 2, /--watch/],
      [['nosuch'], 1, /nosuch/],
    ];
    for (const [args, code, msg] of cases) {
      const r = await run(args);
      expect(r.code, args.join(' ')).toBe(code);
      expect(r.err).toMatch(msg);
      expect(r.err.trim().split('\n')).toHaveLength(1);
      expect(r.out).toBe('');
    }
    expect(await request(sock, 'scan', {})).toMatchObject({ state: 'idle', pass: 0 });
    // --json failures: the error object on stdout.
    const j = await run(['data', 'pause', '--json']);
    expect(JSON.parse(j.out)).toMatchObject({ error: { code: 'E_SCAN_STATE' } });
  });

  it('start, pause, resume, stop', async () => {
    expect((await run(['data', 'start', '--rate', '0.5'])).out).toMatch(/^scan running, 0%,/);
    expect((await run(['data', 'start'])).err).toMatch(/a scan is already running/);
    expect((await run(['data', 'pause'])).out).toMatch(/^scan paused/);
    expect((await run(['data', 'resume'])).out).toMatch(/^scan running/);
    expect((await run(['data', 'stop'])).out).toMatch(/^scan idle, 0%/);
  });

  it('start --wait prints plain lines when stdout is not a terminal and ends when the pass is done', async () => {
    const r = await run(['data', 'start', '--wait']);
    expect(r.code).toBe(0);
    const lines = r.out.trim().split('\n');
    expect(lines[0]).toMatch(/^scan running/);
    expect(lines.at(-1)).toMatch(/^scan done, 100%/);
    expect(r.out).not.toContain('\r');
    expect(daemon?.status().remap.line).toMatch(/ scan=100%$/);
  });

  it('--watch draws a bar in place on a terminal and ends at the end of the pass', async () => {
    await request(sock, 'scan_start', {});
    const r = await run(['data', '--watch'], true);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/\r\x1b\[2K\[#{30}\] 100%/);
    expect(r.out.endsWith('\n')).toBe(true);
  });

  it('--watch ends when aborted (Ctrl-C) while the scan goes on; --wait fails when the pass is stopped', async () => {
    await request(sock, 'scan_start', { rateMib: 1 });
    const cap = captureCtx(w, native);
    const stop = new AbortController();
    const p = runScan(cap.ctx, 'data', null, { wait: false, watch: true, json: true }, { intervalMs: 20, signal: stop.signal });
    await new Promise((r) => setTimeout(r, 100));
    stop.abort();
    expect(await p).toBe(0);
    const lines = cap.stdout().trim().split('\n').map((l) => JSON.parse(l) as { state: string });
    expect(lines.length).toBeGreaterThanOrEqual(2);
    expect(lines.every((l) => l.state === 'running')).toBe(true);
    expect((await request(sock, 'scan', {})).state).toBe('running');

    await request(sock, 'scan_stop', {});
    const cap2 = captureCtx(w, native);
    const waiting = runScan(cap2.ctx, 'data', 'start', { wait: true, watch: false, json: false, rate: 1 }, { intervalMs: 20 });
    await new Promise((r) => setTimeout(r, 100));
    await request(sock, 'scan_stop', {});
    await expect(waiting).rejects.toMatchObject({ code: 'E_SCAN_STATE', message: expect.stringMatching(/stopped before pass 2 finished/) });
  });
});
