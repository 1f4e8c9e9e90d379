// ublk user recovery against the kernel: the daemon's death is a pause, not an I/O error. One device (over
// loop devices) is shared by the cases, in order: one kill -9 of its daemon during a fio verify run,
// followed by `recover` by hand (fio sees no error and no mismatch, status answers after each
// recovery, the kernel logs no I/O error for the device); `recover` of the live device is refused; a
// daemon dying of an unhandled error exits 70 and leaves the device quiesced; after one more kill, `del` of
// the quiesced device removes it.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readEntryOf } from '../../src/control/registry.js';
import { loadNative } from '../../src/native.js';
import { supervisorOf } from '../../src/supervisor/find.js';
import { addDevice, dmr, ioErrorLinesSince, kernelLogNow, parseFio, pidAlive, registryFiles, REPO, RUN_DIR, Scratch, sh, ublkNodes, waitFor, type Added } from './helpers.js';
import { expectCleanKernel, itPrimary, requireUblkHost } from './setup.js';

// The supervisor's e2e kills three times under fio verify; here one kill shows `recover` by hand does it too.
const KILLS = 1;
let s: Scratch;
let dev: Added;

beforeAll(() => {
  requireUblkHost();
  s = new Scratch();
  dev = addDevice(s.loop(128), s.loop(16), '--name', 'rec', '--queues', '2');
  // These cases recover by hand: stop add's supervisor, which would otherwise recover the device itself
  // (test/e2e/supervisor.test.ts covers that).
  const sup = supervisorOf(dev.pid);
  if (sup !== null) process.kill(sup, 'SIGKILL');
});
afterAll(async () => {
  await s.cleanup();
  expectCleanKernel();
});

/** The pid serving the device now, from its registry entry. */
function daemonPid(): number {
  const e = readEntryOf(RUN_DIR, dev.devId);
  if (e === null) throw new Error('no registry entry');
  return e.pid;
}

async function kill9(): Promise<number> {
  const pid = daemonPid();
  // `recover` (detached) runs its daemon under a supervisor too, which would race the recovery by hand.
  const sup = supervisorOf(pid);
  if (sup !== null) process.kill(sup, 'SIGKILL');
  process.kill(pid, 'SIGKILL');
  await waitFor('the daemon to die', () => !pidAlive(pid), 30_000);
  return pid;
}


const exitOf = (c: import('node:child_process').ChildProcess): Promise<number | null> =>
  new Promise((r) => (c.exitCode !== null ? r(c.exitCode) : c.on('exit', (code) => r(code))));

