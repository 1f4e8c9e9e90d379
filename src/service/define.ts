// A device's definition as a record (records.ts) and back: from add's flags (`add --persist`), from a running
// or quiesced device's registry entry (`enable`), and the add flags `up` starts a recorded device with. Two
// records never share a name, a main or a spare (saveRecord refuses, nothing written).
import fs from 'node:fs';
import path from 'node:path';
import { DmrError } from '../errors.js';
import type { RegistryEntry } from '../control/registry.js';
import type { AddFlags } from '../cli/schemas.js';
import { listRecords, readRecord, writeRecord, type DeviceRecord, type RecordedBacking } from './records.js';
import { stablePath, stableIdentity, type IsBlock } from './stable-path.js';
import { NOT_RECOVERED, otherTableProblem, readTableIdOf, readTableUuidOf } from '../device/table-uuid.js';

/**
 * The recorded main or spare. A main with no stable identity keeps the path given: its spare's metadata
 * fingerprints such a main by that very path (device/fingerprint.ts), so another name would read as another disk.
 */
function backing(p: string, disk: string, role: 'main' | 'spare', isBlock?: IsBlock): RecordedBacking {
  const s = stablePath(p, disk, isBlock);
  if (role === 'main' && s.identity === null) return { path: s.given, kind: 'as-given', given: s.given, identity: null };
  return { path: s.path, kind: s.kind, given: s.given, identity: s.identity };
}

/** The record `add --persist` writes for these flags (the policy: the flags given; the config file fills the rest at `up`). */
export function recordFromFlags(flags: AddFlags, disk: string, now: Date = new Date(), isBlock?: IsBlock): DeviceRecord {
  const d = flags.device;
  if (d.name === null) throw new DmrError('E_USAGE', 'add --persist needs --name (the record and /dev/dmremap/<name> are named by it)');
  return {
    version: 1,
    name: d.name,
    main: backing(d.mainPath, disk, 'main', isBlock),
    spare: backing(d.sparePath, disk, 'spare', isBlock),
    blockSize: d.blockSize ?? null,
    queues: d.queues ?? null,
    depth: d.depth,
    maxIoKib: d.maxIoBytes / 1024,
    buffers: d.buffers,
    spareOffset: d.spareOffset ?? null,
    spareSize: d.spareSize ?? null,
    policy: flags.policyFlags,
    recordedAt: now.toISOString(),
  };
}

/** The record `enable` writes for a device that runs (or waits quiesced): what it was started with (its policy: the flags given). */
export function recordFromEntry(e: RegistryEntry, disk: string, now: Date = new Date(), isBlock?: IsBlock): DeviceRecord {
  if (e.name === null) {
    throw new DmrError('E_USAGE', `${e.blockPath} has no name: only a device added with --name can be recorded (del it and add it again with --name and --persist)`);
  }
  if (e.version !== 2) throw new DmrError('E_STATE', `${e.blockPath} was started by an older version that did not save its parameters: restart it first`);
  const r = e.recovery;
  return {
    version: 1,
    name: e.name,
    main: backing(e.main.path, disk, 'main', isBlock),
    spare: backing(e.spare.path, disk, 'spare', isBlock),
    blockSize: r.blockSize,
    queues: r.queues,
    depth: r.depth,
    maxIoKib: r.maxIoBytes / 1024,
    buffers: r.buffers,
    spareOffset: r.spareOffset,
    spareSize: r.spareSize,
    // tableUuid: the caller's (tableUuidFor: the table the running daemon serves, not a read by path).
    // The flags it was given, not the config file's values of the day (a later change to the file must
    // still apply after `up`, as for `add --persist`); an entry from before they were kept: none.
    policy: r.policyGiven ?? {},
    recordedAt: now.toISOString(),
  };
}

/** Where a record's table UUID came from: the running daemon, a plain read of the spare, the record kept. */
export type TableUuidFrom = 'daemon' | 'spare' | 'record';

/** The table a running device's daemon serves (its status's pairId), or why none answered. */
export type ServedTable = { uuid: string } | { none: string };

export interface TableUuidChoice {
  tableUuid: string | null;
  from: TableUuidFrom | null;
  /** What was decided that the user should know (a recorded UUID replaced): one line each. */
  notes: string[];
  /** What may make `up` refuse the device, or what was not checked: one line each. */
  warnings: string[];
}

