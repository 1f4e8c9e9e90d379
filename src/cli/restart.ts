// `dmremap-ublk restart <device>`: replaces the device's daemon with a new one running the code installed
// now, without taking the device away from its users. The old daemon detaches (stops taking new work,
// finishes what it holds, flushes, exits RESTART_EXIT_CODE leaving the device quiesced: its users' I/O
// waits); its supervisor starts `recover <id>` at once. A daemon with no supervisor (--foreground): this
// command starts `recover <id>` itself once the old pid is gone. Returns when the device is live again and
// the new daemon answers `status`.
import { spawn } from 'node:child_process';
import { request } from '../control/client.js';
import { refuseIfDeleting } from '../control/deleting.js';
import { isAlive, readEntries, type RegistryEntry } from '../control/registry.js';
import { noRecoveryError } from '../device/daemon.js';
import { DELETING_EXIT_CODE, DmrError } from '../errors.js';
import { runDir } from '../paths.js';
import { BIN } from '../supervisor/child-process.js';
import { printJson, type CliContext } from './context.js';
import { liveEntry } from './status.js';

export const RESTART_TIMEOUT_MS = 60_000;
const POLL_MS = 20;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | null> | T | null): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== null) return v;
    if (Date.now() > deadline) throw new DmrError('E_TIMEOUT', `${what} within ${timeoutMs / 1000} s`);
    await sleep(POLL_MS);
  }
}

/**
 * Throws when the restart of device `devId` can no longer succeed because a `del` took the device: one is
 * under way (its mark is held: every successor refuses the device, E_DELETING), or one finished (no registry
 * entry is left, live or quiesced). Without it `restart` would wait out its timeout and say E_TIMEOUT.
 */
export function checkNotDeleted(dir: string, devId: number, blockPath: string): void {
  refuseIfDeleting(dir, devId, blockPath, 'not restarted');
  const { live, stale, invalid } = readEntries(dir);
  if (![...live, ...stale, ...invalid].some((e) => e.devId === devId)) throw new DmrError('E_DELETING', `${blockPath} was deleted during the restart`);
}

/** Runs `dmremap-ublk recover <id>` (it detaches its daemon) and waits for it; its error becomes ours. */
function recoverDetached(ctx: CliContext, devId: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'recover', String(devId)], { cwd: '/', env: ctx.env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => (err += d));
    child.on('error', (e) => reject(new DmrError('E_DAEMON', `cannot run recover: ${e.message}`)));
    child.on('exit', (code) => {
      const why = err.trim().replace(/^dmremap-ublk: /, '');
      if (code === 0) resolve();
      // A del took the device between our check and the recover: the same answer as the check's.
      else if (code === DELETING_EXIT_CODE) reject(new DmrError('E_DELETING', why || `device ${devId} is being deleted: not restarted`));
      else reject(new DmrError('E_DAEMON', `recover ${devId} failed: ${why || `exit code ${code}`}`));
    });
  });
}

/**
 * After the old daemon exited: runs `recover` for a daemon that had no supervisor (its supervisor does it
 * otherwise), then waits until a new daemon serves the device; its pid. A del under way or done ends the
 * wait at once (E_DELETING).
 */
export async function takeOver(ctx: CliContext, old: RegistryEntry, supervised: boolean, timeoutMs: number): Promise<number> {
  const dir = runDir(ctx.env);
  if (!supervised) {
    checkNotDeleted(dir, old.devId, old.blockPath);
    await recoverDetached(ctx, old.devId);
  }
  return until(`${old.blockPath} was not served again`, timeoutMs, async () => {
    checkNotDeleted(dir, old.devId, old.blockPath);
    const next = readEntries(dir).live.find((e) => e.devId === old.devId && e.pid !== old.pid);
    if (next === undefined) return null;
    try {
      return (await request(next.socket, 'status', {}, 2000)).pid;
    } catch {
      return null;
    }
  });
}

export async function runRestart(ctx: CliContext, target: string, json: boolean, timeoutMs = RESTART_TIMEOUT_MS): Promise<number> {
  const began = Date.now();
  const dir = runDir(ctx.env);
  const old: RegistryEntry = liveEntry(ctx, target);
  // Checked here too, from the entry: a daemon of an older version would detach and the kernel stop the device.
  if (old.version !== 2 || !old.recovery.userRecovery) throw noRecoveryError(old.blockPath);
  checkNotDeleted(dir, old.devId, old.blockPath);
  const { supervised } = await request(old.socket, 'restart', {});
  await until(`daemon pid ${old.pid} did not exit`, timeoutMs, () => (isAlive(old) ? null : true));
  const pid = await takeOver(ctx, old, supervised, timeoutMs);
  const seconds = (Date.now() - began) / 1000;
  if (json) printJson(ctx, { devId: old.devId, blockPath: old.blockPath, name: old.name, pid, previousPid: old.pid, supervised, seconds });
  else ctx.stdout.write(`restarted ${old.blockPath}: daemon pid ${pid} (was ${old.pid})\n`);
  return 0;
}
