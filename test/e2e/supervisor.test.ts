// The supervisor end to end (issue 12): `add` runs the daemon under a supervisor that recovers the device
// when the daemon dies, so kill -9 of the daemon is a pause for fio verify, not an error, and a background
// scan running beside it resumes within 1% of the device where it was (issue 13); `restart` swaps the
// daemon under fio verify; after 5 crashes in 60 s the supervisor gives up and leaves the device quiesced
// (list shows why), `recover` by hand serves it again and `del` removes a quiesced device; a kill -9 during a
// burst of auto-remaps loses nothing. Every test uses one setup: a supervised device over loop devices (or
// a dm error-segment main), its state directory in the test's scratch directory.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { BIN, ioErrorLinesSince, kernelLogNow, pidAlive, RUN_DIR, sh, ublkNodes, waitFor, type Added, type Result } from './helpers.js';
import { blockSegments, ErrorSources, leftoverDmDevices } from './error-sources.js';
import { expectCleanKernel, onPrimaryKernel, requireUblkHost } from './setup.js';

const MiB = 1 << 20;

let src: ErrorSources;
let dir: string;
let env: NodeJS.ProcessEnv;
const added: Added[] = [];

beforeAll(requireUblkHost);
beforeEach(() => {
  src = new ErrorSources();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-sup-'));
  env = { ...process.env, DMREMAP_STATE_DIR: path.join(dir, 'state') };
  sh('dmesg', ['-C']);
});
afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail') {
    const log = path.join(RUN_DIR, 'daemon.log');
    if (fs.existsSync(log)) console.log(fs.readFileSync(log, 'utf8').split('\n').slice(-60).join('\n'));
  }
  try {
    for (const d of added) if (fs.existsSync(d.blockPath)) cli('del', String(d.devId));
    added.length = 0;
  } finally {
    src.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  expectCleanKernel();
  expect(leftoverDmDevices()).toEqual([]);
});

function cli(...args: string[]): Result {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env, timeout: 180_000 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: `${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

/** The one setup: `add` (detached: under a supervisor) over `main` and a fresh 32 MiB spare. */
function addSupervised(main: string, ...extra: string[]): Added {
  const r = cli('add', '--main', main, '--spare', src.loop(32), '--json', '--block-size', '4096', ...extra);
  if (r.status !== 0) throw new Error(`add failed (${r.status}): ${r.stderr}`);
  const dev = JSON.parse(r.stdout) as Added;
  added.push(dev);
  return dev;
}

/** The pids of the processes whose parent is `pid`. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const n of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    try {
      if (parentPid(Number(n)) === pid) out.push(Number(n));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

function parentPid(pid: number): number {
  return Number(/^PPid:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
}

const sock = (d: Added): string => path.join(RUN_DIR, `${d.devId}.sock`);

/** The pid of the daemon answering `status` for `d` once it is not `oldPid`; waits up to `ms`. */
async function servedBy(d: Added, oldPid: number, ms = 180_000): Promise<{ pid: number; ms: number }> {
  const t0 = Date.now();
  for (;;) {
    try {
      const st = await request(sock(d), 'status', {}, 2000);
      if (st.pid !== oldPid && st.state === 'live') return { pid: st.pid, ms: Date.now() - t0 };
    } catch {
      // quiesced or recovering
    }
    if (Date.now() - t0 > ms) throw new Error(`${d.blockPath} not served by a new daemon within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Fio {
  status: number | null;
  error: number;
  writeBytes: number;
  readBytes: number;
  stderr: string;
}

/** fio in the background: O_DIRECT io_uring, JSON output; resolves when it ends. */
function fioAsync(dev: string, args: string[]): { done: Promise<Fio>; running: () => boolean } {
  const child = spawn('fio', ['--name=job', `--filename=${dev}`, '--direct=1', '--ioengine=io_uring', '--output-format=json', ...args], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  let exited = false;
  child.stdout.setEncoding('utf8').on('data', (t: string) => (out += t));
  child.stderr.setEncoding('utf8').on('data', (t: string) => (err += t));
  const done = new Promise<Fio>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (status) => {
      exited = true;
      const start = out.indexOf('{');
      if (start < 0) return reject(new Error(`fio printed no JSON (status ${status}): ${err}${out}`));
      const job = (JSON.parse(out.slice(start)) as { jobs: { error: number; read: { io_bytes: number }; write: { io_bytes: number } }[] }).jobs[0];
      resolve({ status, error: job?.error ?? -1, writeBytes: job?.write.io_bytes ?? 0, readBytes: job?.read.io_bytes ?? 0, stderr: err });
    });
  });
  return { done, running: () => !exited };
}

