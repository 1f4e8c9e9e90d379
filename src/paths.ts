// Where the daemons keep their control sockets, registry files and (when detached) logs.
// DMREMAP_RUN_DIR overrides the directory, which lets tests run without root.
import { createHash } from 'node:crypto';
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

/** The run directory's mode without a control group: only its owner enters. */
export const RUN_DIR_MODE = 0o700;
/**
 * With a control group: the group may enter and read (list the registry files, reach the sockets), and
 * setgid, so that what is created in it (registry files, sockets) gets the group.
 */
export const RUN_DIR_GROUP_MODE = 0o2750;

/**
 * Creates the run directory if needed and sets who may enter it: only its owner (0700) when `controlGid` is
 * null; also the group `controlGid` (02750, the directory's group) when it is a gid; when undefined (a
 * command that does not know the config), either of those modes is kept as it is and anything else made 0700.
 */
export function ensureRunDir(dir: string, controlGid?: number | null): void {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: RUN_DIR_MODE });
    const st = fs.lstatSync(dir);
    if (!st.isDirectory()) throw new DmrError('E_RUN_DIR', `run directory ${dir} is not a directory`);
    if (typeof process.getuid === 'function' && st.uid !== process.getuid()) {
      throw new DmrError('E_RUN_DIR', `run directory ${dir} belongs to another user (uid ${st.uid})`);
    }
    const mode = st.mode & 0o7777;
    if (controlGid === undefined) {
      if (mode !== RUN_DIR_MODE && mode !== RUN_DIR_GROUP_MODE) fs.chmodSync(dir, RUN_DIR_MODE);
      return;
    }
    if (controlGid !== null && st.gid !== controlGid) fs.chownSync(dir, st.uid, controlGid);
    const want = controlGid === null ? RUN_DIR_MODE : RUN_DIR_GROUP_MODE;
    if (mode !== want) fs.chmodSync(dir, want);
  } catch (e) {
    if (e instanceof DmrError) throw e;
    throw new DmrError('E_RUN_DIR', `cannot create run directory ${dir}: ${errorCodeOf(e) ?? String(e)}`, {
      cause: e,
    });
  }
}

/**
 * E_PERMISSION unless this process owns the run directory (root in production): `what` changes the run
 * directory (del's mark), which a control group member may enter and read but not write.
 */
export function requireRunDirOwner(dir: string, what: string): void {
  if (typeof process.geteuid !== 'function') return;
  let owner: number;
  try {
    owner = fs.statSync(dir).uid;
  } catch {
    return; // no directory: the command's own checks report that
  }
  if (owner !== process.geteuid()) throw new DmrError('E_PERMISSION', `${what} needs root (the owner of ${dir}, uid ${owner}); this is uid ${process.geteuid()}`);
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
 * `<log dir>/main@<main's file name>-<8 hex digits>.log` (the device id is not known before the kernel assigns
 * it, and a new one comes with every add). In the file name, characters other than letters, digits, ".", "_"
 * and "-" become "_"; the hex digits are the start of the SHA-256 of main's absolute path, so that two mains
 * with the same file name (/dev/sdb, /dev/mapper/sdb) or names differing only in a replaced character get
 * two files. A device name cannot hold "@", so no name gives an unnamed device's file.
 */
export function deviceLogFile(env: NodeJS.ProcessEnv, name: string | null, mainPath: string): string {
  if (name !== null) return path.join(logDir(env), `${name}.log`);
  const abs = path.resolve(mainPath);
  const safe = path.basename(abs).replace(/[^A-Za-z0-9._-]/g, '_');
  const hash = createHash('sha256').update(abs).digest('hex').slice(0, 8);
  return path.join(logDir(env), `main@${safe}-${hash}.log`);
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