describe('user recovery', () => {
  it(`kill -9 of the daemon ${KILLS} times during fio verify, recover by hand each time: no error, no mismatch`, async () => {
    const logSince = kernelLogNow();
    expect(readEntryOf(RUN_DIR, dev.devId)).toMatchObject({ version: 2, recovery: { userRecovery: true } });
    const fio = s.spawn('fio', [
      '--name=verify',
      `--filename=${dev.blockPath}`,
      '--rw=randwrite',
      '--bsrange=4k-64k',
      '--iodepth=32',
      '--ioengine=io_uring',
      '--direct=1',
      '--verify=crc32c',
      '--do_verify=1',
      '--verify_fatal=1',
      // Paced (1 MiB/s: about 2 x 48 s) so that fio outlasts the kill and the recovery in a TCG VM (a
      // recovery there takes some 20-40 s, mostly node starting the CLI and the daemon).
      '--size=48M',
      '--rate=1m,1m',
      '--output-format=json',
    ]);
    let out = '';
    fio.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const pids = new Set<number>([daemonPid()]);
    const t0 = Date.now();
    const note = (what: string): void => console.log(`[recovery +${((Date.now() - t0) / 1000).toFixed(1)} s] ${what}`);
    for (let k = 0; k < KILLS; k++) {
      // The daemon serving now has completed requests of fio's (writes, or the verify pass's reads).
      let served = '';
      await waitFor('fio I/O through the current daemon', () => {
        const st = dmr('status', String(dev.devId), '--json');
        if (st.status !== 0) return false;
        const io = (JSON.parse(st.stdout) as { io: { reads: number; writes: number } }).io;
        served = `reads ${io.reads} writes ${io.writes}`;
        return io.reads + io.writes > 20;
      }, 120_000).catch((e: unknown) => {
        note(`stuck: ${served}; fio exit ${fio.exitCode}; dmesg: ${sh('dmesg', []).stdout.split('\n').slice(-15).join(' | ')}`);
        throw e;
      });
      note(`kill ${k + 1}: ${served}`);
      expect(fio.exitCode, 'fio still running when the daemon is killed').toBeNull();
      const dead = await kill9();
      const rec = dmr('recover', String(dev.devId), '--json');
      note(`recover ${k + 1}: exit ${rec.status} ${rec.stderr.trim()}`);
      expect(rec.stderr).toBe('');
      expect(rec.status).toBe(0);
      const ready = JSON.parse(rec.stdout) as Added;
      expect(ready).toMatchObject({ devId: dev.devId, blockPath: dev.blockPath, name: 'rec' });
      expect(ready.pid).not.toBe(dead);
      pids.add(ready.pid);
      const st = dmr('status', 'rec', '--json');
      expect(st.status, st.stderr).toBe(0);
      expect((JSON.parse(st.stdout) as { pid: number }).pid).toBe(ready.pid);
    }
    expect(pids.size).toBe(KILLS + 1);
    const code = await exitOf(fio);
    note(`fio exit ${code}`);
    const r = parseFio(code, out);
    expect(r.status, r.raw).toBe(0);
    expect(r.errors).toEqual([0]);
    expect(r.writeBytes).toBe(48 << 20);
    expect(r.readBytes).toBe(48 << 20); // the verify pass read everything back
    expect(ioErrorLinesSince(logSince, dev.blockPath)).toEqual([]);
  });

  it('recover of a live device is refused', () => {
    const r = dmr('recover', 'rec');
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`dmremap-ublk: ${dev.blockPath} is live (daemon pid ${daemonPid()}): nothing to recover\n`);
    expect(dmr('status', 'rec').status).toBe(0);
  });

  // What the daemon does with an unhandled error is userspace's: primary run only.
  itPrimary('a daemon with an unhandled error logs it, exits 70 and leaves the device quiesced for recover', async () => {
    await kill9();
    const log = `${s.dir}/fatal.log`;
    // The recovering daemon (serveForeground, as `recover --foreground` runs it) throws once the device is live.
    const script = `
      const { serveForeground } = await import(${JSON.stringify(`${REPO}/dist/cli/add.js`)});
      const { Daemon } = await import(${JSON.stringify(`${REPO}/dist/device/daemon.js`)});
      const { loadNative } = await import(${JSON.stringify(`${REPO}/dist/native.js`)});
      const ctx = { env: process.env, stdout: process.stdout, stderr: process.stderr, stderrIsTTY: false, loadNative: async () => loadNative() };
      await serveForeground(ctx, { logFile: ${JSON.stringify(log)}, json: false, name: 'rec' }, async (deps) => {
        const d = await Daemon.recover(${dev.devId}, deps);
        setTimeout(() => { throw new Error('boom in a timer'); }, 100);
        return d;
      });
      console.log('returned');
    `;
    const r = sh(process.execPath, ['--input-type=module', '-e', script]);
    expect(r.stdout).not.toContain('returned');
    expect(r.status, r.stderr).toBe(70);
    expect(fs.readFileSync(log, 'utf8')).toMatch(/"level":60.*boom in a timer/);
    const k = await loadNative().kernelDeviceInfo(dev.devId);
    expect(k.state).toBe('quiesced');
    expect(ublkNodes()).toEqual([`ublkb${dev.devId}`, `ublkc${dev.devId}`]);
    const rec = dmr('recover', 'rec');
    expect([rec.status, rec.stderr]).toEqual([0, '']);
    expect(dmr('status', 'rec').status).toBe(0);
  });

  it('del of a quiesced device removes it', async () => {
    await kill9();
    expect(ublkNodes()).toEqual([`ublkb${dev.devId}`, `ublkc${dev.devId}`]);
    const del = dmr('del', 'rec');
    expect(del.stderr).toBe('');
    expect(del.status).toBe(0);
    await waitFor('device nodes to disappear', () => ublkNodes().length === 0, 30_000);
    expect(registryFiles()).toEqual([]);
  });
});
