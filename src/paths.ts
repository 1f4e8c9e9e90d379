// Where the daemons keep their control sockets, registry files and (when detached) logs.
// DMREMAP_RUN_DIR overrides the directory, which lets tests run without root.
import fs from 'node:fs';
import path from 'node:path';
import { DmrError, errorCodeOf } from './errors.js';

export const DEFAULT_RUN_DIR = '/run/dmremap-ublk';
/** Daemon state that outlives a restart but is not remap metadata (that lives on the spare). */
export const DEFAULT_STATE_DIR = '/var/lib/dmremap-ublk';

/** DMREMAP_STATE_DIR overrides the state directory (tests). */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.DMREMAP_STATE_DIR;
  return dir !== undefined && dir !== '' ? path.resolve(dir) : DEFAULT_STATE_DIR;
}

/** The file holding a spare pair's queued relocations. */
export const relocationQueuePath = (dir: string, pairId: string): string => path.join(dir, `${pairId}.relocate.json`);

export function runDir(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.DMREMAP_RUN_DIR;
  return dir !== undefined && dir !== '' ? path.resolve(dir) : DEFAULT_RUN_DIR;
}

/** Creates the run directory if needed and makes sure only its owner can enter it (mode 0700). */
export function ensureRunDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = fs.lstatSync(dir);
    if (!st.isDirectory()) throw new DmrError('E_RUN_DIR', `run directory ${dir} is not a directory`);
    if (typeof process.getuid === 'function' && st.uid !== process.getuid()) {
      throw new DmrError('E_RUN_DIR', `run directory ${dir} belongs to another user (uid ${st.uid})`);
    }
    if ((st.mode & 0o777) !== 0o700) fs.chmodSync(dir, 0o700);
  } catch (e) {
    if (e instanceof DmrError) throw e;
    throw new DmrError('E_RUN_DIR', `cannot create run directory ${dir}: ${errorCodeOf(e) ?? String(e)}`, {
      cause: e,
    });
  }
}

export const socketPath = (dir: string, devId: number): string => path.join(dir, `${devId}.sock`);
export const registryPath = (dir: string, devId: number): string => path.join(dir, `${devId}.json`);

/** Where detached daemons log, one file per device (DMREMAP_LOG_DIR overrides it). */
export const DEFAULT_LOG_DIR = '/var/log/dmremap-ublk';

export function logDir(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.DMREMAP_LOG_DIR;
  return dir !== undefined && dir !== '' ? path.resolve(dir) : DEFAULT_LOG_DIR;
}

/**
 * A detached device's log file: `<log dir>/<name>.log`, or for a device without a name
 * `<log dir>/main-<main's file name>.log` (the device id is not known before the kernel assigns it, and a
 * new one comes with every add). Characters other than letters, digits, ".", "_" and "-" become "_".
 */
export function deviceLogFile(env: NodeJS.ProcessEnv, name: string | null, mainPath: string): string {
  const base = name ?? `main-${path.basename(mainPath).replace(/[^A-Za-z0-9._-]/g, '_')}`;
  return path.join(logDir(env), `${base}.log`);
}

/** Creates a log file's directory if needed (mode 0750: the logs name devices and paths). */
export function ensureLogDir(file: string): void {
  const dir = path.dirname(file);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o750 });
  } catch (e) {
    throw new DmrError('E_RUN_DIR', `cannot create log directory ${dir}: ${errorCodeOf(e) ?? String(e)}`, { cause: e });
  }
}
