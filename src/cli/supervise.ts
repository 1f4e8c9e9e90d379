// `dmremap-ublk supervise add|recover ...` (internal, not in the help): what `add` starts detached. Runs
// `dmremap-ublk <args>` as the supervised daemon (src/supervisor/supervisor.ts) and relays its readiness
// line to `add` on the fd DMREMAP_READY_FD names. Its own log lines go to stderr, which `add` points at the
// daemon's log file.
import fs from 'node:fs';
import path from 'node:path';
import { usageError } from '../errors.js';
import { createLogger } from '../log.js';
import { markQuiesced, readEntries } from '../control/registry.js';
import { runDir } from '../paths.js';
import { Supervisor } from '../supervisor/supervisor.js';
import { startChild } from '../supervisor/child-process.js';
import { sendReady, takeReadyFd } from './readiness.js';
import type { CliContext } from './context.js';

/** /dev/ublkbN → /dev/ublkcN (same directory). */
export function charPathOf(blockPath: string): string {
  return path.join(path.dirname(blockPath), path.basename(blockPath).replace(/^ublkb/, 'ublkc'));
}

export async function runSupervise(ctx: CliContext, args: string[]): Promise<number> {
  const [cmd] = args;
  if (cmd !== 'add' && cmd !== 'recover') throw usageError('supervise runs "add ..." or "recover ..." (internal command)');
  if (!args.includes('--foreground')) throw usageError('supervise needs the daemon in the foreground (--foreground)');
  const readyFd = takeReadyFd(ctx.env);
  const log = createLogger({ level: ctx.env.DMREMAP_LOG_LEVEL, stderr: ctx.stderr });
  const dir = runDir(ctx.env);
  let charPath: string | null = null;
  const sup = new Supervisor(args, {
    start: (a) => startChild(a, ctx.env),
    deviceExists: () => charPath !== null && fs.existsSync(charPath),
    ownerPid: (devId) => readEntries(dir).live.find((e) => e.devId === devId)?.pid ?? null,
    markQuiesced: (devId, reason) => void markQuiesced(dir, devId, reason),
    relay: (msg) => {
      if (msg.ok) charPath = charPathOf(msg.blockPath);
      if (readyFd !== null) sendReady(readyFd, msg);
    },
    log,
  });
  const onStop = (sig: NodeJS.Signals): void => sup.stop(sig);
  const onHup = (): void => log.info('SIGHUP ignored');
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', onHup);
  try {
    return await sup.run();
  } finally {
    process.off('SIGTERM', onStop);
    process.off('SIGINT', onStop);
    process.off('SIGHUP', onHup);
  }
}
