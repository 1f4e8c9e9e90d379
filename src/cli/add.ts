// `dmremap-ublk add`: in the foreground, run the daemon in this process; otherwise start it detached
// (a new session, cwd /, output to the device's own log file, or to the journal when `add` itself runs
// with its stderr on the journal) and wait for its one readiness line.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DmrError, errorCodeOf, isErrorCode, toDmrError } from '../errors.js';
import type { Daemon, DaemonDeps } from '../device/daemon.js';
import { precheckDevice } from '../device/precheck.js';
import { lowerControlPriority } from '../device/priority.js';
import { occupied, readEntries } from '../control/registry.js';
import { deviceLogFile, ensureLogDir, ensureRunDir, runDir } from '../paths.js';
import { resolveControlGroup } from '../config/control-group.js';
import { configPath, deviceKey, loadConfig, resolvePolicy } from '../config/file.js';
import { CLI_KEY_NAMES, POLICY_KEYS } from '../config/schema.js';
import { printJson, type CliContext } from './context.js';
import { failureMessage, onFirstReadyLine, READY_FD_ENV, sendReady, takeReadyFd, type Ready } from './readiness.js';
import type { AddFlags } from './schemas.js';
import type { NativeAddon } from '../native.js';
import { stderrIsJournal } from '../journal.js';
import { detachedEnv } from '../../bin/spawn-env.js';
import { nameDir } from '../device/stable-name.js';
import { persistAdded, persistPlan } from './enable.js';
import { notifier, readyMessage, servingStatus, STATUS_INTERVAL_MS, type Notifier } from '../service/notify.js';

const BIN = fileURLToPath(new URL('../../bin/dmremap-ublk.js', import.meta.url));
export const READY_TIMEOUT_MS = 120_000;

export function announce(ctx: CliContext, json: boolean, ready: Ready): void {
  if (json) printJson(ctx, { devId: ready.devId, blockPath: ready.blockPath, name: ready.name, pid: ready.pid });
  else ctx.stdout.write(`${ready.blockPath}\n`);
}

/**
 * Fills in flags.device.policy: add's flags, over the config file's section for this device (by --name,
 * else by main path), over its global keys, over DEFAULT_POLICY. A config file that cannot be read or is
 * invalid fails here, before anything is created. The file is read only for what the flags leave open, so
 * the detached daemon, which gets every key as a flag, never reads it (it may have changed in between).
 */
export function withPolicy(env: NodeJS.ProcessEnv, flags: AddFlags): AddFlags {
  const given = flags.policyFlags;
  const complete = POLICY_KEYS.every((k) => given[k] !== undefined);
  const config = complete ? {} : loadConfig(configPath(env)).config;
  const policy = resolvePolicy(config, deviceKey(flags.device.name, flags.device.mainPath), given);
  return { ...flags, device: { ...flags.device, policy } };
}

/**
 * The user's `add` (not `up` at boot, not the daemon itself, which serve root-only with a warning instead):
 * E_CONFIG, before anything is created, when the config's controlGroup names a group that does not resolve
 * now; the user can fix the config and add again.
 */
export function requireControlGroup(env: NodeJS.ProcessEnv): void {
  const loaded = loadConfig(configPath(env));
  resolveControlGroup(loaded.config.controlGroup, loaded.file);
}

/**
 * Runs the daemon in this process until it is told to stop. Resolves with the exit code. The daemon's modules
 * (and the logger's) load here and in serveForeground, not with this module: a detached `add` never needs
 * them, and one its precheck refuses is not kept waiting for them.
 */
export async function runForeground(ctx: CliContext, flags: AddFlags): Promise<number> {
  const { Daemon } = await import('../device/daemon.js');
  return serveForeground(ctx, { logFile: flags.logFile, json: flags.json, name: flags.device.name }, (deps) => Daemon.start(flags.device, deps));
}

/** The exit code of a daemon that died of an error nothing handled (EX_SOFTWARE): its device stays quiesced. */
export const FATAL_EXIT_CODE = 70;
/**
 * How long a daemon's exit (fatal, or with the code serveForeground returns: 0, RESTART_EXIT_CODE, a failed
 * start or recover) lets process.exit() take before a native watchdog ends the process (_exit) with that
 * code anyway: exit waits for libuv's worker threads, and one stuck in a blocking syscall (a read of a dead
 * device) would otherwise keep the process, and with it the device's recovery (the supervisor waits for
 * this exit to start the successor), waiting for ever.
 */
