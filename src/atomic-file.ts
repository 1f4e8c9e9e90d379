// Replacing a small state file so that a crash or a power cut leaves either the old file or the new one, whole:
// the bytes go to a temporary file in the same directory, which is fsynced, renamed over the file, and then the
// directory is fsynced (so the rename itself is on disk). Used for daemon state in the state dir (scan records),
// the config file (config/file.ts, with its own error message) and the surface map's output.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { DmrError, errorCodeOf, type ErrorCode } from './errors.js';

export interface AtomicWriteOptions {
  /** Mode of the new file (default 0600: daemon state is not for other users). */
  mode?: number;
  /** The DmrError code of a failure (the message names the file and the errno). */
  errorCode: ErrorCode;
}

/** fsync of a directory is refused by some file systems; the rename has happened then, and that is all they offer. */
const DIR_FSYNC_UNSUPPORTED = new Set(['EINVAL', 'ENOTSUP', 'EOPNOTSUPP']);

/**
 * Replaces `file` with `data`, atomically and durably (temp file + fsync + rename + directory fsync). On a
 * failure before the rename the old file is untouched and no temporary file is left; the error is a DmrError
 * with `errorCode`. The directory must exist.
 */
export function writeFileAtomic(file: string, data: Uint8Array | string, options: AtomicWriteOptions): void {
  const mode = options.mode ?? 0o600;
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fail = (doing: string, e: unknown): DmrError =>
    new DmrError(options.errorCode, `cannot ${doing} ${file} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  let fd: number | null = null;
  try {
    fd = fs.openSync(tmp, 'wx', mode);
    fs.fchmodSync(fd, mode);
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd !== null) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw fail('write', e);
  }
  let dfd: number | null = null;
  try {
    dfd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    fs.fsyncSync(dfd);
  } catch (e) {
    if (!DIR_FSYNC_UNSUPPORTED.has(errorCodeOf(e) ?? '')) throw fail('sync the directory of', e);
  } finally {
    if (dfd !== null) fs.closeSync(dfd);
  }
}

/**
 * Replaces `file` in the state directory `dir` (created, mode 0700, if missing) with `data`, atomically, mode
 * 0600: the daemon's per-device state files (the scan's, the health series'). E_STATE when it cannot.
 */
export function writeStateFile(dir: string, file: string, data: Uint8Array | string): void {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new DmrError('E_STATE', `cannot create the state directory ${dir} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  }
  writeFileAtomic(file, data, { mode: 0o600, errorCode: 'E_STATE' });
}

/**
 * The bytes of the state file `file`, or null when it does not exist: opened without blocking (a FIFO put
 * there never hangs the daemon), a regular file only (E_STATE), at most `maxBytes` (else the error
 * `tooBig(size)` gives, the caller's own kind of corrupt record). E_STATE when it cannot be read.
 */
export function readStateFile(file: string, maxBytes: number, tooBig: (size: number) => Error): Buffer | null {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    if (errorCodeOf(e) === 'ENOENT') return null;
    throw new DmrError('E_STATE', `cannot read ${file} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new DmrError('E_STATE', `${file} is not a regular file`);
    if (st.size > maxBytes) throw tooBig(st.size);
    return fs.readFileSync(fd);
  } catch (e) {
    if (e instanceof DmrError) throw e;
    throw new DmrError('E_STATE', `cannot read ${file} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  } finally {
    fs.closeSync(fd);
  }
}
