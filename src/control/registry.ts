// The registry: one small JSON file per device in the run directory (<devId>.json), so that `list`,
// `status` and `del <name>` can find devices and `add` can refuse a main or spare another daemon already uses.
// Version 2 entries also hold everything a successor needs to take the device over after its daemon died
// (ublk user recovery: `recover` needs only the device id). An entry whose daemon is gone is either
// quiesced (its kernel device still exists and was created with user recovery: the entry is its state and
// is kept) or gone (nothing to recover: removed, with its kernel device if any, by device/reap.ts).
//
// Upgrades (`restart` runs new code on an entry old code wrote, or the reverse): fields this version does not
// know are accepted and dropped, a policy key added since is filled from DEFAULT_POLICY. An entry that still
// will not parse is never skipped: readEntries reports it as invalid (with the reason), `list` shows it,
// `del` removes it, and the main and spare it names stay taken (add refuses to run while it cannot tell).
import fs from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import { DmrError, errorCodeOf } from '../errors.js';
import { registryPath } from '../paths.js';
import { policySettingsSchema } from '../config/schema.js';
import { DEFAULT_POLICY } from '../config/policy.js';
import { BUFFER_MODES } from '../device/config.js';

const backingRef = z.object({
  path: z.string(),
  /** Identity of the device or file: "b:<rdev>" for block devices, "f:<dev>:<ino>" for files. */
  identity: z.string(),
});

const entryFields = {
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
};

/** Entries written before recovery existed: readable (list, del), never recoverable. */
export const registryEntryV1Schema = z.object({ version: z.literal(1), ...entryFields });

/** The parameters a successor daemon serves the device with: exactly what the first daemon ran with. */
export const recoveryStateSchema = z.object({
  /** The kernel device was created with UBLK_F_USER_RECOVERY (and _REISSUE): it outlives its daemon. */
  userRecovery: z.boolean(),
  blockSize: z.union([z.literal(512), z.literal(4096)]),
  queues: z.number().int().positive(),
  depth: z.number().int().positive(),
  maxIoBytes: z.number().int().positive(),
  /** The --buffers mode given, and what it resolved to on this kernel. */
  buffers: z.enum(BUFFER_MODES),
  zeroCopy: z.boolean(),
  /** Bytes exported (decimal: JSON has no 64-bit integers). */
  sizeBytes: z.string().regex(/^\d+$/),
  spareOffset: z.number().int().nonnegative().nullable(),
  spareSize: z.number().int().positive().nullable(),
  /**
   * The resolved error-handling policy (config file and flags as they were at `add`). A key missing (the
   * entry was written before it existed) takes its default; keys this version does not know are dropped.
   */
  policy: z.object(policySettingsSchema.shape).transform((p) => ({ ...DEFAULT_POLICY, ...p })),
  /**
   * Which of those were given as flags (`add`'s, or a record's), the rest coming from the config file: what
   * `enable` records. Absent in entries written before it existed: then no policy flags are recorded.
   */
  policyGiven: z.object(policySettingsSchema.shape).optional(),
});
export type RecoveryState = z.infer<typeof recoveryStateSchema>;

/** Set when the device was left quiesced on purpose (a detach, or a supervisor that gave up); null otherwise. */
export const quiescedSchema = z.object({ since: z.string(), reason: z.string() }).nullable();

export const registryEntryV2Schema = z.object({
  version: z.literal(2),
  ...entryFields,
  recovery: recoveryStateSchema,
  quiesced: quiescedSchema,
});

export const registryEntrySchema = z.discriminatedUnion('version', [registryEntryV1Schema, registryEntryV2Schema]);
export type RegistryEntry = z.infer<typeof registryEntrySchema>;
export type RegistryEntryV2 = z.infer<typeof registryEntryV2Schema>;

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