export const FATAL_EXIT_GRACE_MS = 3000;

/**
 * Runs a daemon in this process (`add --foreground`, `recover --foreground`): `begin` creates or recovers
 * the device; its readiness goes to the parent's pipe (detached) or stdout. Resolves with the exit code.
 * An exception or rejection nothing handled is logged (fatal) and ends the process with FATAL_EXIT_CODE,
 * never letting it run on in an undefined state; the kernel quiesces a device created with user recovery.
 * When the process exits with the code returned (ctx.exitsAfter), every exit once the addon is loaded is
 * bounded by the exit watchdog (FATAL_EXIT_GRACE_MS), not only the fatal one.
 */
export async function serveForeground(
  ctx: CliContext,
  opts: { logFile: string | null; json: boolean; name: string | null },
  begin: (deps: DaemonDeps) => Promise<Daemon>,
): Promise<number> {
  const logModule = await import('../log.js');
  const { createLogger } = logModule;
  const { hasSupervisor } = await import('../supervisor/child-process.js');
  const readyFd = takeReadyFd(ctx.env);
  const log = createLogger({
    file: opts.logFile ?? undefined,
    pretty: opts.logFile === null && ctx.stderrIsTTY,
    stderr: ctx.stderr,
    level: ctx.env.DMREMAP_LOG_LEVEL,
  });
  let native: NativeAddon | null = null;
  /** The process is about to exit with `code`: a libuv worker stuck in a blocking syscall cannot hold it. */
  const boundExit = (code: number): void => {
    if (ctx.exitsAfter === true) native?.armExitWatchdog(FATAL_EXIT_GRACE_MS, code);
  };
  const fatal = (err: unknown, origin: string): void => {
    log.fatal({ err: err instanceof Error ? (err.stack ?? err.message) : String(err), origin }, 'unhandled error: exiting');
    native?.armExitWatchdog(FATAL_EXIT_GRACE_MS, FATAL_EXIT_CODE);
    process.exit(FATAL_EXIT_CODE);
  };
  const onException = (err: unknown): void => fatal(err, 'uncaughtException');
  const onRejection = (err: unknown): void => fatal(err, 'unhandledRejection');
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  // Signals that arrive while the device is being set up are remembered and acted on once it is up,
  // so that setup is never cut short with a half-created device left in the kernel.
  let daemon: Daemon | null = null;
  let pendingSignal: NodeJS.Signals | null = null;
  let notify: Notifier | null = null;
  const onSignal = (sig: NodeJS.Signals): void => {
    notify?.send(`STOPPING=1\nSTATUS=stopping (signal ${sig})`);
    if (daemon) void daemon.shutdown(`signal ${sig}`);
    else pendingSignal = sig;
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];
  for (const s of signals) process.on(s, onSignal);
  // SIGHUP (logrotate's postrotate, through `logs reopen`): reopen the log file by its name, move stdout and
  // stderr that wrote to the old file to the new one (the addon's dup2: Node's fatal messages, an abort's
  // text), and have the supervisor, which writes to the same file, do the same. Never a reason to stop.
  const reopenOnHup = async (): Promise<void> => {
    const { reopenLogFile } = logModule;
    const addon = native ?? (await ctx.loadNative().catch(() => null));
    try {
      const done = reopenLogFile(log, addon === null ? undefined : (fd, target) => addon.redirectStdio(fd, target));
      if (!done) {
        log.info('SIGHUP: no log file to reopen');
        return;
      }
      log.info({ logFile: opts.logFile, stdio: done.stdio }, 'log file reopened (SIGHUP)');
      if (done.stdioError !== null) log.error({ logFile: opts.logFile, err: done.stdioError }, 'cannot move stdout/stderr to the reopened log file');
    } catch (e) {
      log.error({ logFile: opts.logFile, err: String(e) }, 'cannot reopen the log file: still writing to the old one');
    }
    if (hasSupervisor(ctx.env)) {
      try {
        process.kill(process.ppid, 'SIGHUP');
      } catch {
        // The supervisor is gone: nothing to tell.
      }
    }
  };
  const ignoreHup = (): void => void reopenOnHup();
  process.on('SIGHUP', ignoreHup);
  try {
    try {
      native = await ctx.loadNative();
      notify = notifier(native, ctx.env, log);
      daemon = await begin({ native, runDir: runDir(ctx.env), log, logFile: opts.logFile, nameDir: nameDir(ctx.env) });
    } catch (e) {
      const err = toDmrError(e);
      // On stderr the CLI's own one-line error says it; a log file must say it too.
      if (opts.logFile !== null) log.error({ code: err.code, err: err.message }, 'device not created');
      if (readyFd !== null) sendReady(readyFd, failureMessage(err));
      boundExit(err.exitCode);
      throw err;
    }
    // The queue threads exist now: from here on the JS thread yields the CPU to them (priority.ts).
    lowerControlPriority(log);
    const ready: Ready = { ok: true, devId: daemon.info.devId, blockPath: daemon.info.blockPath, name: opts.name, pid: process.pid, pairId: daemon.pairId };
    if (readyFd !== null) sendReady(readyFd, ready);
    else announce(ctx, opts.json, ready);
    // Under systemd (Type=notify): the device is live and its stable name linked (Daemon.bringUp).
    const live = daemon;
    const status = (): string => servingStatus(live.info.blockPath, opts.name, live.status().remap?.remapped ?? null);
    notify.send(readyMessage(process.pid, status()));
    const statusTimer = notify.enabled ? setInterval(() => notify?.send(`STATUS=${status()}`), STATUS_INTERVAL_MS) : null;
    statusTimer?.unref();
    if (pendingSignal !== null) void daemon.shutdown(`signal ${pendingSignal}`);
    const code = await daemon.exited.finally(() => {
      if (statusTimer !== null) clearInterval(statusTimer);
    });
    boundExit(code);
    return code;
  } finally {
    for (const s of signals) process.off(s, onSignal);
    process.off('SIGHUP', ignoreHup);
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  }
}

