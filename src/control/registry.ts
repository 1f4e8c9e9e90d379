// The registry: one small JSON file per running daemon in the run directory (<devId>.json), so that `list`,
// `status` and `del <name>` can find devices and `add` can refuse a main or spare another daemon already uses.
// Entries whose process is gone are stale: they are removed (with their socket) when read.
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { DmrError, errorCodeOf } from '../errors.js';
import { registryPath } from '../paths.js';

const backingRef = z.strictObject({
  path: z.string(),
  /** Identity of the device or file: "b:<rdev>" for block devices, "f:<dev>:<ino>" for files. */
  identity: z.string(),
});

export const registryEntrySchema = z.strictObject({
  version: z.literal(1),
  devId: z.number().int().nonnegative(),
  name: z.string().nullable(),
  pid: z.number().int().positive(),
  /** Process start time (field 22 of /proc/<pid>/stat) to tell the daemon from a later process with its pid. */
  pidStart: z.string().nullable(),
  blockPath: z.string(),
  charPath: z.string(),
  socket: z.string(),
  logFile: z.string().nullable(),
  startedAt: z.string(),
  main: backingRef,
  spare: backingRef,
  /** Why the device is quiesced with no daemon (written by the supervisor when its daemon died); absent or null while served. */
  quiesced: z.strictObject({ since: z.string(), reason: z.string() }).nullable().optional(),
});
export type RegistryEntry = z.infer<typeof registryEntrySchema>;

export function processStartTime(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether the process that wrote `entry` is still running. */
export function isAlive(entry: Pick<RegistryEntry, 'pid' | 'pidStart'>): boolean {
  try {
    process.kill(entry.pid, 0);
  } catch (e) {
    if (errorCodeOf(e) !== 'EPERM') return false;
  }
  if (entry.pidStart === null) return true;
  const now = processStartTime(entry.pid);
  return now === null || now === entry.pidStart;
}

/** Writes the entry atomically (temp file + rename), mode 0600. */
export function writeEntry(dir: string, entry: RegistryEntry): void {
  const file = registryPath(dir, entry.devId);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, `${JSON.stringify(entry, null, 2)}\n`, { mode: 0o600 });
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new DmrError('E_RUN_DIR', `cannot write registry file ${file}: ${errorCodeOf(e) ?? String(e)}`, { cause: e });
  }
}

/**
 * Records why device `devId` is quiesced in its registry entry, unless the entry is gone or a running
 * daemon owns it (then it is not quiesced). Returns whether it wrote.
 */
export function markQuiesced(dir: string, devId: number, reason: string, now: Date = new Date()): boolean {
  const entry = readEntry(registryPath(dir, devId));
  if (entry === null || isAlive(entry)) return false;
  writeEntry(dir, { ...entry, quiesced: { since: now.toISOString(), reason } });
  return true;
}

/** Removes the entry of `devId`, but only if it is still the one `pid` wrote. */
export function removeEntry(dir: string, devId: number, pid: number): void {
  const file = registryPath(dir, devId);
  const current = readEntry(file);
  if (current !== null && current.pid !== pid) return;
  fs.rmSync(file, { force: true });
}

function readEntry(file: string): RegistryEntry | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  try {
    const parsed = registryEntrySchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export interface Entries {
  /** Entries whose daemon is running, sorted by device id. */
  live: RegistryEntry[];
  /** Entries whose daemon is gone: its ublk device may still exist in the kernel (see device/reap.ts). */
  stale: RegistryEntry[];
}

/** Reads every registry entry. Changes nothing. */
export function readEntries(dir: string): Entries {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    if (errorCodeOf(e) === 'ENOENT') return { live: [], stale: [] };
    throw new DmrError('E_RUN_DIR', `cannot read run directory ${dir}: ${errorCodeOf(e) ?? String(e)}`, { cause: e });
  }
  const out: Entries = { live: [], stale: [] };
  for (const n of names) {
    if (!/^\d+\.json$/.test(n)) continue;
    const entry = readEntry(path.join(dir, n));
    if (entry !== null) (isAlive(entry) ? out.live : out.stale).push(entry);
  }
  out.live.sort((a, b) => a.devId - b.devId);
  out.stale.sort((a, b) => a.devId - b.devId);
  return out;
}

/** Removes a stale entry's registry file and socket. */
export function removeStale(dir: string, entry: RegistryEntry): void {
  removeEntry(dir, entry.devId, entry.pid);
  fs.rmSync(entry.socket, { force: true });
}

/**
 * Finds the device a user named on the command line: a path (/dev/ublkb0, /dev/ublkc0 or a symlink to
 * either), a device id ("0"), "ublkb0", or a name given with --name.
 */
export function resolveTarget(entries: RegistryEntry[], target: string): RegistryEntry {
  let found: RegistryEntry[];
  if (target.includes('/')) {
    const real = realpathOr(target);
    found = entries.filter((e) => [e.blockPath, e.charPath].some((p) => p === target || realpathOr(p) === real));
  } else {
    const m = /^(?:ublk[bc]?)?(\d+)$/.exec(target);
    found = m ? entries.filter((e) => e.devId === Number(m[1])) : [];
    if (found.length === 0) found = entries.filter((e) => e.name === target);
  }
  if (found.length === 0) throw notFound(target);
  if (found.length > 1) {
    const ids = found.map((e) => e.blockPath).join(', ');
    throw new DmrError('E_AMBIGUOUS', `${JSON.stringify(target)} names more than one device (${ids}); use the path`);
  }
  return found[0] as RegistryEntry;
}

export const notFound = (target: string): DmrError =>
  new DmrError('E_NOT_FOUND', `no dmremap-ublk device ${JSON.stringify(target)}`);

/** Like resolveTarget, but null when nothing matches (an ambiguous target still throws). */
export function findTarget(entries: RegistryEntry[], target: string): RegistryEntry | null {
  try {
    return resolveTarget(entries, target);
  } catch (e) {
    if (e instanceof DmrError && e.code === 'E_NOT_FOUND') return null;
    throw e;
  }
}

function realpathOr(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}