const holding = (p: string, t: string | null): string => (t === null ? `the spare at ${p} holds no remap table that can be read` : `the spare at ${p} holds remap table ${t}`);

/**
 * The table UUID a record of `name` names (enable, add --persist): the table its running daemon serves
 * (`served`), never whatever disk the spare's path names now. A recorded UUID (`recorded`) is never dropped:
 * it is kept unless a running daemon serves another table, which then replaces it (a note says so). Only when
 * no daemon answers (a quiesced device) is the spare at `sparePath` (the path `up` reads) read, and a warning
 * says so. With a daemon, the spare at `sparePath` is read too, to warn when `up` would find another table
 * there (the path now names another disk).
 */
export function tableUuidFor(
  name: string,
  served: ServedTable,
  recorded: string | undefined,
  sparePath: string,
  spareOffset: number | null | undefined,
  read: (p: string, offset: number) => string | null = readTableUuidOf,
): TableUuidChoice {
  const atPath = read(sparePath, spareOffset ?? 0);
  if ('uuid' in served) {
    const notes = recorded !== undefined && recorded !== served.uuid ? [`the record named remap table ${recorded}; the running daemon serves table ${served.uuid}: recorded that one`] : [];
    const warnings =
      atPath === served.uuid ? [] : [`${holding(sparePath, atPath)}, not table ${served.uuid} the daemon serves and the record names: \`up\` refuses it until that path leads to the served spare again`];
    return { tableUuid: served.uuid, from: 'daemon', notes, warnings };
  }
  const none = `no daemon answers for it (${served.none})`;
  if (recorded !== undefined) {
    const seen = atPath === recorded ? `${holding(sparePath, atPath)} too` : `${holding(sparePath, atPath)}; only a running daemon's table replaces a recorded one`;
    return { tableUuid: recorded, from: 'record', notes: [], warnings: [`${none}: kept the recorded remap table ${recorded} (${seen})`] };
  }
  if (atPath !== null) {
    return { tableUuid: atPath, from: 'spare', notes: [], warnings: [`${none}: recorded remap table ${atPath} as read from the spare at ${sparePath}, not as a daemon serves it (\`dmremap-ublk enable ${name}\` once it runs checks it)`] };
  }
  return {
    tableUuid: null,
    from: null,
    notes: [],
    warnings: [`${none}: cannot read the remap table's UUID on the spare ${sparePath}: recorded without it (\`dmremap-ublk enable ${name}\` once it runs records it)`],
  };
}

const sameDisk = (a: RecordedBacking, b: RecordedBacking): boolean =>
  a.path === b.path || a.given === b.given || (a.identity !== null && a.identity === b.identity);

/**
 * Writes `record` unless another record holds its main or spare, or a record of the same name names other
 * disks (E_NAME_TAKEN; `disable` it first). Rewriting a record of the same name and disks is allowed (idempotent).
 */
export function saveRecord(dir: string, record: DeviceRecord): string {
  checkRecord(dir, record);
  return writeRecord(dir, record);
}

/** saveRecord's refusals, without writing (add --persist checks before it starts anything). */
export function checkRecord(dir: string, record: DeviceRecord): void {
  const old = readRecord(dir, record.name);
  if (old !== null && (!sameDisk(old.main, record.main) || !sameDisk(old.spare, record.spare))) {
    throw new DmrError('E_NAME_TAKEN', `a device named ${JSON.stringify(record.name)} is already recorded with main ${old.main.path} and spare ${old.spare.path} (disable it first)`);
  }
  for (const other of listRecords(dir).valid) {
    if (other.name === record.name) continue;
    for (const mine of [record.main, record.spare]) {
      if (sameDisk(mine, other.main) || sameDisk(mine, other.spare)) {
        throw new DmrError('E_NAME_TAKEN', `${mine.path} is already recorded for device ${JSON.stringify(other.name)} (disable it first)`);
      }
    }
  }
}

/**
 * add's flags for bringing up `record` (never --force-format, always --require-table: the spare must still hold
 * this main's table; and, when the record names it, that very table: --table-uuid).
 */
