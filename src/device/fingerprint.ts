// The main device's identity as the spare's superblock records it (docs/FORMAT.md): something that stays
// the same for the device's whole life and differs between devices, never its contents.
//
// Block device: sha256 over its size and the first stable hardware/software identifier sysfs has for it —
// device/wwid, device/serial or serial (the disk's World Wide ID or serial number), dm/uuid (device-mapper),
// md/uuid (MD RAID), loop/backing_file (a loop device's file); a partition uses its disk's identifier plus
// its partition number and start sector. Only when none exists: the device's /dev path as given (made
// absolute). major:minor is never used: it can change at every boot.
// Regular file: sha256 over its size and its absolute path with symlinks resolved.
import fs from 'node:fs';
import path from 'node:path';
import { mainFingerprint, type MainIdentity } from '../remap/index.js';
import { sysfsBlockPath } from './dev-t.js';

const ID_FILES = ['device/wwid', 'device/serial', 'serial', 'dm/uuid', 'md/uuid', 'loop/backing_file'] as const;

function readTrimmed(p: string): string | null {
  try {
    const s = fs.readFileSync(p, 'utf8').trim();
    return s === '' ? null : s;
  } catch {
    return null;
  }
}

/** The first stable identifier sysfs holds for the block device at `sysDir`, as "<file>=<value>". */
function sysfsId(sysDir: string): string | null {
  for (const f of ID_FILES) {
    const v = readTrimmed(path.join(sysDir, f));
    if (v !== null) return `${f}=${v}`;
  }
  return null;
}

/** What the fingerprint of a main device is computed from (for tests and the log). */
export function mainIdentitySource(mainPath: string): { kind: 'sysfs' | 'path' | 'file'; text: string } {
  const st = fs.statSync(mainPath, { bigint: true });
  if (!st.isBlockDevice()) return { kind: 'file', text: `file:${fs.realpathSync(mainPath)}` };
  let sysDir: string | null = null;
  try {
    sysDir = fs.realpathSync(sysfsBlockPath(st.rdev));
  } catch {
    sysDir = null;
  }
  if (sysDir !== null) {
    const own = sysfsId(sysDir);
    if (own !== null) return { kind: 'sysfs', text: own };
    const part = readTrimmed(path.join(sysDir, 'partition'));
    if (part !== null) {
      const disk = sysfsId(path.dirname(sysDir));
      const start = readTrimmed(path.join(sysDir, 'start')) ?? '?';
      if (disk !== null) return { kind: 'sysfs', text: `${disk};partition=${part};start=${start}` };
    }
  }
  return { kind: 'path', text: `dev:${path.resolve(mainPath)}` };
}

/** The MainIdentity of the main device at `mainPath` whose size is `size` bytes. */
export function mainIdentity(mainPath: string, size: bigint): MainIdentity & { source: string } {
  const src = mainIdentitySource(mainPath);
  return { size, fingerprint: mainFingerprint('dmremap-ublk main v1', size, src.text), source: src.text };
}