/**
 * Starts the daemon detached, under a supervisor (`supervise`, src/supervisor/) that restarts it in
 * recovery mode when it dies, and waits for it to report the device live (or why it is not).
 */
export async function runDetached(ctx: CliContext, flags: AddFlags, persist = false): Promise<number> {
  const dir = runDir(ctx.env);
  // Validate here too, so that bad input (and a spare in use) is reported before anything (run directory,
  // log file, daemon) is created: claim main and spare, check the spare region, release them. The daemon
  // claims and checks again: things may change in between.
  const record = persist ? persistPlan(ctx, flags) : null;
  await precheckDevice(await ctx.loadNative(), flags.device, occupied(readEntries(dir)));
  ensureRunDir(dir);
  const ready = await spawnDaemon(['add', ...daemonArgs(flags)], detachedLogFile(ctx.env, flags.logFile, flags.device.name, flags.device.mainPath), ctx.env);
  if (record === null) {
    announce(ctx, flags.json, ready);
    return 0;
  }
  const saved = persistAdded(ctx, record, ready.pairId);
  if (flags.json) printJson(ctx, { devId: ready.devId, blockPath: ready.blockPath, name: ready.name, pid: ready.pid, record: saved.record, systemd: saved.systemd, tableUuid: saved.tableUuid });
  else announce(ctx, false, ready);
  return 0;
}

/**
 * Where a detached daemon logs: --log-file if given; null (stderr, inherited) when this process's stderr is
 * the systemd journal (a service), so that the journal gets the lines; else the device's own file
 * (paths.ts deviceLogFile).
 */
export function detachedLogFile(env: NodeJS.ProcessEnv, given: string | null, name: string | null, mainPath: string, journal = stderrIsJournal(env)): string | null {
  if (given !== null) return given;
  if (journal) return null;
  return deviceLogFile(env, name, mainPath);
}

/**
 * Starts `dmremap-ublk <args> --foreground --log-file <logFile>` detached, under `supervise` (a new session, cwd /, output to
 * the log file) and waits for its one readiness line: the device live, or the error that stopped it. With
 * `logFile` null both write to this process's stderr (the journal) instead.
 */
