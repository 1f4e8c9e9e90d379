// Device records: what `up` needs to bring a device back after a reboot, one JSON file per device in
// /etc/dmremap-ublk/devices.d/<name>.json (DMREMAP_DEVICES_DIR overrides the directory for tests). Written
// atomically (atomic-file.ts) by `add --persist` and `enable`, removed by `disable`. A file that does not
// parse is reported by name with the first problem (listRecords' `invalid`), never skipped in silence.
import fs from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import { writeFileAtomic } from '../atomic-file.js';
import { DmrError, errorCodeOf } from '../errors.js';
import { DEVICE_ID_LIKE_RE, DEVICE_NAME_RE, policySettingsSchema } from '../config/schema.js';
import { BUFFER_MODES, MAX_DEPTH, MAX_MAX_IO_KIB, MAX_QUEUES, MIN_MAX_IO_KIB } from '../device/config.js';
import { STABLE_KINDS } from './stable-path.js';
import { TABLE_UUID_RE } from '../device/table-uuid.js';

export const DEFAULT_DEVICES_DIR = '/etc/dmremap-ublk/devices.d';
/** A record is a few hundred bytes; anything this big is not one (a disk linked there by mistake). */
const MAX_RECORD_BYTES = 64 << 10;

export function devicesDir(env: NodeJS.ProcessEnv = process.env): string {
  const d = env.DMREMAP_DEVICES_DIR;
  return d !== undefined && d !== '' ? path.resolve(d) : DEFAULT_DEVICES_DIR;
}

/** A recorded device's name: add's --name rule (a letter first, then up to 63 of A-Z a-z 0-9 . _ -; not ublkN). */
export function isRecordName(name: string): boolean {
  return DEVICE_NAME_RE.test(name) && !DEVICE_ID_LIKE_RE.test(name);
}

export const recordNameSchema = z
  .string()
  .refine(isRecordName, 'a device name starts with a letter and holds at most 64 letters, digits, ".", "_" or "-" (and is not ublkN)');

const backingSchema = z.strictObject({
  /** The path `up` opens: a /dev/disk link, a regular file's path, or the path given (kind "as-given"). */
  path: z.string().startsWith('/', 'must be an absolute path'),
  kind: z.enum([...STABLE_KINDS, 'file', 'as-given']),
  /** The path given to add or enable, for the reader (by-path names can move; this is what it was). */
  given: z.string(),
  /** The disk's or file's identity (stable-path.ts stableIdentity), or null when it has none. */
  identity: z.string().nullable(),
});
export type RecordedBacking = z.infer<typeof backingSchema>;

export const deviceRecordSchema = z.strictObject({
  version: z.literal(1),
  name: recordNameSchema,
  main: backingSchema,
  spare: backingSchema,
  blockSize: z.union([z.literal(512), z.literal(4096)]).nullable(),
  queues: z.number().int().min(1).max(MAX_QUEUES).nullable(),
  depth: z.number().int().min(1).max(MAX_DEPTH),
  maxIoKib: z.number().int().min(MIN_MAX_IO_KIB).max(MAX_MAX_IO_KIB).multipleOf(4),
  buffers: z.enum(BUFFER_MODES),
  spareOffset: z.number().int().nonnegative().multipleOf(4096).nullable(),
  spareSize: z.number().int().positive().nullable(),
  /**
   * The UUID of the remap table on the spare when the record was written (device/table-uuid.ts): `up` refuses a
   * spare holding another table (E_SPARE_OTHER_TABLE). Absent in records written before it was kept (and when
   * it could not be read): `up` then checks the main's fingerprint only; `enable` again records it.
   */
  tableUuid: z.string().regex(TABLE_UUID_RE, 'is not a remap table UUID (8-4-4-4-12 lower-case hex)').optional(),
  /** The error-handling settings given (add's flags, or what a running device resolved); the rest comes from the config file. */
  policy: policySettingsSchema,
  recordedAt: z.string(),
});
export type DeviceRecord = z.infer<typeof deviceRecordSchema>;