/**
 * Writes the entry atomically (temp file + rename), mode 0640: the run directory decides who reads it (its
 * owner only, or also its control group: paths.ts ensureRunDir), and its setgid bit gives the file its group.
 */
export function writeEntry(dir: string, entry: RegistryEntry): void {
  const file = registryPath(dir, entry.devId);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, `${JSON.stringify(entry, null, 2)}\n`, { mode: 0o640 });
    // The mode is filtered by the umask (a 027 one would leave 0640, a 077 one 0600): set it exactly.
    fs.chmodSync(tmp, 0o640);
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
  if (entry === null || entry.version !== 2 || isAlive(entry)) return false;
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

/** The entry of `devId`, or null when there is none or it is not a valid entry. */
export function readEntryOf(dir: string, devId: number): RegistryEntry | null {
  return readEntry(registryPath(dir, devId));
}

function readEntry(file: string): RegistryEntry | null {
  const r = parseEntryFile(file);
  return r !== null && 'entry' in r ? r.entry : null;
}

/**
 * A registry file this version cannot parse, with what could be read of it: the main and spare it names
 * (null when not even those are readable) and its daemon's pid.
 */
export interface InvalidEntry {
  devId: number;
  file: string;
  /** Why it does not parse: "not JSON", or the first field that breaks the schema. */
  reason: string;
  main: BackingRef | null;
  spare: BackingRef | null;
  name: string | null;
  blockPath: string | null;
  pid: number | null;
  pidStart: string | null;
  socket: string | null;
}
export type BackingRef = z.infer<typeof backingRef>;

/** The parsed entry in `file`, or why it does not parse; null when the file cannot be read (it is gone). */
export function parseEntryFile(file: string): { entry: RegistryEntry } | { invalid: InvalidEntry } | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const devId = Number(/(\d+)\.json$/.exec(file)?.[1] ?? -1);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { invalid: invalidEntry(devId, file, 'not JSON', undefined) };
  }
  const parsed = registryEntrySchema.safeParse(raw);
  if (parsed.success) return { entry: parsed.data };
  const issue = parsed.error.issues[0];
  const where = issue === undefined || issue.path.length === 0 ? '' : `${issue.path.map(String).join('.')}: `;
  return { invalid: invalidEntry(devId, file, `${where}${issue?.message ?? 'invalid'}`, raw) };
}

function invalidEntry(devId: number, file: string, reason: string, raw: unknown): InvalidEntry {
  const o = typeof raw === 'object' && raw !== null ? (raw as Record<string, unknown>) : {};
  const ref = (v: unknown): BackingRef | null => {
    const r = backingRef.safeParse(v);
    return r.success ? r.data : null;
  };
  const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
  const pid = z.number().int().positive().safeParse(o.pid);
  return {
    devId,
    file,
    reason,
    main: ref(o.main),
    spare: ref(o.spare),
    name: str(o.name),
    blockPath: str(o.blockPath),
    pid: pid.success ? pid.data : null,
    pidStart: str(o.pidStart),
    socket: str(o.socket),
  };
}

/**
 * live: the daemon runs. quiesced: the daemon is gone but its kernel device remains and can be taken over
 * (`recover`): a version 2 entry of a device created with user recovery whose /dev/ublkcN exists. gone:
 * the daemon is gone and there is nothing to recover (the device is gone, or was created without recovery).
 */
export type EntryState = 'live' | 'quiesced' | 'gone';

export function entryState(e: RegistryEntry): EntryState {
  if (isAlive(e)) return 'live';
  if (e.version === 2 && e.recovery.userRecovery && fs.existsSync(e.charPath)) return 'quiesced';
  return 'gone';
}

export interface Entries {
  /** Entries whose daemon is running, sorted by device id. */
  live: RegistryEntry[];
  /** Entries whose daemon is gone (quiesced and gone together), sorted by device id. */
  stale: RegistryEntry[];
  /** Stale entries whose kernel device waits for a successor (`recover`): never reaped. */
  quiesced: RegistryEntryV2[];
  /** Stale entries with nothing to recover: device/reap.ts removes them (and their kernel device, if any). */
  gone: RegistryEntry[];
  /** Files this version cannot parse (written by another version, or damaged), sorted by device id. */
  invalid: InvalidEntry[];
}

