// One `config set` or `config unset` at a time: each reads the config file, changes one key and writes
// it back, so two at once could each write a file without the other's change. The read-modify-write runs
// under a lock file beside the config file (created with O_EXCL, holding the owner's pid and start
// time). A lock whose owner is gone (killed mid-write) is taken over; a live one is waited for, up to a
// limit, then the command fails naming the owner and changes nothing.
import fs from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import { isAlive, processStartTime } from '../control/registry.js';
import { DmrError, errorCodeOf } from '../errors.js';
import { ensureConfigDir } from './file.js';

const ownerSchema = z.strictObject({ pid: z.number().int().positive(), pidStart: z.string().nullable() });
type Owner = z.infer<typeof ownerSchema>;

/** The lock file of `file`. */
export const lockPathOf = (file: string): string => path.join(path.dirname(file), `.${path.basename(file)}.lock`);

const sleepSync = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

/** The lock's owner and inode, or null when it cannot be read as one (being written, or gone). */
function readOwner(lock: string): { owner: Owner; ino: number } | null {
  try {
    const fd = fs.openSync(lock, 'r');
    try {
      const ino = fs.fstatSync(fd).ino;
      const parsed = ownerSchema.safeParse(JSON.parse(fs.readFileSync(fd, 'utf8')));
      return parsed.success ? { owner: parsed.data, ino } : null;
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return null;
  }
}

/** Runs `fn` holding the lock of `file`; waits up to `waitMs` for another holder. E_CONFIG when it cannot. */
export function withConfigLock<T>(file: string, fn: () => T, waitMs = 10_000): T {
  ensureConfigDir(path.dirname(file));
  const lock = lockPathOf(file);
  const me: Owner = { pid: process.pid, pidStart: processStartTime(process.pid) };
  const deadline = Date.now() + waitMs;
  for (let unreadableSince: number | null = null; ; ) {
    try {
      const fd = fs.openSync(lock, 'wx', 0o600);
      try {
        fs.writeFileSync(fd, JSON.stringify(me));
      } finally {
        fs.closeSync(fd);
      }
      break;
    } catch (e) {
      if (errorCodeOf(e) !== 'EEXIST') throw new DmrError('E_CONFIG', `cannot create the lock file ${lock} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
    }
    const held = readOwner(lock);
    if (held === null) {
      // Being written by its owner right now, or left empty by one that died before writing it.
      unreadableSince ??= Date.now();
      if (Date.now() - unreadableSince > 2000) fs.rmSync(lock, { force: true });
    } else if (!isAlive(held.owner)) {
      unreadableSince = null;
      // Its owner is gone: take it over (unless another waiter already did: the inode changed).
      try {
        if (fs.lstatSync(lock).ino === held.ino) fs.rmSync(lock, { force: true });
      } catch {
        // gone already
      }
      continue;
    } else {
      unreadableSince = null;
      if (Date.now() > deadline) {
        throw new DmrError('E_CONFIG', `${file} is being changed by another dmremap-ublk (pid ${held.owner.pid}); nothing was changed, try again`);
      }
    }
    sleepSync(25);
  }
  try {
    return fn();
  } finally {
    const held = readOwner(lock);
    if (held !== null && held.owner.pid === me.pid) fs.rmSync(lock, { force: true });
  }
}