export const recordPath = (dir: string, name: string): string => path.join(dir, `${name}.json`);

export interface InvalidRecord {
  file: string;
  reason: string;
}

export interface Records {
  valid: DeviceRecord[];
  invalid: InvalidRecord[];
}

/** Parses one record file's text; the reason names the first problem. */
export function parseRecord(file: string, text: string): { record: DeviceRecord } | { invalid: InvalidRecord } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return { invalid: { file, reason: `not valid JSON (${e instanceof Error ? e.message : String(e)})` } };
  }
  const r = deviceRecordSchema.safeParse(raw);
  if (!r.success) return { invalid: { file, reason: firstIssue(r.error) } };
  if (path.basename(file) !== `${r.data.name}.json`) {
    return { invalid: { file, reason: `names device ${JSON.stringify(r.data.name)}: its file must be ${r.data.name}.json` } };
  }
  return { record: r.data };
}

/** "main.path: must be an absolute path", or the message alone for the record itself. */
function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (issue === undefined) return 'invalid';
  const where = issue.path.length === 0 ? '' : `${issue.path.map(String).join('.')}: `;
  return `${where}${issue.message}`;
}

function readText(file: string): string {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new DmrError('E_RECORD', `cannot read ${file} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new DmrError('E_RECORD', `${file} is not a regular file`);
    if (st.size > MAX_RECORD_BYTES) throw new DmrError('E_RECORD', `${file} is ${st.size} bytes: not a device record`);
    return fs.readFileSync(fd, 'utf8');
  } finally {
    fs.closeSync(fd);
  }
}

/** Every record in `dir` (sorted by file name); a missing directory holds none. E_RECORD when it cannot be listed. */
export function listRecords(dir: string): Records {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    if (errorCodeOf(e) === 'ENOENT') return { valid: [], invalid: [] };
    throw new DmrError('E_RECORD', `cannot read ${dir} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  }
  const out: Records = { valid: [], invalid: [] };
  for (const n of names.sort()) {
    if (!n.endsWith('.json') || n.startsWith('.')) continue;
    const file = path.join(dir, n);
    let text: string;
    try {
      text = readText(file);
    } catch (e) {
      out.invalid.push({ file, reason: e instanceof Error ? e.message : String(e) });
      continue;
    }
    const r = parseRecord(file, text);
    if ('record' in r) out.valid.push(r.record);
    else out.invalid.push(r.invalid);
  }
  return out;
}

/** The record of `name`, or null when there is none; E_RECORD when its file does not parse. */
export function readRecord(dir: string, name: string): DeviceRecord | null {
  const file = recordPath(dir, name);
  if (!fs.existsSync(file)) return null;
  const r = parseRecord(file, readText(file));
  if ('invalid' in r) throw new DmrError('E_RECORD', `${r.invalid.file}: ${r.invalid.reason}`);
  return r.record;
}

/** Writes `record` as <dir>/<name>.json atomically (mode 0644: no secrets; the directory is made if missing). */
export function writeRecord(dir: string, record: DeviceRecord): string {
  const checked = deviceRecordSchema.parse(record);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw new DmrError('E_RECORD', `cannot create ${dir} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  }
  const file = recordPath(dir, checked.name);
  writeFileAtomic(file, `${JSON.stringify(checked, null, 2)}\n`, { mode: 0o644, errorCode: 'E_RECORD' });
  return file;
}

/** Removes the record of `name`; false when there was none. */
export function removeRecord(dir: string, name: string): boolean {
  const file = recordPath(dir, name);
  try {
    fs.unlinkSync(file);
    return true;
  } catch (e) {
    if (errorCodeOf(e) === 'ENOENT') return false;
    throw new DmrError('E_RECORD', `cannot remove ${file} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  }
}
