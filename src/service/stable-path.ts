// Stable paths for a recorded device's main and spare: /dev/sdb may be another disk after the next boot, a
// /dev/disk/by-id link names the same disk for its whole life. A block device is named by the first link
// under /dev/disk that points at it, looked for in by-id, then by-path, by-uuid, by-partuuid (udev's
// directories; DMREMAP_DISK_DIR overrides /dev/disk for tests). None found: the path as given, said so.
// A regular file keeps its absolute path (symlinks resolved).
import fs from 'node:fs';
import path from 'node:path';
import { DmrError, errorCodeOf } from '../errors.js';
import { mainIdentitySource } from '../device/fingerprint.js';

export const DEFAULT_DISK_DIR = '/dev/disk';
/** The link directories under /dev/disk, best first: a by-id name is the disk's own (model and serial, WWN). */
export const STABLE_KINDS = ['by-id', 'by-path', 'by-uuid', 'by-partuuid'] as const;
export type StableKind = (typeof STABLE_KINDS)[number];
/** How a recorded path was chosen: one of the link kinds, a regular file's path, or the path given (no link found). */
export type PathKind = StableKind | 'file' | 'as-given';

export function diskDir(env: NodeJS.ProcessEnv = process.env): string {
  const d = env.DMREMAP_DISK_DIR;
  return d !== undefined && d !== '' ? path.resolve(d) : DEFAULT_DISK_DIR;
}

export interface StablePath {
  /** The path to record. */
  path: string;
  kind: PathKind;
  /** The path the user gave (absolute). */
  given: string;
  /**
   * What identifies the disk or file whatever its name (device/fingerprint.ts: a sysfs serial, WWID, dm or
   * md uuid, a loop device's file; a regular file's real path), or null when there is nothing stable.
   */
  identity: string | null;
}

/** The identity `up` compares: the fingerprint source when it is stable, null when it is only a /dev path. */
export function stableIdentity(p: string): string | null {
  const src = mainIdentitySource(p);
  return src.kind === 'path' ? null : src.text;
}

/** What tells a block device from a file: fs.Stats' own test, replaced by tests that build a fake /dev tree. */
export type IsBlock = (st: fs.Stats) => boolean;
const isBlockDevice: IsBlock = (st) => st.isBlockDevice();

/** Resolves `given` (a block device or a regular file) to the path to record. E_DEVICE_MISSING when it is not there. */
export function stablePath(given: string, dir: string, isBlock: IsBlock = isBlockDevice): StablePath {
  const abs = path.resolve(given);
  let st: fs.Stats;
  try {
    st = fs.statSync(abs);
  } catch (e) {
    throw new DmrError('E_DEVICE_MISSING', `${abs} does not exist (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  }
  if (!isBlock(st)) {
    if (!st.isFile()) throw new DmrError('E_DEVICE_INVALID', `${abs} is neither a block device nor a regular file`);
    return { path: fs.realpathSync(abs), kind: 'file', given: abs, identity: stableIdentity(abs) };
  }
  const real = fs.realpathSync(abs);
  for (const kind of STABLE_KINDS) {
    const link = linkTo(path.join(dir, kind), real, st.rdev, isBlock);
    if (link !== null) return { path: link, kind, given: abs, identity: stableIdentity(abs) };
  }
  return { path: abs, kind: 'as-given', given: abs, identity: stableIdentity(abs) };
}

/**
 * The first link (sorted by name) in `sub` that resolves to the block device `real` (rdev `rdev`), or null.
 * Links whose names udev makes from the partition number of a whole disk's link ("...-part1") are taken as
 * they come: they point at the partition itself.
 */
function linkTo(sub: string, real: string, rdev: number, isBlock: IsBlock): string | null {
  let names: string[];
  try {
    names = fs.readdirSync(sub).sort();
  } catch {
    return null;
  }
  for (const n of names) {
    const p = path.join(sub, n);
    try {
      if (fs.realpathSync(p) !== real) continue;
      const st = fs.statSync(p);
      if (isBlock(st) && st.rdev === rdev) return p;
    } catch {
      // A dangling link: not this device.
    }
  }
  return null;
}
