// Every exit of a daemon process is bounded, the fatal one and the others (review of the recovery work, issue #12):
// process.exit() joins libuv's worker threads, and one stuck in a blocking syscall (here: an open of a FIFO no
// writer opens; on a real host, a read of a hung main) would hang it for ever. The supervisor waits for that
// exit before it starts the successor, so the device stayed quiesced. serveForeground arms the native exit
// watchdog (FATAL_EXIT_GRACE_MS) with the code it returns: after a detach for a restart (75), and after a
// start or recover that failed once the addon was loaded (the error's exit code); the fatal path (an uncaught
// exception: exit 70, the device left quiesced) arms it itself.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FATAL_EXIT_GRACE_MS } from '../../src/cli/add.js';
import { readEntries } from '../../src/control/registry.js';
import { makeWorld, REPO, type World } from './helpers.js';

const FAKE = { features: '0xd8' };
/** Without the watchdog the process never exits: killed after this. */
const HANG_MS = FATAL_EXIT_GRACE_MS + 5000;
let w: World;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => w.cleanup());

/**
 * Runs serveForeground in a node process as run() (src/cli/main.ts) does (ctx.exitsAfter, then process.exit
 * with the code once stdout drained), with a libuv worker stuck opening a FIFO. `begin` is the body of the
 * begin callback (deps, cfg, Daemon, DmrError and stick() in scope). Returns the process's end.
 */
function runStuck(begin: string): { status: number | null; signal: NodeJS.Signals | null; ms: number; log: string } {
  const log = path.join(w.root, 'daemon.log');
  const fifo = path.join(w.root, 'stuck.fifo');
  expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
  const script = `
    const fs = await import('node:fs');
    const { serveForeground } = await import(${JSON.stringify(path.join(REPO, 'dist/cli/add.js'))});
    const { Daemon } = await import(${JSON.stringify(path.join(REPO, 'dist/device/daemon.js'))});
    const { DmrError } = await import(${JSON.stringify(path.join(REPO, 'dist/errors.js'))});
    const { selectNative } = await import(${JSON.stringify(path.join(REPO, 'dist/native-select.js'))});
    const ctx = { env: process.env, stdout: process.stdout, stderr: process.stderr, stderrIsTTY: false, loadNative: () => selectNative(process.env), exitsAfter: true };
    const cfg = { mainPath: ${JSON.stringify(w.main)}, sparePath: ${JSON.stringify(w.spare)}, name: 'f', queues: 1, depth: 8, blockSize: undefined, maxIoBytes: 65536, buffers: 'auto' };
    const stick = () => fs.open(${JSON.stringify(fifo)}, 'r', () => {});
    const code = await serveForeground(ctx, { logFile: ${JSON.stringify(log)}, json: false, name: 'f' }, async (deps) => { ${begin} }).catch((e) => e.exitCode);
    process.stdout.write('', () => process.exit(code));
  `;
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, VITEST: 'true', DMREMAP_RUN_DIR: w.runDir, DMREMAP_FAKE_NATIVE: JSON.stringify({ devDir: w.devDir, ...FAKE }) },
    encoding: 'utf8',
    timeout: HANG_MS,
    killSignal: 'SIGKILL',
  });
  return { status: r.status, signal: r.signal, ms: Date.now() - t0, log: fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '' };
}

describe('a daemon exit other than fatal is bounded by the exit watchdog', () => {
  it('a daemon detached for a restart exits 75 even with a libuv worker stuck in a blocking syscall', () => {
    const r = runStuck(`
      const d = await Daemon.start(cfg, deps);
      stick();
      setTimeout(() => void d.detach('restart requested (test)'), 200);
      return d;`);
    expect(r.signal, `hung in process.exit (killed after ${HANG_MS} ms); log: ${r.log.slice(-400)}`).toBeNull();
    expect(r.status).toBe(75);
    expect(r.ms).toBeLessThan(HANG_MS - 1000);
  }, HANG_MS + 5000);

  it("a start that fails after the addon is loaded exits with its error's code even with a worker stuck", () => {
    const r = runStuck(`
      stick();
      throw new DmrError('E_DEVICE_BUSY', 'main is busy (test)');`);
    expect(r.signal, `hung in process.exit (killed after ${HANG_MS} ms); log: ${r.log.slice(-400)}`).toBeNull();
    expect(r.status).toBe(1);
    expect(r.log).toContain('main is busy (test)');
  }, HANG_MS + 5000);

  it('the fatal exit is bounded: an uncaught exception with a worker stuck exits 70, the device left quiesced', () => {
    const r = runStuck(`
      const d = await Daemon.start(cfg, deps);
      stick();
      setTimeout(() => { throw new Error('boom with a stuck worker'); }, 200);
      return d;`);
    expect(r.signal, `hung in process.exit (killed after ${HANG_MS} ms); log: ${r.log.slice(-400)}`).toBeNull();
    expect(r.status).toBe(70);
    expect(r.ms).toBeLessThan(12_000);
    const fatal = r.log.split('\n').filter((l) => l.includes('"level":60'));
    expect(fatal).toHaveLength(1);
    expect(fatal[0]).toContain('boom with a stuck worker');
    expect(readEntries(w.runDir).quiesced.map((e) => e.devId)).toEqual([0]);
  }, HANG_MS + 5000);
});
