// `dmremap-ublk demo [--json]`: a device's life on a made-up failing disk, step by step (src/demo/demo.ts).
// Where this host has no ublk (test/vm/host-has-ublk.sh says no), the same command runs inside the test VM
// (test/vm/run.sh: a Debian kernel with ublk under QEMU). On the host it needs root, dmsetup and losetup.
// Ctrl-C, SIGTERM and SIGHUP stop it after the current step; it then removes what it made.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DmrError, toDmrError } from '../errors.js';
import { runDemo, type DemoIo, type RunResult } from '../demo/demo.js';
import { printJson, type CliContext, type Out } from './context.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const BIN = path.join(REPO, 'bin/dmremap-ublk.js');
/** Set in the VM's run of the demo: there it never boots another VM. */
export const IN_VM_ENV = 'DMREMAP_DEMO_IN_VM';
/** The VM's time limit for the demo (it takes well under a minute there on an idle host). */
const VM_TIMEOUT_S = 900;

/** Whether `name` is an executable file in one of PATH's directories. */
export function onPath(name: string, env: NodeJS.ProcessEnv): boolean {
  for (const dir of (env.PATH ?? '').split(':')) {
    if (dir === '') continue;
    try {
      fs.accessSync(path.join(dir, name), fs.constants.X_OK);
      return true;
    } catch {
      // not here
    }
  }
  return false;
}

/** What the demo needs on this host and lacks: root, dmsetup, losetup (an empty list: nothing). */
export function missingPrerequisites(env: NodeJS.ProcessEnv, uid: number | null): string[] {
  const missing: string[] = [];
  if (uid !== 0) missing.push('root (it creates loop, device-mapper and ublk devices: run it with sudo)');
  for (const tool of ['dmsetup', 'losetup']) if (!onPath(tool, env)) missing.push(`${tool} (not on PATH)`);
  return missing;
}

/**
 * Runs `cmd` to its end, in its own process group (detached): the terminal's Ctrl-C (SIGINT to the
 * foreground group) never reaches it, so a `losetup` or `dmsetup create` is not killed half-way, its device
 * made and the command dead; the demo stops after it instead. `signal` (given for long steps only) kills it.
 */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<RunResult> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'], signal, detached: true });
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.name !== 'AbortError') stderr += `${cmd}: ${e.message}\n`;
    });
    child.on('close', (code) => resolve({ status: code, stdout, stderr }));
  });
}

/** The demo's tools for real: external programs, and dmremap-ublk's own commands run in this process. */
export function hostIo(ctx: CliContext): DemoIo {
  let stateDir: string | null = null;
  const cliCtx = (stdout: Out, stderr: Out): CliContext => ({
    ...ctx,
    // The device's state (health series, scan records) in the demo's directory: removed with it.
    env: stateDir !== null && ctx.env.DMREMAP_STATE_DIR === undefined ? { ...ctx.env, DMREMAP_STATE_DIR: stateDir } : ctx.env,
    stdout,
    stderr,
    stderrIsTTY: false,
    stdoutIsTTY: false,
    exitsAfter: false,
  });
  return {
    exec: (cmd, args, signal) => run(cmd, args, ctx.env, signal),
    cli: async (args, signal) => {
      let stdout = '';
      let stderr = '';
      const c = cliCtx({ write: (s: string) => (stdout += s) }, { write: (s: string) => (stderr += s) });
      let status: number;
      if (args[0] === 'watch' && args[1] !== undefined) {
        // As `watch` runs until Ctrl-C: here until `signal` aborts.
        const { runWatch } = await import('./watch.js');
        try {
          status = await runWatch(c, args[1], false, { signal });
        } catch (e) {
          stderr += `dmremap-ublk: ${toDmrError(e).message}\n`;
          status = toDmrError(e).exitCode;
        }
      } else {
        const { main } = await import('./main.js');
        status = await main(args, c);
      }
      return { status, stdout, stderr };
    },
    makeTempDir: () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmremap-demo-'));
      stateDir = path.join(dir, 'state');
      return dir;
    },
    writeFile: (file, text) => fs.writeFileSync(file, text),
    removeDir: (dir) => fs.rmSync(dir, { recursive: true, force: true }),
    sleep: (ms, signal) =>
      new Promise((resolve) => {
        const t = setTimeout(done, ms);
        function done(): void {
          clearTimeout(t);
          signal?.removeEventListener('abort', done);
          resolve();
        }
        signal?.addEventListener('abort', done);
      }),
  };
}

