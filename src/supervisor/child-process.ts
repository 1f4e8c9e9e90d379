// Starting the supervised daemon: `node bin/dmremap-ublk.js <args>` in the supervisor's session, cwd /,
// stdout and stderr shared with the supervisor (the log file), fd 3 a pipe for its readiness line. The
// child learns its supervisor's pid from DMREMAP_SUPERVISOR_PID (`restart` asks whether one will start its
// successor). Its environment is built by bin/spawn-env.js, as bin/early-daemon.js builds the first one's.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { daemonEnv, SUPERVISOR_PID_ENV } from '../../bin/spawn-env.js';
import { readReadyLine } from './ready-line.js';
import type { StandbyChild, SupervisedChild } from './supervisor.js';
import type { ChildExit } from './restart-policy.js';
import type { EarlyDaemon } from '../cli/context.js';

export const BIN = fileURLToPath(new URL('../../bin/dmremap-ublk.js', import.meta.url));
export { DAEMON_THREADPOOL_SIZE, SUPERVISOR_PID_ENV } from '../../bin/spawn-env.js';

/**
 * The environment of a supervised child (bin/spawn-env.js daemonEnv, which bin/early-daemon.js uses too):
 * `env` without a service manager's NOTIFY_SOCKET and watchdog (a supervised daemon is never a unit's main
 * process), its supervisor's names, and the pool size unless set.
 */
export function supervisedEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return daemonEnv(env, process.pid);
}

/**
 * Spawns `exe argv` as a supervised process: cwd /, stdout and stderr the supervisor's, fd 3 its readiness
 * pipe (read from the start), stdin ignored or a pipe. Returns the child with its readiness, exit and kill.
 * bin/early-daemon.js spawns the first daemon the same way (same options and environment names) before the
 * CLI loads; adoptChild takes it over.
 */
function spawnSupervised(exe: string, argv: string[], env: NodeJS.ProcessEnv, stdin: 'ignore' | 'pipe'): SupervisedChild & { child: ChildProcess } {
  const child = spawn(exe, argv, {
    cwd: '/',
    stdio: [stdin, 'inherit', 'inherit', 'pipe'],
    env: supervisedEnv(env),
  });
  const exited = new Promise<ChildExit>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
    // A child that could not be started at all (ENOENT, EACCES): reported as an exit code like a crash.
    child.on('error', () => resolve({ code: 127, signal: null }));
  });
  return supervised(child, child.stdio[3] as NodeJS.ReadableStream, exited);
}

/** A spawned child as the supervisor sees it: its readiness line (fd 3, read from now on), its exit, kill. */
function supervised(child: ChildProcess, readyPipe: NodeJS.ReadableStream, exited: Promise<ChildExit>): SupervisedChild & { child: ChildProcess } {
  return {
    child,
    pid: child.pid,
    ready: readReadyLine(readyPipe),
    exited,
    kill: (sig) => {
      try {
        child.kill(sig);
      } catch {
        // Exited meanwhile.
      }
    },
  };
}

/** The daemon bin/early-daemon.js started (its exit listened for since the spawn) as a supervised child. */
export function adoptChild(early: EarlyDaemon): SupervisedChild {
  return supervised(early.child, early.readyPipe, early.exited);
}

export function startChild(args: string[], env: NodeJS.ProcessEnv, command: string[] = [process.execPath, BIN]): SupervisedChild {
  const [exe, ...pre] = command as [string, ...string[]];
  return spawnSupervised(exe, [...pre, ...args], env, 'ignore');
}

/**
 * Starts a warm standby: `node bin/dmremap-ublk.js supervise standby` (cli/supervise.ts), like startChild but
 * with its stdin a pipe from the supervisor, on which activate() writes the successor's command line. Its
 * readiness pipe is read from the start, so the line it writes once it is the daemon is not missed.
 */
export function startStandby(env: NodeJS.ProcessEnv, command: string[] = [process.execPath, BIN, 'supervise', 'standby']): StandbyChild {
  const [exe, ...args] = command as [string, ...string[]];
  const { child, ...supervised } = spawnSupervised(exe, args, env, 'pipe');
  // A standby that died has a closed stdin: the write fails with EPIPE, which its exit already reports.
  child.stdin?.on('error', () => {});
  return {
    pid: supervised.pid,
    exited: supervised.exited,
    alive: () => child.exitCode === null && child.signalCode === null && child.pid !== undefined,
    activate: (a) => {
      child.stdin?.end(`${JSON.stringify({ args: a })}\n`);
      return supervised;
    },
    kill: supervised.kill,
  };
}

/** Whether this daemon runs under a supervisor that will start its successor: its parent is the supervisor. */
export function hasSupervisor(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env[SUPERVISOR_PID_ENV];
  return v !== undefined && v === String(process.ppid);
}