export function flagsFromRecord(record: DeviceRecord, foreground: boolean): AddFlags {
  return {
    device: {
      mainPath: record.main.path,
      sparePath: record.spare.path,
      name: record.name,
      queues: record.queues ?? undefined,
      depth: record.depth,
      blockSize: record.blockSize ?? undefined,
      maxIoBytes: record.maxIoKib * 1024,
      buffers: record.buffers,
      spareOffset: record.spareOffset ?? undefined,
      spareSize: record.spareSize ?? undefined,
      forceFormat: false,
      // The remaps live on the spare: a blank disk in its place is refused, never formatted.
      requireTable: true,
      ...(record.tableUuid !== undefined ? { tableUuid: record.tableUuid } : {}),
      policyGiven: record.policy,
    },
    policyFlags: record.policy,
    foreground,
    persist: false,
    logFile: null,
    json: false,
  };
}

/** Whether the disk at `p` (a path a device was started with) is the recorded one `b`: sameDisk's check. */
function isRecordedDisk(b: RecordedBacking, p: string): boolean {
  if (p === b.path || p === b.given) return true;
  try {
    if (fs.realpathSync(p) === fs.realpathSync(b.path)) return true;
  } catch {
    // One of them is gone: only the identity can still tell.
  }
  if (b.identity === null) return false;
  try {
    return stableIdentity(p) === b.identity;
  } catch {
    return false;
  }
}

/**
 * Whether the running (or quiesced) device `e`, found by `record`'s name, is the recorded device: the same
 * main and spare. Null when it is; otherwise the refusal (E_NAME_TAKEN) naming both, for `up` and `down`,
 * which never take another device that merely shares the name for the recorded one.
 */
export function notRecordedDevice(record: DeviceRecord, e: Pick<RegistryEntry, 'main' | 'spare' | 'blockPath'>): DmrError | null {
  if (isRecordedDisk(record.main, e.main.path) && isRecordedDisk(record.spare, e.spare.path)) return null;
  return new DmrError(
    'E_NAME_TAKEN',
    `another device named ${JSON.stringify(record.name)} runs (${e.blockPath}: main ${e.main.path}, spare ${e.spare.path}), not the recorded one (main ${record.main.path}, spare ${record.spare.path}): left alone`,
  );
}

/**
 * Why `record` cannot be brought up here and now, or null: its main or spare is missing (E_DEVICE_MISSING),
 * the disk at its path is not the one recorded (E_STATE: a by-path name that moved to another disk), or the
 * spare holds another remap table than the recorded one (E_SPARE_OTHER_TABLE: read before anything is
 * claimed or started). The spare's own metadata is checked again when the daemon opens it (it names its
 * main's fingerprint, and the daemon compares the table's UUID again on the claimed spare).
 */
export function disksProblem(record: DeviceRecord): DmrError | null {
  for (const [role, b] of [['main', record.main], ['spare', record.spare]] as const) {
    let now: string | null;
    try {
      now = stableIdentity(b.path);
    } catch {
      return new DmrError('E_DEVICE_MISSING', `${role} ${b.path} is missing`);
    }
    if (b.identity !== null && now !== b.identity) {
      return new DmrError('E_STATE', `${role} ${b.path} is not the disk recorded (recorded ${b.identity}, now ${now ?? path.resolve(b.path)}): not brought up`);
    }
  }
  if (record.tableUuid !== undefined) {
    // No table, or one that cannot be read: the daemon's own checks say why (a blank spare is refused there).
    // Another main's table: the daemon's store refuses it (E_SPARE_FOREIGN), saying so.
    const table = readTableIdOf(record.spare.path, record.spareOffset ?? 0);
    const problem = otherTableProblem(table, record.main.path, record.spare.path, record.tableUuid, `device ${record.name}`);
    if (problem !== null) return problem;
  }
  return null;
}

/**
 * Why the quiesced device `e` (the recorded one: notRecordedDevice said so) is not to be recovered for
 * `record`, or null: its spare now holds another table of its main than the record names (E_SPARE_OTHER_TABLE:
 * an old copy of the spare put in its place while the device waited). The same plain read and compare as
 * disksProblem, of the spare and region the recovery would open, before anything is claimed: refused, the
 * device stays quiesced. No table, or another main's: the recovery's own checks refuse it.
 */
export function quiescedTableProblem(record: DeviceRecord, e: RegistryEntry): DmrError | null {
  if (record.tableUuid === undefined) return null;
  // Only a version 2 entry can be quiesced (registry.ts entryState): the region it was started with.
  const table = readTableIdOf(e.spare.path, e.version === 2 ? (e.recovery.spareOffset ?? 0) : 0);
  return otherTableProblem(table, e.main.path, e.spare.path, record.tableUuid, `device ${record.name}`, NOT_RECOVERED);
}