/** Reads every registry entry. Changes nothing. */
export function readEntries(dir: string): Entries {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    if (errorCodeOf(e) === 'ENOENT') return { live: [], stale: [], quiesced: [], gone: [], invalid: [] };
    throw new DmrError('E_RUN_DIR', `cannot read run directory ${dir}: ${errorCodeOf(e) ?? String(e)}`, { cause: e });
  }
  const out: Entries = { live: [], stale: [], quiesced: [], gone: [], invalid: [] };
  for (const n of names.sort()) {
    if (!/^\d+\.json$/.test(n)) continue;
    const r = parseEntryFile(path.join(dir, n));
    if (r === null) continue;
    if ('invalid' in r) {
      out.invalid.push(r.invalid);
      continue;
    }
    const { entry } = r;
    const state = entryState(entry);
    if (state === 'live') {
      out.live.push(entry);
      continue;
    }
    out.stale.push(entry);
    if (state === 'quiesced' && entry.version === 2) out.quiesced.push(entry);
    else out.gone.push(entry);
  }
  for (const list of [out.live, out.stale, out.quiesced, out.gone, out.invalid]) list.sort((a, b) => a.devId - b.devId);
  return out;
}

/** What `add` checks a new main, spare and name against. */
export type Occupant = Pick<RegistryEntry, 'devId' | 'name' | 'blockPath' | 'main' | 'spare'>;

/**
 * Entries whose main and spare nobody else may take: running devices, quiesced ones (waiting for
 * `recover`) and invalid ones (nothing says their device is gone). An invalid entry that does not even
 * say which main and spare it holds makes this throw (E_STATE): nothing could be safely added.
 */
export function occupied(entries: Entries): Occupant[] {
  const invalid: Occupant[] = entries.invalid.map((e) => {
    if (e.main === null || e.spare === null) {
      throw new DmrError('E_STATE', `the state file ${e.file} of device ${e.devId} cannot be read (${e.reason}), so its main and spare are unknown; remove it with: dmremap-ublk del ${e.devId}`);
    }
    return { devId: e.devId, name: e.name, blockPath: e.blockPath ?? `device ${e.devId}`, main: e.main, spare: e.spare };
  });
  return [...entries.live, ...entries.quiesced, ...invalid].sort((a, b) => a.devId - b.devId);
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

/** The invalid entry `target` names by device id (N, ublkbN, /dev/ublkbN, /dev/ublkcN), block path or name. */
export function findInvalidTarget(invalid: InvalidEntry[], target: string): InvalidEntry | null {
  const m = /^(?:\/dev\/ublk[bc]|ublk[bc]?)?(\d+)$/.exec(target);
  return (
    invalid.find((e) => (m !== null && e.devId === Number(m[1])) || (e.blockPath !== null && e.blockPath === target)) ??
    invalid.find((e) => e.name !== null && e.name === target) ??
    null
  );
}

/**
 * A command that needs the daemon of a device whose registry file does not parse: which file, why, and what
 * to do (its daemon, if it still runs, is another version's; else `del` removes the device).
 */
export function invalidEntryError(e: InvalidEntry): DmrError {
  const alive = e.pid !== null && isAlive({ pid: e.pid, pidStart: e.pidStart });
  const todo = alive
    ? `its daemon (pid ${e.pid}) runs another version: use that version's dmremap-ublk`
    : `"dmremap-ublk del ${e.devId}" removes the device (its remaps stay on the spare)`;
  return new DmrError('E_STATE', `the state file ${e.file} of device ${e.devId} is not valid (${e.reason}); ${todo}`);
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