export async function spawnDaemon(args: string[], logFile: string | null, env: NodeJS.ProcessEnv): Promise<Ready> {
  let out: number;
  if (logFile === null) {
    out = 2;
  } else {
    try {
      ensureLogDir(logFile);
      out = fs.openSync(logFile, 'a', 0o640);
    } catch (e) {
      if (e instanceof DmrError) throw e;
      throw new DmrError('E_RUN_DIR', `cannot open log file ${logFile}: ${errorCodeOf(e) ?? String(e)}`);
    }
  }
  // Under a supervisor (`supervise`, src/supervisor/): it restarts the daemon in recovery mode when it dies.
  const child = spawn(process.execPath, [BIN, 'supervise', ...args, '--foreground', ...(logFile !== null ? ['--log-file', logFile] : [])], {
    cwd: '/',
    detached: true,
    stdio: ['ignore', out, out, 'pipe'],
    // Detached: it is not the main process of a unit that runs this `add` or `up` (bin/spawn-env.js).
    env: { ...detachedEnv(env), [READY_FD_ENV]: '3' },
  });
  if (logFile !== null) fs.closeSync(out);
  const ready = await awaitReady(child, logFile ?? 'the journal');
  child.unref();
  return ready;
}

/**
 * The validated flags again, with absolute paths: the daemon runs in / and must see the same devices. The
 * resolved error-handling policy goes as flags too, so the daemon runs with what was resolved here.
 */
export function daemonArgs(flags: AddFlags): string[] {
  const d = flags.device;
  const args = ['--main', d.mainPath, '--spare', d.sparePath, '--depth', String(d.depth), '--max-io', String(d.maxIoBytes / 1024)];
  if (d.name !== null) args.push('--name', d.name);
  if (d.queues !== undefined) args.push('--queues', String(d.queues));
  if (d.blockSize !== undefined) args.push('--block-size', String(d.blockSize));
  args.push('--buffers', d.buffers);
  if (d.spareOffset !== undefined) args.push('--spare-offset', String(d.spareOffset));
  if (d.spareSize !== undefined) args.push('--spare-size', String(d.spareSize));
  if (d.forceFormat === true) args.push('--force-format');
  if (d.requireTable === true) args.push('--require-table');
  if (d.tableUuid !== undefined) args.push('--table-uuid', d.tableUuid);
  const p = d.policy;
  // Which of them were given (the rest came from the config file): the daemon's entry keeps only those.
  const given = d.policyGiven ?? flags.policyFlags;
  args.push('--policy-given', POLICY_KEYS.filter((k) => given[k] !== undefined).map((k) => CLI_KEY_NAMES[k].replaceAll('_', '-')).join(','));
  if (p !== undefined) {
    args.push('--auto-remap', p.autoRemap ? 'on' : 'off', '--error-threshold', String(p.errorThreshold));
    args.push('--read-retries', String(p.readRetries), '--retry-backoff-ms', String(p.retryBackoffMs));
    args.push('--outage-regions', String(p.outageRegions), '--write-outage-regions', String(p.writeOutageRegions), '--outage-window-ms', String(p.outageWindowMs), '--outage-hold-ms', String(p.outageHoldMs));
  }
  return args;
}

function awaitReady(child: ReturnType<typeof spawn>, logFile: string): Promise<Ready> {
  const pipe = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (err: DmrError | null, ready?: Ready): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      pipe.destroy();
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(ready as Ready);
    };
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      settle(new DmrError('E_TIMEOUT', `daemon did not report the device ready within ${READY_TIMEOUT_MS / 1000} s (see ${logFile})`));
    }, READY_TIMEOUT_MS);
    const onExit = (code: number | null, sig: NodeJS.Signals | null): void => {
      // The pipe may still hold the message: give it a moment to be read before reporting the exit.
      setTimeout(() => {
        const how = sig !== null ? `signal ${sig}` : `exit code ${code}`;
        settle(new DmrError('E_DAEMON', `daemon exited (${how}) before the device was ready (see ${logFile})`));
      }, 100);
    };
    child.on('exit', onExit);
    child.on('error', (e) => settle(new DmrError('E_DAEMON', `cannot start the daemon: ${e.message}`)));
    onFirstReadyLine(pipe, (msg) => {
      if (msg === null) settle(new DmrError('E_PROTOCOL', `daemon sent a malformed readiness message (see ${logFile})`));
      else if (msg.ok) settle(null, msg);
      else settle(new DmrError(isErrorCode(msg.code) ? msg.code : 'E_DAEMON', msg.message));
    });
  });
}
