// Where the daemons keep their control sockets, registry files and (when detached) logs.
// DMREMAP_RUN_DIR overrides the directory, which lets tests run without root.
import fs from 'node:fs';
import path from 'node:path';
import { DmrError, errorCodeOf } from './errors.js';

export const DEFAULT_RUN_DIR = '/run/dmremap-ublk';

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