const VERIFY = ['--rw=randwrite', '--bsrange=4k-64k', '--iodepth=32', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1'];

/** Kernel log lines reporting an I/O error on the ublk device since this file started. */
const logSince = kernelLogNow();
const ioErrorsOf = (d: Added): string[] => ioErrorLinesSince(logSince, d.blockPath);

/** Waits until `d` has served at least `n` more requests (so a kill lands in the middle of fio's work). */
async function afterWrites(d: Added, n: number, timeoutMs = 120_000): Promise<void> {
  const t0 = Date.now();
  const done = (st: { io: { reads: number; writes: number } }): number => st.io.reads + st.io.writes;
  const base = done(await request(sock(d), 'status', {}));
  for (;;) {
    const st = await request(sock(d), 'status', {});
    if (done(st) - base >= n) return;
    if (Date.now() - t0 > timeoutMs) {
      const dmesg = sh('dmesg', []).stdout.split('\n').slice(-15).join('\n');
      throw new Error(`only ${done(st) - base} requests in ${timeoutMs} ms (status ${JSON.stringify(st.io)} ${JSON.stringify(st.perQueue)}); dmesg:\n${dmesg}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

const t0 = Date.now();
/** A progress line (the VM is slow: a failure should show how far a test got). */
const step = (what: string): void => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${what}`);

describe('supervisor', () => {
  it('kill -9 of the daemon three times during one fio verify run and a background scan: recovered each time without help, fio clean, the scan resumed within 1% of the device', async () => {
    const main = src.loop(448);
    const dev = addSupervised(main);
    const supervisor = parentPid(dev.pid);
    // A scan runs beside fio (near its floor while fio writes): every kill lands during both.
    const deviceBytes = 448 * MiB;
    expect(await request(sock(dev), 'scan_start', { rateMib: 16 })).toMatchObject({ state: 'running', pass: 1 });
    // Writes, then reads them back to verify: the kills land in either phase. fio must still be running at
    // the third kill, on a fast machine too (unthrottled, 384 MiB were written and verified before it, ~35 s
    // in): writes are capped at 4 MiB/s, so the write phase alone lasts at least 64 s, while a slow VM writes
    // slower than the cap anyway (128 MiB took 35 s there).
    const f = fioAsync(dev.blockPath, [...VERIFY, '--size=256M', '--rate=,4m']);
    let pid = dev.pid;
    const recoveries: number[] = [];
    for (let i = 0; i < 3; i++) {
      await Promise.race([
        afterWrites(dev, 200),
        f.done.then((r) => {
          throw new Error(`fio ended before kill ${i + 1}: status ${r.status}, error ${r.error}, ${r.writeBytes} bytes written: ${r.stderr}`);
        }),
      ]);
      expect(f.running(), `fio ended before kill ${i + 1}`).toBe(true);
      const scanBefore = await request(sock(dev), 'scan', {});
      step(`kill ${i + 1}: daemon ${pid} (scan at ${scanBefore.position} bytes)`);
      process.kill(pid, 'SIGKILL');
      const next = await servedBy(dev, pid);
      const scanAfter = await request(sock(dev), 'scan', {});
      step(`served by ${next.pid} after ${next.ms} ms; scan resumed at ${scanAfter.position} bytes`);
      // The cursor is saved every 5 s and each time it moved 1% of the device: a kill loses at most 1%.
      if (scanBefore.state === 'running') {
        expect(scanAfter.state).toBe('running');
        expect(scanAfter.position).toBeGreaterThanOrEqual(scanBefore.position - deviceBytes / 100);
      } else {
        expect(scanAfter).toMatchObject({ state: 'done', pass: 1 });
      }
      recoveries.push(next.ms);
      expect(parentPid(next.pid)).toBe(supervisor); // the supervisor, not a second one
      pid = next.pid;
      const st = cli('status', String(dev.devId), '--json');
      expect(st.status, st.stderr).toBe(0);
      expect(JSON.parse(st.stdout)).toMatchObject({ pid, state: 'live' });
    }
    const r = await f.done;
    step(`fio done: error ${r.error}, ${r.writeBytes} bytes written`);
    expect(r.error, r.stderr).toBe(0);
    expect(r.status).toBe(0);
    expect(r.writeBytes).toBe(256 * MiB);
    expect(ioErrorsOf(dev)).toEqual([]);
    // The scan read the same disk all along and found nothing wrong with it.
    const scan = await request(sock(dev), 'scan', {});
    step(`scan: ${JSON.stringify(scan)}`);
    expect(scan.errorsFound).toBe(0);
    expect(scan.position).toBeGreaterThan(0);
    console.log(`kill -9 x3 under fio verify: served again after ${recoveries.join(', ')} ms`);
  });

  // Primary kernel only (this and the burst case below): a restart and a kill during a burst recover through
  // the same kernel path (user recovery) as the kill -9 x3 case above, which runs on every kernel.
  it.runIf(onPrimaryKernel)('restart under fio verify: a new daemon serves the device, fio never notices', async () => {
    const dev = addSupervised(src.loop(128));
    const f = fioAsync(dev.blockPath, [...VERIFY, '--size=64M']);
    await afterWrites(dev, 200);
    step('restart');
    const r = cli('restart', String(dev.devId), '--json');
    step(`restart done: ${r.stdout.trim()}`);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as { pid: number; previousPid: number; supervised: boolean };
    expect(out).toMatchObject({ previousPid: dev.pid, supervised: true });
    expect(out.pid).not.toBe(dev.pid);
    expect(pidAlive(dev.pid)).toBe(false);
    expect(f.running(), 'fio ended before the restart was done').toBe(true);
    const st = JSON.parse(cli('status', String(dev.devId), '--json').stdout) as { pid: number };
    expect(st.pid).toBe(out.pid);
    const res = await f.done;
    expect(res.error, res.stderr).toBe(0);
    expect(res.status).toBe(0);
    expect(ioErrorsOf(dev)).toEqual([]);
  });

  // Policy of the supervisor (TypeScript), nothing kernel-specific beyond what the kill test covers: one kernel.
  it.runIf(onPrimaryKernel)('gives up after 5 crashes in 60 s: quiesced with the reason; recover by hand serves it; del removes a quiesced device', async () => {
    // Without the warm standby: it too is a child of the supervisor, and killing it while it waits is (by
    // design) no crash, so "kill every new child" would not count five. Its accounting: unit tests.
    env.DMREMAP_NO_STANDBY = '1';
    const dev = addSupervised(src.loop(64), '--name', 'fragile');
    const supervisor = parentPid(dev.pid);
    // Crash 1: the daemon. Crashes 2-5: each successor the supervisor starts, killed as soon as it exists
    // (before node has loaded: it touches nothing), so the five land within 60 s however slow the VM is.
    step(`crash 1: daemon ${dev.pid}`);
    process.kill(dev.pid, 'SIGKILL');
    const seen = new Set<number>([dev.pid]); // until the supervisor reaps it, the dead daemon is still its child
    for (let i = 2; i <= 5; i++) {
      let child: number | null = null;
      await waitFor(`successor ${i}`, () => {
        child = childrenOf(supervisor).find((c) => !seen.has(c)) ?? null;
        return child !== null;
      }, 30_000);
      const c = child as unknown as number;
      seen.add(c);
      step(`crash ${i}: successor ${c}`);
      process.kill(c, 'SIGKILL');
    }
    const pid = dev.pid;
    await waitFor('the supervisor to give up', () => !pidAlive(supervisor), 30_000);
    const list = cli('list', '--json');
    expect(JSON.parse(list.stdout)).toEqual([
      expect.objectContaining({ devId: dev.devId, name: 'fragile', state: 'quiesced', reason: 'gave up after 5 crashes in 60 s (last: signal SIGKILL)' }),
    ]);
    const st = cli('status', 'fragile');
    expect(st.status).toBe(0);
    expect(st.stdout).toContain(': quiesced, device id');
    expect(st.stdout).toContain('reason gave up after 5 crashes in 60 s');
    expect(ublkNodes()).toContain(`ublkb${dev.devId}`);
    // A write while quiesced waits, and completes once the device is recovered by hand.
    const writer = spawn('dd', ['if=/dev/urandom', `of=${dev.blockPath}`, 'bs=4k', 'count=16', 'oflag=direct', 'conv=fsync'], { stdio: 'ignore' });
    const wrote = new Promise<number | null>((r) => writer.on('exit', (code) => r(code)));
    await new Promise((r) => setTimeout(r, 1000));
    expect(writer.exitCode).toBeNull();
    const rec = cli('recover', 'fragile');
    expect(rec.stderr).toBe('');
    expect(rec.status).toBe(0);
    const back = await servedBy(dev, pid);
    expect(await wrote).toBe(0);
    expect(JSON.parse(cli('list', '--json').stdout)).toEqual([expect.objectContaining({ state: 'running', pid: back.pid })]);
    // Quiesced again, with nothing to bring it back (its supervisor too is killed, if it has one): del removes it.
    const parent = parentPid(back.pid);
    if (fs.readFileSync(`/proc/${parent}/cmdline`, 'utf8').split('\0').includes('supervise')) process.kill(parent, 'SIGKILL');
    process.kill(back.pid, 'SIGKILL');
    await waitFor('the daemon to die', () => !pidAlive(back.pid));
    expect(JSON.parse(cli('list', '--json').stdout)).toEqual([expect.objectContaining({ state: 'quiesced' })]);
    const del = cli('del', 'fragile');
    expect(del.stderr).toBe('');
    expect(del.status).toBe(0);
    expect(ublkNodes()).toEqual([]);
  });

  // On every kernel (issue 12 asks for both): requests parked for auto-remap when the daemon dies are reissued
  // by the kernel, and what it reissues is the kernel's.
  it.runIf(onPrimaryKernel)('kill -9 during a burst of auto-remaps: fio verify clean, and a second full read-verify pass clean', async () => {
    // 1,000 one-block error segments among the 4,096 blocks of [1 MiB, 17 MiB).
    const bad = blockSegments({ seed: 1212, count: 1000, fromBlock: 256, toBlock: 256 + 4096 });
    const main = src.dmError(32, bad);
    const dev = addSupervised(main.path);
    const region = ['--offset=1M', '--size=16M'];
    const f = fioAsync(dev.blockPath, ['--rw=write', '--bs=64k', '--iodepth=32', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', ...region]);
    // Kill once remaps are under way (the status line counts them).
    for (;;) {
      const st = await request(sock(dev), 'status', {});
      if (st.remap.autoRemaps >= 50) break;
      if (!f.running()) throw new Error('fio ended before any auto-remap');
      await new Promise((r) => setTimeout(r, 20));
    }
    step('kill during the auto-remap burst');
    process.kill(dev.pid, 'SIGKILL');
    const next = await servedBy(dev, dev.pid);
    step(`served by ${next.pid} after ${next.ms} ms`);
    const r = await f.done;
    expect(r.error, r.stderr).toBe(0);
    expect(r.status).toBe(0);
    // Second pass: read everything back and verify it (fio's verify-only mode over the same job layout).
    const again = fioAsync(dev.blockPath, ['--rw=write', '--bs=64k', '--iodepth=32', '--verify=crc32c', '--verify_only', '--verify_fatal=1', ...region]);
    const r2 = await again.done;
    expect(r2.error, r2.stderr).toBe(0);
    expect(r2.status).toBe(0);
    const st = await request(sock(dev), 'status', {});
    expect(st.pid).toBe(next.pid);
    expect(st.remap.autoRemaps).toBeGreaterThan(0);
    expect(ioErrorsOf(dev)).toEqual([]);
    console.log(`auto-remap burst: kill -9 at >=50 remaps, served again after ${next.ms} ms; ${st.remap.mapped} blocks mapped`);
  });
});
