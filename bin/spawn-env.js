// The environment a daemon is started with, built here and only here: by bin/early-daemon.js (the supervisor's
// first daemon, spawned before the CLI's bundle loads) and by src/supervisor/child-process.ts (every later one),
// and the detached supervisor's own (src/cli/add.ts spawnDaemon). Plain JavaScript with no imports, so that
// bin/early-daemon.js loads it in a moment; the CLI's bundle includes it (bin/spawn-env.d.ts: its types).
// install-systemd writes DAEMON_THREADPOOL_SIZE into the unit (src/service/systemd.ts renderUnits).

/** The fd number of a daemon's readiness pipe, as an environment variable (src/cli/readiness.ts). */
export const READY_FD_ENV = 'DMREMAP_READY_FD';
/** The pid of the supervisor that will start a daemon's successor (src/supervisor/child-process.ts hasSupervisor). */
export const SUPERVISOR_PID_ENV = 'DMREMAP_SUPERVISOR_PID';
/**
 * libuv's pool size for the daemon (UV_THREADPOOL_SIZE; node's default is 4). Every backing read and write
 * of the addon outside the io_uring data path (verify, the scan's reads, relocations, the spare's journal
 * writes and syncs) holds a pool thread while it runs, and a dying main's reads can take tens of seconds
 * each: with more threads, reads of main stuck in a disk's error recovery leave threads for the journal.
 * It must be in the environment the process starts with: node reads it when the pool first runs, and the
 * ES module loader runs it reading bin/ before any of our code (setting process.env there is too late), so
 * the supervisor sets it for the children it spawns, and the systemd unit for its daemon; a value the user
 * set is kept.
 */
export const DAEMON_THREADPOOL_SIZE = '16';
/**
 * What a service manager gives its unit's main process alone: systemd's notification socket (READY=1,
 * STATUS=, MAINPID=) and watchdog. Only `up --foreground`, the unit's command, is that process; a detached
 * supervisor and the daemons it starts are not, and must not tell the unit that happens to run `add` or
 * `up` (a script's service, a shell under one) that they are ready: they never inherit these.
 */
export const SERVICE_MANAGER_ENV = ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID'];

/** `env` without what a service manager gives its unit's main process (SERVICE_MANAGER_ENV). */
export function detachedEnv(env) {
  const out = { ...env };
  for (const k of SERVICE_MANAGER_ENV) delete out[k];
  return out;
}

/**
 * The environment of a supervised daemon: `env` without the service manager's names, with its readiness
 * pipe on fd 3, its supervisor's pid, and the pool size unless the user set one.
 */
export function daemonEnv(env, supervisorPid) {
  return {
    ...detachedEnv(env),
    UV_THREADPOOL_SIZE: env.UV_THREADPOOL_SIZE ?? DAEMON_THREADPOOL_SIZE,
    [READY_FD_ENV]: '3',
    [SUPERVISOR_PID_ENV]: String(supervisorPid),
  };
}
