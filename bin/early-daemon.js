// `supervise add|recover ... --foreground` (the process `add` detaches) starts its daemon child here, before
// node loads the CLI's bundle: the child's start-up (node, the bundle, the addon) then runs beside the
// supervisor's own instead of after it. In the TCG test VM a process takes about a second or two to load the
// bundle, and `add` starts three of them one after another (the CLI, the supervisor, the daemon).
//
// Spawned exactly as src/supervisor/child-process.ts spawns a supervised child (the same options, and the
// environment both build with bin/spawn-env.js daemonEnv), and only when runSupervise would spawn it at once anyway: the
// command is add or recover with --foreground. Its exit is listened for from here on, so that an exit before
// the bundle is loaded is not missed; src/cli/supervise.ts adopts it as the first child
// (src/supervisor/child-process.ts adoptChild). DMREMAP_NO_EARLY_DAEMON=1 turns it off.
import { spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { daemonEnv } from './spawn-env.js';

const BIN = fileURLToPath(new URL('./dmremap-ublk.js', import.meta.url));

/** The daemon's argv when `argv` (the CLI's, without node and the script) is one that starts it at once, else null. */
export function earlyDaemonArgs(argv) {
  const [first, cmd, ...rest] = argv;
  if (first !== 'supervise' || (cmd !== 'add' && cmd !== 'recover')) return null;
  if (!rest.includes('--foreground')) return null;
  return [cmd, ...rest];
}

/**
 * Starts the daemon for `argv` if it is a supervise command that starts one: { args, child, exited, readyPipe },
 * where exited resolves with { code, signal } (code 127 when it could not be started at all) and readyPipe
 * holds what the child writes on its fd 3 (its readiness line). Else null.
 */
export function startEarlyDaemon(argv, env = process.env, command = [process.execPath, BIN]) {
  const args = earlyDaemonArgs(argv);
  if (args === null || env.DMREMAP_NO_EARLY_DAEMON === '1') return null;
  const [exe, ...pre] = command;
  const child = spawn(exe, [...pre, ...args], {
    cwd: '/',
    stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
    env: daemonEnv(env, process.pid),
  });
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
    child.on('error', () => resolve({ code: 127, signal: null }));
  });
  // Read from now on: node discards what a child's pipe holds when it exits with nobody reading, and a
  // daemon refused at once (a spare in use) writes its one readiness line, the reason, and exits.
  const readyPipe = new PassThrough();
  child.stdio[3].pipe(readyPipe);
  return { args, child, exited, readyPipe };
}
