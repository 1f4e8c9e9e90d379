// The remap table's UUID: the 16 bytes a format writes into the spare's superblock (src/remap/format.ts), shown
// as the pair id (RemapStore.pairId). A device record keeps it (`add --persist`, `enable`: the table the daemon
// serves) so that `up` refuses a spare that holds a table of the same main from another copy: a clone of the
// spare disk taken before the spare was last formatted. It is read from the superblock alone (copy 0, else copy 1, as the store picks it),
// before anything is claimed (`up`, a plain read) and again on the claimed spare before the store opens it (the
// daemon, and add's precheck): a refusal writes nothing. Only a table of the same main (its fingerprint) is
// refused here: another main's is the store's to refuse (E_SPARE_FOREIGN), which says so.
import fs from 'node:fs';
import { DmrError } from '../errors.js';
import { decodeSuperblock } from '../remap/format.js';
import { mainIdentity } from './fingerprint.js';
import { SUPERBLOCK_SIZE } from '../remap/geometry.js';
import type { SpareIo } from '../remap/io.js';

/** A table UUID as text: lower-case hex in the 8-4-4-4-12 form (RemapStore.pairId's). */
export const TABLE_UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The 16 bytes of a UUID as RemapStore.pairId writes them. */
export function uuidText(b: Uint8Array): string {
  const h = Buffer.from(b).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** What the superblock says of the table: its UUID, and the main it was formatted for (size, fingerprint). */
export interface TableId {
  uuid: string;
  mainSize: bigint;
  fingerprint: Buffer;
}

/**
 * The table in the two superblock copies `sbs` (2 * SUPERBLOCK_SIZE bytes from the region's start): copy 0's if
 * it is whole, else copy 1's; null when neither is (a blank spare, or metadata the store refuses).
 */
export function tableIdIn(sbs: Buffer): TableId | null {
  for (const at of [0, SUPERBLOCK_SIZE]) {
    const copy = sbs.subarray(at, at + SUPERBLOCK_SIZE);
    if (copy.length < SUPERBLOCK_SIZE) return null;
    try {
      const d = decodeSuperblock(copy);
      if (d.ok) return { uuid: uuidText(d.value.uuid), mainSize: d.value.mainSize, fingerprint: d.value.fingerprint };
    } catch {
      // Ours, of a format version this program does not read: the store refuses it, with that reason.
      return null;
    }
  }
  return null;
}

/** The table of the spare region at `spareOffset`, read through the claimed spare (or any SpareIo). */
export async function readTableId(io: Pick<SpareIo, 'read' | 'size'>, spareOffset: number): Promise<TableId | null> {
  if (BigInt(spareOffset + 2 * SUPERBLOCK_SIZE) > io.size) return null;
  return tableIdIn(await io.read(spareOffset, 2 * SUPERBLOCK_SIZE));
}

/**
 * The table of the spare region at `spareOffset` of `path`, read without claiming it (a running daemon holds
 * it exclusively; a plain read-only open is still allowed): for `up` before it starts or recovers anything,
 * and for `enable` and `add --persist` to warn when the spare's path holds another table than the daemon
 * serves (or, with no daemon to ask, to record it). Null when there is none or it cannot be read.
 */
export function readTableIdOf(path: string, spareOffset: number): TableId | null {
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const buf = Buffer.alloc(2 * SUPERBLOCK_SIZE);
    let got = 0;
    while (got < buf.length) {
      const n = fs.readSync(fd, buf, got, buf.length - got, spareOffset + got);
      if (n === 0) break;
      got += n;
    }
    return got === buf.length ? tableIdIn(buf) : null;
  } catch {
    return null;
  } finally {
    fs.closeSync(fd);
  }
}

/** The UUID of the table on `path`'s spare region (readTableIdOf), or null. */
export const readTableUuidOf = (path: string, spareOffset: number): string | null => readTableIdOf(path, spareOffset)?.uuid ?? null;

/**
 * Whether `t` was formatted for the main at `mainPath` (its fingerprint, computed with the table's own main
 * size; the store compares the size itself). A table of another main is the store's to refuse (E_SPARE_FOREIGN).
 */
function ofMain(t: TableId, mainPath: string): boolean {
  try {
    return Buffer.from(mainIdentity(mainPath, t.mainSize).fingerprint).equals(t.fingerprint);
  } catch {
    return false;
  }
}

/** What a refusal left: nothing started (the default), or a quiesced device left waiting (`up` refusing to recover it). */
export const NOT_BROUGHT_UP = 'not brought up, nothing written';
export const NOT_RECOVERED = 'not recovered, nothing written: the device stays quiesced';

/**
 * The refusal of a spare whose table is not the recorded one: one line naming both UUIDs (E_SPARE_OTHER_TABLE).
 * `who` names the device ("device data"); `outcome` says what was left as it was.
 */
export function otherTableError(sparePath: string, found: string, expected: string, who: string, outcome: string = NOT_BROUGHT_UP): DmrError {
  return new DmrError(
    'E_SPARE_OTHER_TABLE',
    `the spare ${sparePath} holds remap table ${found}, not table ${expected} recorded for ${who} (an old copy of the spare, or one formatted again since?): ${outcome}`,
  );
}

/**
 * The refusal when table `t` (null: none) is one of `mainPath`'s other than `expected`; null when it is that
 * one, none, or another main's (the store's checks say why then).
 */
export function otherTableProblem(t: TableId | null, mainPath: string, sparePath: string, expected: string, who: string, outcome: string = NOT_BROUGHT_UP): DmrError | null {
  if (t === null || t.uuid === expected || !ofMain(t, mainPath)) return null;
  return otherTableError(sparePath, t.uuid, expected, who, outcome);
}
