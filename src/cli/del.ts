// `dmremap-ublk del <device>`: asks the daemon to shut down (SIGTERM if its socket does not answer) and
// waits until the daemon has exited and the device nodes are gone. A device whose daemon died without
// cleaning up (quiesced, or left dead by a kernel without user recovery) is deleted from the kernel directly,
// and so is one whose registry file this version cannot parse (named by its device id or path).
import fs from 'node:fs';
import { request } from '../control/client.js';
import { findInvalidTarget, findTarget, isAlive, notFound, readEntries, type RegistryEntry } from '../control/registry.js';
import { DmrError } from '../errors.js';
import { createLogger } from '../log.js';
import { deleteInvalid, deleteQuiesced, reapStale } from '../device/reap.js';
import { runDir } from '../paths.js';
import { printJson, type CliContext } from './context.js';

export const DEL_TIMEOUT_MS = 60_000;
const POLL_MS = 50;

const gone = (e: RegistryEntry): boolean => !isAlive(e) && !fs.existsSync(e.blockPath) && !fs.existsSync(e.charPath);

async function waitGone(e: RegistryEntry, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!gone(e)) {
    if (Date.now() > deadline) {
      const what = isAlive(e) ? `daemon pid ${e.pid} is still running` : `${e.blockPath} still exists`;
      throw new DmrError('E_TIMEOUT', `${e.blockPath} not removed after ${timeoutMs / 1000} s: ${what}`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

async function stopDaemon(e: RegistryEntry): Promise<void> {
  try {
    await request(e.socket, 'shutdown', {});
  } catch (err) {
    if (!(err instanceof DmrError && (err.code === 'E_DAEMON' || err.code === 'E_TIMEOUT'))) throw err;
    if (!isAlive(e)) return;
    try {
      process.kill(e.pid, 'SIGTERM');
    } catch {
      // Exited in the meantime.
    }
  }
}

export async function runDel(ctx: CliContext, target: string, json: boolean, timeoutMs = DEL_TIMEOUT_MS): Promise<number> {
  const dir = runDir(ctx.env);
  const { live, stale, quiesced, invalid } = readEntries(dir);
  let entry = findTarget(live, target);
  const waiting = entry === null ? findTarget(quiesced, target) : null;
  if (entry !== null) {
    await stopDaemon(entry);
    await waitGone(entry, timeoutMs);
  } else if (waiting !== null) {
    // Quiesced: no daemon to ask; the device is stopped and deleted from here.
    entry = waiting;
    await deleteQuiesced(await ctx.loadNative(), dir, waiting, createLogger({ level: ctx.env.DMREMAP_LOG_LEVEL ?? 'warn', stderr: ctx.stderr }));
    await waitGone(entry, timeoutMs);
  } else {
    // Not a running device: perhaps one whose daemon died, or one whose registry file cannot be read.
    entry = findTarget(stale, target);
    if (entry === null) {
      const bad = findInvalidTarget(invalid, target);
      if (bad === null) throw notFound(target);
      await deleteInvalid(await ctx.loadNative(), bad, createLogger({ level: ctx.env.DMREMAP_LOG_LEVEL ?? 'warn', stderr: ctx.stderr }));
      const blockPath = bad.blockPath ?? `device ${bad.devId}`;
      if (json) printJson(ctx, { devId: bad.devId, blockPath, name: bad.name, removed: true });
      else ctx.stdout.write(`removed ${blockPath}\n`);
      return 0;
    }
    await reapStale(await ctx.loadNative(), dir, entry, createLogger({ level: ctx.env.DMREMAP_LOG_LEVEL ?? 'warn', stderr: ctx.stderr }));
    await waitGone(entry, timeoutMs);
  }
  if (json) printJson(ctx, { devId: entry.devId, blockPath: entry.blockPath, name: entry.name, removed: true });
  else ctx.stdout.write(`removed ${entry.blockPath}\n`);
  return 0;
}
