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
export const defaultLogFile = (dir: string): string => path.join(dir, 'daemon.log');
