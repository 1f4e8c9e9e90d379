// `dmremap-ublk supervise add|recover ...` (internal, not in the help): what `add` starts detached. Runs
// `dmremap-ublk <args>` as the supervised daemon (src/supervisor/supervisor.ts) and relays its readiness
// line to `add` on the fd DMREMAP_READY_FD names. Its own log lines go to the daemon's --log-file (opened by
// name, so that SIGHUP can reopen it after logrotate; the daemon's SIGHUP handler sends it one), or to
// stderr without one (the journal).
//
// `supervise standby` is the supervisor's warm standby (src/supervisor/supervisor.ts): it imports everything
// `recover --foreground` needs and loads the addon, then waits for one line on stdin, {"args": [...]}, the
// successor's command line, and runs it in this process. It opens no device while it waits. Its stdin
// closing without a line (the supervisor ended or died) ends it with exit 0.
import fs from 'node:fs';
import * as z from 'zod';
import path from 'node:path';
import { usageError } from '../errors.js';
import { createLogger, reopenLogFile } from '../log.js';
import { markQuiesced, readEntries } from '../control/registry.js';
import { runDir } from '../paths.js';
import { Supervisor } from '../supervisor/supervisor.js';
import { adoptChild, startChild, startStandby } from '../supervisor/child-process.js';
import { sendReady, takeReadyFd } from './readiness.js';
import type { CliContext } from './context.js';

/** /dev/ublkbN → /dev/ublkcN (same directory). */
export function charPathOf(blockPath: string): string {
  return path.join(path.dirname(blockPath), path.basename(blockPath).replace(/^ublkb/, 'ublkc'));
}

/** The one line a standby reads: a `recover <id> --foreground ...` command line. */
export const standbyCommandSchema = z.strictObject({
  args: z
    .array(z.string())
    .refine((a) => a[0] === 'recover' && a.includes('--foreground'), 'a standby runs only "recover <id> --foreground ..."'),
});

/** Reads the first line of `input` and when it arrived (Date.now()); null when it ends without one. */
export function readFirstLine(input: NodeJS.ReadableStream): Promise<{ line: string; at: number } | null> {
  return new Promise((resolve) => {
    let buf = '';
    let done = false;
    const finish = (line: string | null): void => {
      if (done) return;
      done = true;
      input.removeListener('data', onData);
      resolve(line === null ? null : { line, at: Date.now() });
    };
    const onData = (chunk: Buffer | string): void => {
      buf += chunk.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) finish(buf.slice(0, nl));
    };
    input.on('data', onData);
    input.on('end', () => finish(null));
    input.on('close', () => finish(null));
    input.on('error', () => finish(null));
  });
}

/** `supervise standby`: warm up, wait for the command on `input`, run it. */
export async function runStandby(ctx: CliContext, input: NodeJS.ReadableStream & { destroy?: () => void }): Promise<number> {
  // Everything `recover --foreground` loads, loaded now: the CLI, the daemon and its engine, the logger (add.js's
  // serveForeground imports it only when a daemon runs), the addon.
  // Listening from the start: a command that arrives while the modules still load is stamped when it came.
  const first = readFirstLine(input);
  const [{ main }, { markRecoverRequested }] = await Promise.all([import('./main.js'), import('./recover.js'), import('../log.js'), ctx.loadNative()]);
  const got = await first;
  input.destroy?.();
  if (got === null) return 0;
  let raw: unknown;
  try {
    raw = JSON.parse(got.line);
  } catch {
    raw = undefined;
  }
  const parsed = standbyCommandSchema.safeParse(raw);
  if (!parsed.success) throw usageError('supervise standby: its command line is not {"args": ["recover", "<id>", "--foreground", ...]}');
  markRecoverRequested(got.at);
  return main(parsed.data.args, ctx);
}

const sameArgs = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

export async function runSupervise(ctx: CliContext, args: string[]): Promise<number> {
  const [cmd] = args;
  if (cmd === 'standby' && args.length === 1) return runStandby(ctx, process.stdin);
  if ((cmd !== 'add' && cmd !== 'recover') || !args.includes('--foreground')) {
    // bin/early-daemon.js starts a daemon only for command lines that pass these checks; never leave one running.
    ctx.earlyDaemon?.child.kill('SIGTERM');
    if (cmd !== 'add' && cmd !== 'recover') throw usageError('supervise runs "add ..." or "recover ..." (internal command)');
    throw usageError('supervise needs the daemon in the foreground (--foreground)');
  }
  const readyFd = takeReadyFd(ctx.env);
  const i = args.lastIndexOf('--log-file');
  const logFile = i >= 0 ? args[i + 1] : undefined;
  const log = createLogger({ level: ctx.env.DMREMAP_LOG_LEVEL, stderr: ctx.stderr, file: logFile });
  const dir = runDir(ctx.env);
  let charPath: string | null = null;
  // The first daemon may be running already (bin/early-daemon.js started it before the CLI loaded): adopt it.
  let early = ctx.earlyDaemon ?? null;
  const sup = new Supervisor(args, {
    start: (a) => {
      const e = early;
      early = null;
      if (e !== null && sameArgs(e.args, a)) return adoptChild(e);
      if (e !== null) e.child.kill('SIGTERM');
      return startChild(a, ctx.env);
    },
    startStandby: ctx.env.DMREMAP_NO_STANDBY === '1' ? undefined : () => startStandby(ctx.env),
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
  // SIGHUP reopens the log file (logrotate) and moves stdout and stderr that wrote to the old file to the new
  // one (the addon's dup2); it never stops the supervisor.
  const reopenOnHup = async (): Promise<void> => {
    const addon = await ctx.loadNative().catch(() => null);
    try {
      const done = reopenLogFile(log, addon === null ? undefined : (fd, target) => addon.redirectStdio(fd, target));
      if (!done) return;
      log.info({ logFile, stdio: done.stdio }, 'supervisor: log file reopened (SIGHUP)');
      if (done.stdioError !== null) log.error({ logFile, err: done.stdioError }, 'supervisor: cannot move stdout/stderr to the reopened log file');
    } catch (e) {
      log.error({ logFile, err: String(e) }, 'supervisor: cannot reopen the log file: still writing to the old one');
    }
  };
  const onHup = (): void => void reopenOnHup();
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