/** modprobe: on PATH, else where Debian keeps it (a user's PATH often lacks /usr/sbin and /sbin). */
function modprobePath(env: NodeJS.ProcessEnv): string | null {
  if (onPath('modprobe', env)) return 'modprobe';
  for (const p of ['/usr/sbin/modprobe', '/sbin/modprobe']) {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

/**
 * Where the demo runs: 'host', or 'vm' (test/vm/run.sh) where this host has no ublk. Without root it runs
 * nowhere on a host that has ublk, loaded (`control` there) or loadable (`modprobe -n ublk_drv` succeeds):
 * E_PREREQUISITE (root first, whatever else is missing), rather than the VM. DMREMAP_FORCE_VM=1: the VM.
 */
export async function demoPlace(env: NodeJS.ProcessEnv, uid: number | null, control = '/dev/ublk-control'): Promise<'host' | 'vm'> {
  if (env[IN_VM_ENV] === '1') return 'host';
  if (env.DMREMAP_FORCE_VM !== undefined && env.DMREMAP_FORCE_VM !== '') return 'vm';
  if (uid !== 0) {
    const modprobe = modprobePath(env);
    const loadable = modprobe !== null && (await run(modprobe, ['-n', 'ublk_drv'], env)).status === 0;
    if (fs.existsSync(control) || loadable) throw new DmrError('E_PREREQUISITE', `demo needs ${missingPrerequisites(env, uid).join(', ')}`);
    return 'vm';
  }
  return (await hostHasUblk(env)) ? 'host' : 'vm';
}

/** Whether this host can run ublk devices (test/vm/host-has-ublk.sh: /dev/ublk-control, or modprobe as root). */
async function hostHasUblk(env: NodeJS.ProcessEnv): Promise<boolean> {
  if (fs.existsSync('/dev/ublk-control')) return true;
  const r = await run('bash', [path.join(REPO, 'test/vm/host-has-ublk.sh')], env);
  return r.status === 0;
}

/** Runs `dmremap-ublk demo` inside the test VM, its output straight to ours; resolves with its exit code. */
function runInVm(ctx: CliContext, json: boolean): Promise<number> {
  const suite = ctx.env.DMREMAP_VM_SUITE ?? 'trixie';
  if (!json) ctx.stderr.write(`dmremap-ublk: this host has no ublk: running the demo in the test VM (Debian ${suite} kernel under QEMU; booting takes a while)\n`);
  const args = [path.join(REPO, 'test/vm/run.sh'), '--suite', suite, '--timeout', String(VM_TIMEOUT_S), '--cwd', '/tmp', '--', process.execPath, BIN, 'demo', ...(json ? ['--json'] : [])];
  return new Promise((resolve) => {
    const child = spawn('bash', args, { stdio: ['ignore', 'inherit', 'inherit'], env: { ...ctx.env, [IN_VM_ENV]: '1' } });
    child.on('error', (e) => {
      ctx.stderr.write(`dmremap-ublk: cannot start the VM: ${e.message}\n`);
      resolve(1);
    });
    child.on('exit', (code, sig) => resolve(code ?? (sig !== null ? 1 : 0)));
  });
}

export async function runDemoCommand(ctx: CliContext, json: boolean): Promise<number> {
  if ((await demoPlace(ctx.env, process.getuid?.() ?? null)) === 'vm') return runInVm(ctx, json);
  const missing = missingPrerequisites(ctx.env, process.getuid?.() ?? null);
  if (missing.length > 0) throw new DmrError('E_PREREQUISITE', `demo needs ${missing.join(', ')}`);
  const stop = new AbortController();
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  const onSignal = (): void => stop.abort();
  for (const s of signals) process.on(s, onSignal);
  try {
    const result = await runDemo(hostIo(ctx), { out: json ? null : ctx.stdout, signal: stop.signal, tag: String(process.pid) });
    if (json) {
      printJson(ctx, result);
      return result.ok ? 0 : 1;
    }
    if (!result.ok) {
      const e = result.error ?? { code: 'E_DEMO', message: 'the demo failed' };
      throw new DmrError(e.code === 'E_INTERRUPTED' ? 'E_INTERRUPTED' : 'E_DEMO', e.message);
    }
    return 0;
  } finally {
    for (const s of signals) process.off(s, onSignal);
  }
}
