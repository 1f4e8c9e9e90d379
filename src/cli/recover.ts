// `dmremap-ublk recover <device>`: takes over a quiesced device (its daemon died or detached; ublk user
// recovery) with a new daemon, from the state its registry entry saved. Like `add`: detached by default (the
// same readiness protocol), --foreground runs the daemon in this process.
import { readEntries, readEntryOf, resolveTarget } from '../control/registry.js';
import { Daemon } from '../device/daemon.js';
import { ensureRunDir, runDir } from '../paths.js';
import { announce, detachedLogFile, serveForeground, spawnDaemon } from './add.js';
import type { CliContext } from './context.js';
import type { RecoverFlags } from './schemas.js';

// When this module (and with it the daemon and everything it imports) finished loading, and when a warm
// standby was handed its `recover` command: with the process start, the first marks of a recovery's phase
// breakdown in the log (the daemon logs the later ones: devices claimed, table loaded, queues started, live).
const modulesImportedAt = Date.now();
let requestedAt: number | null = null;

/** Called by a warm standby (cli/supervise.ts) with the time its `recover` command line arrived. */
export function markRecoverRequested(at: number): void {
  requestedAt = at;
}

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
    return serveForeground(ctx, { logFile: flags.logFile, json: flags.json, name }, (deps) => {
      const iso = (t: number): string => new Date(t).toISOString();
      // Into a log file always; on stderr (no --log-file) only at debug, where a failed start leaves one error line.
      const at = deps.logFile !== null ? deps.log.info.bind(deps.log) : deps.log.debug.bind(deps.log);
      at(
        {
          devId,
          processStartedAt: iso(Math.round(performance.timeOrigin)),
          modulesImportedAt: iso(modulesImportedAt),
          standbyRequestedAt: requestedAt === null ? null : iso(requestedAt),
        },
        'recovering the device',
      );
      return Daemon.recover(devId, deps);
    });
  }
  // Refusals that need no daemon are reported here, before anything is started.
  const entry = await Daemon.precheckRecover(devId, { native: await ctx.loadNative(), runDir: dir });
  ensureRunDir(dir);
  // The file the first daemon logged to (the registry has it), else where add would log now.
  const logFile = flags.logFile ?? entry.logFile ?? detachedLogFile(ctx.env, null, entry.name, entry.main.path);
  const ready = await spawnDaemon(['recover', String(devId)], logFile, ctx.env);
  announce(ctx, flags.json, ready);
  return 0;
}
