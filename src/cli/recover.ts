// `dmremap-ublk recover <device>`: takes over a quiesced device (its daemon died or detached; ublk user
// recovery) with a new daemon, from the state its registry entry saved. Like `add`: detached by default (the
// same readiness protocol), --foreground runs the daemon in this process.
import { readEntries, readEntryOf, resolveTarget } from '../control/registry.js';
import { Daemon } from '../device/daemon.js';
import { defaultLogFile, ensureRunDir, runDir } from '../paths.js';
import { announce, serveForeground, spawnDaemon } from './add.js';
import type { CliContext } from './context.js';
import type { RecoverFlags } from './schemas.js';

/** The device id `target` names: /dev/ublkbN, /dev/ublkcN, N, ublkbN; or a name or path found in the registry. */
export function recoverTargetId(dir: string, target: string): number {
  const m = /^(?:\/dev\/ublk[bc]|ublk[bc]?)?(\d+)$/.exec(target);
  if (m) return Number(m[1]);
  const { live, stale } = readEntries(dir);
  return resolveTarget([...live, ...stale], target).devId;
}

export async function runRecover(ctx: CliContext, target: string, flags: RecoverFlags): Promise<number> {
  const dir = runDir(ctx.env);
  const devId = recoverTargetId(dir, target);
  if (flags.foreground) {
    const name = readEntryOf(dir, devId)?.name ?? null;
    return serveForeground(ctx, { logFile: flags.logFile, json: flags.json, name }, (deps) => Daemon.recover(devId, deps));
  }
  // Refusals that need no daemon are reported here, before anything is started.
  const entry = await Daemon.precheckRecover(devId, { native: await ctx.loadNative(), runDir: dir });
  ensureRunDir(dir);
  const logFile = flags.logFile ?? entry.logFile ?? defaultLogFile(dir);
  const ready = await spawnDaemon(['recover', String(devId)], logFile, ctx.env);
  announce(ctx, flags.json, ready);
  return 0;
}
