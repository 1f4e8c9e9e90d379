// `dmremap-ublk del <device>`: asks the daemon to shut down (SIGTERM if its socket does not answer) and
// waits until the daemon has exited and the device nodes are gone. A device whose daemon died without
// cleaning up (quiesced, or left dead by a kernel without user recovery) is deleted from the kernel directly,
// and so is one whose registry file this version cannot parse (named by its device id or path). A del wins
// over a restart or recovery under way: see control/deleting.ts. A device whose block device is in use
// (mounted, held by dm/md/LVM, swap; a partition of it included) is refused before anything changes
// (E_DEVICE_IN_USE), unless --force; a daemon that is gone without a device to recover (a stale entry) is
// not checked: its device's I/O fails already, and the next daemon to start reaps it anyway.
import fs from 'node:fs';
import { request } from '../control/client.js';
import { markDeleting } from '../control/deleting.js';
import { entryState, findInvalidTarget, findTarget, isAlive, notFound, readEntries, readEntryOf, type RegistryEntry } from '../control/registry.js';
import { DmrError } from '../errors.js';
import { createLogger } from '../log.js';
import { deleteInvalid, deleteQuiesced, reapStale } from '../device/reap.js';
import { deletedOnceFree, inUseError, ublkDeviceInUse, type InUse } from '../device/in-use.js';
import { requireRunDirOwner, runDir } from '../paths.js';
import { forgetUdevName, nameDir, unlinkStableName } from '../device/stable-name.js';
import { printJson, type CliContext } from './context.js';
import type { DelFlags } from './schemas.js';

export const DEL_TIMEOUT_MS = 60_000;
const POLL_MS = 50;

const gone = (e: RegistryEntry): boolean => !isAlive(e) && !fs.existsSync(e.blockPath) && !fs.existsSync(e.charPath);

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

/**
 * Refuses (E_DEVICE_IN_USE) to delete ublk device `devId` while its block device is in use, unless `force`;
 * returns how it is in use (null: it is not). `served`: a live daemon serves it, so an exclusive open may
 * probe it too (ublkDeviceInUse). `down` makes the same check before it stops a unit.
 */
export function refuseInUse(ctx: CliContext, devId: number, blockPath: string, name: string | null, force: boolean, served: boolean): InUse | null {
  const use = ublkDeviceInUse(devId, ctx.env, served);
  if (use !== null && !force) throw inUseError(blockPath, name, use);
  return use;
}

export async function runDel(ctx: CliContext, target: string, flags: DelFlags, timeoutMs = DEL_TIMEOUT_MS): Promise<number> {
  const { json, force } = flags;
  const dir = runDir(ctx.env);
  const { live, stale, quiesced, invalid } = readEntries(dir);
  const served = findTarget(live, target);
  const found = served ?? findTarget(quiesced, target);
  const entry = found ?? findTarget(stale, target);
  if (entry === null) {
    // Not a device with a readable entry: perhaps one whose registry file cannot be read.
    const bad = findInvalidTarget(invalid, target);
    if (bad === null) throw notFound(target);
    requireRunDirOwner(dir, 'del');
    refuseInUse(ctx, bad.devId, bad.blockPath ?? `/dev/ublkb${bad.devId}`, bad.name, force, false);
    await deleteInvalid(await ctx.loadNative(), bad, createLogger({ level: ctx.env.DMREMAP_LOG_LEVEL ?? 'warn', stderr: ctx.stderr }));
    const blockPath = bad.blockPath ?? `device ${bad.devId}`;
    if (bad.name !== null && bad.blockPath !== null) unlinkStableName(nameDir(ctx.env), bad.name, bad.blockPath);
    forgetUdevName(runDir(ctx.env), bad.devId);
    if (json) printJson(ctx, { devId: bad.devId, blockPath, name: bad.name, removed: true });
    else ctx.stdout.write(`removed ${blockPath}\n`);
    return 0;
  }
  requireRunDirOwner(dir, 'del');
  const use = found !== null ? refuseInUse(ctx, found.devId, found.blockPath, found.name, force, served !== null) : null;
  // Held until the device is gone: a successor starting meanwhile (a restart, the supervisor) refuses it.
  const unmark = markDeleting(dir, entry.devId);
  try {
    await removeDevice(ctx, dir, entry, timeoutMs, use);
  } finally {
    unmark();
  }
  // A daemon that stopped its device removed the link itself; a quiesced device deleted here leaves it to us.
  if (entry.name !== null) unlinkStableName(nameDir(ctx.env), entry.name, entry.blockPath);
  forgetUdevName(dir, entry.devId);
  if (json) printJson(ctx, { devId: entry.devId, blockPath: entry.blockPath, name: entry.name, removed: true });
  else ctx.stdout.write(`removed ${entry.blockPath}\n`);
  return 0;
}

/**
 * Removes device `first.devId` whatever serves it now, until neither its entry nor its device nodes are
 * left: a live daemon is asked to shut down (one that was detaching for a restart leaves the device
 * quiesced instead); a quiesced device is deleted from the kernel; a stale entry is reaped. Each round
 * reads the entry again, so a successor that took the device over before it saw the mark is stopped too.
 */
async function removeDevice(ctx: CliContext, dir: string, first: RegistryEntry, timeoutMs: number, use: InUse | null): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const log = createLogger({ level: ctx.env.DMREMAP_LOG_LEVEL ?? 'warn', stderr: ctx.stderr });
  const stopped = new Set<number>();
  for (let entry: RegistryEntry | null = first; ; entry = readEntryOf(dir, first.devId)) {
    if (entry === null) {
      if (gone(first)) return;
    } else if (isAlive(entry)) {
      if (!stopped.has(entry.pid)) await stopDaemon(entry);
      stopped.add(entry.pid);
    } else if (entryState(entry) === 'quiesced') {
      try {
        await deleteQuiesced(await ctx.loadNative(), dir, entry, log);
      } catch (e) {
        // A successor took the device over before it saw the mark: stopped once its entry is live.
        if (!(e instanceof DmrError && e.code === 'E_DEVICE_LIVE')) throw e;
      }
    } else {
      await reapStale(await ctx.loadNative(), dir, entry, log);
    }
    if (Date.now() > deadline) {
      const now = readEntryOf(dir, first.devId);
      let what = now !== null && isAlive(now) ? `daemon pid ${now.pid} is still running` : `${first.blockPath} still exists`;
      // The kernel deletes a device (DEL_DEV) only once its last opener lets go: a file system mounted on it
      // keeps it, and the daemon waits in DEL_DEV, until it is unmounted (its disk is gone already).
      if (use !== null && !fs.existsSync(first.blockPath)) what += `; ${deletedOnceFree(use)}`;
      throw new DmrError('E_TIMEOUT', `${first.blockPath} not removed after ${timeoutMs / 1000} s: ${what}`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
