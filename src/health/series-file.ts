// Where a device's health series is kept between daemons: <state dir>/<pairId>.health, replaced atomically
// (atomic-file.ts) at each save. A text file: one header line, then the series as JSON.
//
//   DMRHEALTH <version> <crc32c>\n            version: decimal; crc32c: 8 hex digits, of the JSON bytes
//   {"pairId":"<uuid>","series":{...}}        series: series.ts seriesDataSchema
//
// Loading checks, in this order: size, header, version (a newer one is refused: this program cannot know what
// it holds), checksum, JSON, schema, the series' own rules, and that the file is the pair's. Any failure is a
// HealthRecordError (E_HEALTH_RECORD) with one line naming the file and the problem. The series is never reset
// behind the user's back: the caller reports the error, and `health <dev> reset` is how a user starts over.
import path from 'node:path';
import * as z from 'zod';
import { readStateFile, writeStateFile } from '../atomic-file.js';
import { DmrError } from '../errors.js';
import { crc32c } from '../remap/crc32c.js';
import { HealthSeries, seriesDataSchema } from './series.js';

export const HEALTH_FILE_MAGIC = 'DMRHEALTH';
export const HEALTH_FILE_VERSION = 1;
/** No health file is larger (a larger one is refused unread); a year of busy data takes well under a megabyte. */
export const MAX_HEALTH_FILE_BYTES = 4 * 1024 * 1024;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const HEADER_RE = /^DMRHEALTH (\d{1,9}) ([0-9a-f]{8})$/;

/** Why a health file cannot be used. */
export type HealthRecordProblem = 'corrupt' | 'version' | 'device';

/** A persisted health series that cannot be used (E_HEALTH_RECORD); `problem` says why. */
export class HealthRecordError extends DmrError {
  readonly problem: HealthRecordProblem;

  constructor(problem: HealthRecordProblem, message: string) {
    super('E_HEALTH_RECORD', message);
    this.name = 'HealthRecordError';
    this.problem = problem;
  }
}

const fileBodySchema = z.strictObject({ pairId: z.string().regex(UUID_RE, 'is not a UUID'), series: seriesDataSchema });

function checkPairId(pairId: string): void {
  if (!UUID_RE.test(pairId)) throw new DmrError('E_INTERNAL', `pair id ${JSON.stringify(pairId)} is not a UUID`);
}

/** The file of the pair `pairId` (a UUID as RemapStore.pairId gives it). */
export function healthFilePath(dir: string, pairId: string): string {
  checkPairId(pairId);
  return path.join(dir, `${pairId}.health`);
}

export function encodeHealthFile(pairId: string, series: HealthSeries): Buffer {
  checkPairId(pairId);
  const body = Buffer.from(JSON.stringify({ pairId, series: series.toData() }), 'utf8');
  const crc = crc32c(body).toString(16).padStart(8, '0');
  return Buffer.concat([Buffer.from(`${HEALTH_FILE_MAGIC} ${HEALTH_FILE_VERSION} ${crc}\n`, 'latin1'), body]);
}

/** The series in `buf` (read from `file`, which errors name), checked to be of pair `pairId`. */
export function decodeHealthFile(buf: Uint8Array, pairId: string, file: string): HealthSeries {
  checkPairId(pairId);
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const corrupt = (why: string): HealthRecordError =>
    new HealthRecordError('corrupt', `health file ${file} is corrupt (${why}); \`health <device> reset\` starts a new one`);
  if (b.length > MAX_HEALTH_FILE_BYTES) throw corrupt(`${b.length} bytes, more than a health file can be`);
  const nl = b.indexOf(0x0a);
  if (nl < 0 || nl > 64) throw corrupt('no header line');
  const header = b.subarray(0, nl).toString('latin1');
  if (!header.startsWith(`${HEALTH_FILE_MAGIC} `)) throw corrupt('not a health file');
  const m = HEADER_RE.exec(header);
  if (m === null) throw corrupt(`bad header ${JSON.stringify(header)}`);
  const version = Number(m[1]);
  if (version > HEALTH_FILE_VERSION) {
    throw new HealthRecordError('version', `health file ${file} is format version ${version}, newer than this program reads (${HEALTH_FILE_VERSION}): run the dmremap-ublk that wrote it`);
  }
  if (version !== HEALTH_FILE_VERSION) throw corrupt(`format version ${version} was never written`);
  const body = b.subarray(nl + 1);
  if (crc32c(body) !== parseInt(m[2]!, 16)) throw corrupt('checksum mismatch');
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw corrupt(`not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  const r = fileBodySchema.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0];
    throw corrupt(i === undefined ? 'invalid' : `${i.path.join('.') || 'body'}: ${i.message}`);
  }
  let series: HealthSeries;
  try {
    series = HealthSeries.fromData(r.data.series);
  } catch (e) {
    throw corrupt(e instanceof Error ? e.message : String(e));
  }
  if (r.data.pairId !== pairId) {
    throw new HealthRecordError('device', `health file ${file} belongs to main/spare pair ${r.data.pairId}, not ${pairId}`);
  }
  return series;
}

/** Saves the series of `pairId` in `dir` (created, mode 0700, if missing), atomically. E_STATE when it cannot. */
export function saveHealth(dir: string, pairId: string, series: HealthSeries): void {
  writeStateFile(dir, healthFilePath(dir, pairId), encodeHealthFile(pairId, series));
}

/**
 * The saved series of `pairId`, or null when there is none (a new device: the caller creates one). E_STATE
 * when the file cannot be read; a HealthRecordError (E_HEALTH_RECORD) when what it holds cannot be used.
 */
export function loadHealth(dir: string, pairId: string): HealthSeries | null {
  const file = healthFilePath(dir, pairId);
  const buf = readStateFile(
    file,
    MAX_HEALTH_FILE_BYTES,
    (size) => new HealthRecordError('corrupt', `health file ${file} is corrupt (${size} bytes, more than a health file can be); \`health <device> reset\` starts a new one`),
  );
  if (buf === null) return null;
  return decodeHealthFile(buf, pairId, file);
}
