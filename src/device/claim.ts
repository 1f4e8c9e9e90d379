// Claiming main and spare: one exclusive open per device (O_EXCL on a block device, flock on a regular
// file) made before anything reads or writes it, kept for the daemon's life and shared by the data path
// and the remap metadata I/O. A device that is mounted, held by another device (device-mapper, md, bcache:
// /sys/dev/block/M:m/holders), in use as swap, or that another program holds exclusively is refused; for a
// whole disk, the same for each of its partitions. Nothing overrides that.
import fs from 'node:fs';
import path from 'node:path';
import { DmrError, backingDeviceError, errorCodeOf } from '../errors.js';
import type { BackingClaim, BackingInfo, NativeAddon } from '../native.js';
import { majorOf, minorOf } from './dev-t.js';

/** What identify() (validate.ts) found at a path. */
export interface ClaimTarget {
  path: string;
  identity: string;
  /** /sys/dev/block/<maj:min> resolved, for a block device. */
  sysfs: string | null;
}

export type Role = 'main' | 'spare';

/** A claimed backing device: its geometry, its identity and the claimed fd. */
export type ClaimedDevice = BackingInfo & { identity: string; fd: number };

type ClaimAddon = Pick<NativeAddon, 'claimBacking' | 'releaseBacking'>;

function readText(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8').trim();
  } catch {
    return null;
  }
}

function listDir(p: string): string[] {
  try {
    return fs.readdirSync(p);
  } catch {
    return [];
  }
}

/** The device's sysfs directory and those of its partitions, with their names and "maj:min". */
function sysfsParts(sysfs: string): Array<{ name: string; dir: string; devno: string | null; partition: boolean }> {
  const parts = [{ name: path.basename(sysfs), dir: sysfs, devno: readText(`${sysfs}/dev`), partition: false }];
  for (const e of listDir(sysfs)) {
    const dir = `${sysfs}/${e}`;
    if (readText(`${dir}/partition`) !== null) parts.push({ name: e, dir, devno: readText(`${dir}/dev`), partition: true });
  }
  return parts;
}

/** Mount points by "maj:min" of the mounted device, from /proc/self/mountinfo. */
function mountsByDevno(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of (readText('/proc/self/mountinfo') ?? '').split('\n')) {
    const f = line.split(' ');
    const devno = f[2];
    const where = f[4];
    if (devno !== undefined && where !== undefined && !out.has(devno)) out.set(devno, where.replace(/\\040/g, ' '));
  }
  return out;
}

/** "maj:min" of every active swap device (/proc/swaps). */
function swapDevnos(): Set<string> {
  const out = new Set<string>();
  for (const line of (readText('/proc/swaps') ?? '').split('\n').slice(1)) {
    const p = line.split(/\s+/)[0];
    if (!p) continue;
    try {
      const st = fs.statSync(p.replace(/\\040/g, ' '), { bigint: true });
      if (st.isBlockDevice()) out.add(`${majorOf(st.rdev)}:${minorOf(st.rdev)}`);
    } catch {
      // a swap file, or a device gone since: not one of ours
    }
  }
  return out;
}

/** Loop devices whose backing file is `file` (a regular file in use as a disk). */
function loopsOver(file: string): string[] {
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch {
    return [];
  }
  return listDir('/sys/block')
    .filter((d) => d.startsWith('loop') && readText(`/sys/block/${d}/loop/backing_file`) === real)
    .map((d) => `/dev/${d}`);
}

/**
 * Why `t` is in use by someone else (mounted, held by another block device, swap, a loop device's backing
 * file), as the end of a sentence "<role> device <path> ...", or null when nothing says it is.
 */
export function inUseReason(t: ClaimTarget): string | null {
  if (t.sysfs === null) {
    const loops = loopsOver(t.path);
    return loops.length > 0 ? `is the backing file of ${loops.join(', ')}` : null;
  }
  const mounts = mountsByDevno();
  const swaps = swapDevnos();
  for (const p of sysfsParts(t.sysfs)) {
    const who = p.partition ? `has partition ${p.name}, which` : '';
    const say = (what: string): string => (who ? `${who} ${what}` : what);
    const where = p.devno === null ? undefined : mounts.get(p.devno);
    if (where !== undefined) return say(`is mounted on ${where}`);
    const holders = listDir(`${p.dir}/holders`);
    if (holders.length > 0) return say(`is held by ${holders.map((h) => `/dev/${h}`).join(', ')}`);
    if (p.devno !== null && swaps.has(p.devno)) return say('is in use as swap');
  }
  return null;
}

function busy(role: Role, t: ClaimTarget, why: string): DmrError {
  return new DmrError('E_DEVICE_BUSY', `${role} device ${t.path} ${why}`);
}

/**
 * Claims `t`: refuses it when it is in use (inUseReason), then opens it exclusively (EBUSY: another program
 * holds it) and reads its geometry on that fd. Reads and writes no data. The caller releases the claim (releaseClaim).
 */
export function claimDevice(native: ClaimAddon, t: ClaimTarget, role: Role): ClaimedDevice {
  const before = inUseReason(t);
  if (before !== null) throw busy(role, t, before);
  let claim: BackingClaim;
  try {
    const c = native.claimBacking(t.path);
    claim = c;
    const identity = c.isBlockDevice ? `b:${c.rdev}` : `f:${c.dev}:${c.ino}`;
    if (identity !== t.identity) {
      native.releaseBacking(c.fd);
      throw new DmrError('E_DEVICE_INVALID', `${role} device ${t.path} changed while it was being opened`);
    }
  } catch (e) {
    if (errorCodeOf(e) === 'EBUSY') {
      const why = inUseReason(t);
      if (why !== null) throw busy(role, t, why);
    }
    throw backingDeviceError(e, `${role} device ${t.path}`);
  }
  // The geometry was probed on the claimed fd: the path is not opened again.
  return { ...claim, path: t.path, identity: t.identity };
}

/** Main and spare, claimed; release() closes both claims (once; later calls do nothing). */
export class HeldDevices {
  private released = false;

  constructor(
    private readonly native: ClaimAddon,
    readonly main: ClaimedDevice,
    readonly spare: ClaimedDevice,
  ) {}

  /** Claims main, then spare; a failure releases what was claimed. */
  static claim(native: ClaimAddon, main: ClaimTarget, spare: ClaimTarget): HeldDevices {
    const m = claimDevice(native, main, 'main');
    try {
      return new HeldDevices(native, m, claimDevice(native, spare, 'spare'));
    } catch (e) {
      native.releaseBacking(m.fd);
      throw e;
    }
  }

  get isReleased(): boolean {
    return this.released;
  }

  /** Closes both claims. Call only once nothing (the native device, the remap store) uses them any more. */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const d of [this.main, this.spare]) {
      try {
        this.native.releaseBacking(d.fd);
      } catch {
        // close(2) failing leaves nothing to undo: the claim ends with the fd either way
      }
    }
  }
}
