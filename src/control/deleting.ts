// `del` wins over a restart or a recovery. While `del` removes device N it holds the mark
// <run dir>/N.deleting (its pid and start time). A successor (the supervisor's `recover` after the daemon
// detached or died, `restart`'s own `recover`, `recover` by hand) that finds the mark held refuses to take the
// device over (E_DELETING), and one that took it over before the mark appeared does not publish its entry
// (it detaches again); `del` stops or deletes whatever serves the device until nothing is left. A mark whose
// owner is gone (a killed `del`) is ignored.
import fs from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import { DmrError } from '../errors.js';
import { isAlive, processStartTime } from './registry.js';

const markSchema = z.strictObject({ pid: z.number().int().positive(), pidStart: z.string().nullable() });

export const deletingPath = (dir: string, devId: number): string => path.join(dir, `${devId}.deleting`);

/** Marks device `devId` as being deleted by this process; returns the function that removes the mark. */
export function markDeleting(dir: string, devId: number): () => void {
  const file = deletingPath(dir, devId);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ pid: process.pid, pidStart: processStartTime(process.pid) }), { mode: 0o600 });
  fs.renameSync(tmp, file);
  return () => {
    if (deletingBy(dir, devId) === process.pid) fs.rmSync(file, { force: true });
  };
}

/** The pid of the live `del` removing device `devId`, or null. */
export function deletingBy(dir: string, devId: number): number | null {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(deletingPath(dir, devId), 'utf8'));
  } catch {
    return null;
  }
  const m = markSchema.safeParse(raw);
  return m.success && isAlive(m.data) ? m.data.pid : null;
}

/** E_DELETING when a `del` of device `devId` is under way: "<what> is being deleted (...): <outcome>". */
export function refuseIfDeleting(dir: string, devId: number, what: string, outcome = 'not taken over'): void {
  const pid = deletingBy(dir, devId);
  if (pid !== null) throw new DmrError('E_DELETING', `${what} is being deleted (dmremap-ublk del, pid ${pid}): ${outcome}`);
}
