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

/** Where inUse() reads the mount table, the active swaps and the loop devices: the system's, or a test's stand-ins. */
export interface ProcFiles {
  mountinfo: string;
  swaps: string;
  /** /sys/block: each loop device's loop/backing_file. */
  sysBlock: string;
}
export const PROC_FILES: ProcFiles = { mountinfo: '/proc/self/mountinfo', swaps: '/proc/swaps', sysBlock: '/sys/block' };

/**
 * A path or mount point as the kernel writes it in /proc files, its octal escapes (\040 space, \011 tab,
 * \134 backslash) decoded; a newline (\012) stays written as \012, so that a message naming it is one line.
 */
function unescapeProc(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (all, oct: string) => (oct === '012' ? all : String.fromCharCode(parseInt(oct, 8))));
}

/**
 * "maj:min" of the block device at `p` (a device node, or a link to one), null for anything else. Only a
 * path under /dev is looked at: a stat elsewhere (a swap file or a mount source on a network file system)
 * could hang, and is never a block device of ours.
 */
function devnoOf(p: string): string | null {
  if (!p.startsWith('/dev/')) return null;
  try {
    const st = fs.statSync(p, { bigint: true });
    return st.isBlockDevice() ? `${majorOf(st.rdev)}:${minorOf(st.rdev)}` : null;
  } catch {
    return null;
  }
}

/**
 * One mount of /proc/self/mountinfo: the device number of its superblock, its source, its mount point, and
 * for a superblock with an anonymous device number (major 0: btrfs gives each mount one) the device number of
 * its source (under /dev). Only such a mount is matched by its source: the source is the text given at mount
 * time, and a mount of a real block device is of that device whatever its source now names (a renamed LV
 * whose old name went to another).
 */
interface Mount {
  devno: string;
  source: string;
  where: string;
  anonymous: boolean;
  sourceDevno: string | null;
}

function mountsOf(mountinfo: string): Mount[] {
  const out: Mount[] = [];
  for (const line of (readText(mountinfo) ?? '').split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-', 6);
    const devno = f[2];
    const where = f[4];
    if (devno === undefined || where === undefined) continue;
    const source = dash > 0 ? unescapeProc(f[dash + 2] ?? '') : '';
    const anonymous = devno.startsWith('0:');
    out.push({ devno, source, where: unescapeProc(where), anonymous, sourceDevno: anonymous ? devnoOf(source) : null });
  }
  return out;
}

/**
 * Where block device `name` ("maj:min" `devno`) is mounted: a mount whose superblock has its device number,
 * or an anonymous one whose source is the device (see Mount; matched by /dev/<name>, or by the source's
 * device number for another node or link to it).
 */
function mountPointOf(mounts: Mount[], name: string, devno: string | null): string | undefined {
  if (devno !== null) {
    const byDevno = mounts.find((m) => m.devno === devno);
    if (byDevno !== undefined) return byDevno.where;
  }
  return mounts.find((m) => m.anonymous && (m.source === `/dev/${name}` || (devno !== null && m.sourceDevno === devno)))?.where;
}

/** "maj:min" of every active swap device (/proc/swaps). */
function swapDevnos(swaps: string): Set<string> {
  const out = new Set<string>();
  for (const line of (readText(swaps) ?? '').split('\n').slice(1)) {
    const p = line.split(/\s+/)[0];
    if (!p) continue;
    const devno = devnoOf(unescapeProc(p));
    if (devno !== null) out.add(devno);
  }
  return out;
}

/** Each bound loop device (/dev/loopN) with the path of its backing file (sysfs loop/backing_file). */
function loopBackings(sysBlock: string): Array<{ loop: string; backing: string }> {
  const out: Array<{ loop: string; backing: string }> = [];
  for (const d of listDir(sysBlock)) {
    if (!d.startsWith('loop')) continue;
    const backing = readText(`${sysBlock}/${d}/loop/backing_file`);
    if (backing !== null) out.push({ loop: `/dev/${d}`, backing });
  }
  return out;
}

/** Loop devices whose backing file is `file` (a regular file in use as a disk). */
function loopsOver(file: string, sysBlock: string): string[] {
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch {
    return [];
  }
  return loopBackings(sysBlock)
    .filter((l) => l.backing === real)
    .map((l) => l.loop);
}

/**
 * How a device is in use by someone else: mounted (`where` the mount point), held by other block devices
 * (`where` their /dev paths: device-mapper, md, LVM, bcache), active swap, the backing file or device of loop
 * devices, or (`open`, found only by an exclusive open: ublkDeviceInUse) open exclusively by a program
 * none of those name (btrfs's other devices, an external journal, ZFS, an iSCSI export). `partition` names
 * the partition that is, when it is one of the device's, not the device itself. `reason` says it all as the
 * end of a sentence "<device> ...".
 */
export interface InUse {
  kind: 'mounted' | 'held' | 'swap' | 'loop' | 'open';
  where: string;
  partition: string | null;
  reason: string;
}

/** How `t` is in use by someone else, or null when nothing says it is (see InUse). */
export function inUse(t: Pick<ClaimTarget, 'path' | 'sysfs'>, files: ProcFiles = PROC_FILES): InUse | null {
  if (t.sysfs === null) {
    const loops = loopsOver(t.path, files.sysBlock);
    if (loops.length === 0) return null;
    const where = loops.join(', ');
    return { kind: 'loop', where, partition: null, reason: `is the backing file of ${where}` };
  }
  const mounts = mountsOf(files.mountinfo);
  const swaps = swapDevnos(files.swaps);
  // A loop device opens its backing device without claiming it: it shows neither in holders nor to an
  // exclusive open, only as its backing file (the device's /dev name, or another node of it).
  const loopBacked = loopBackings(files.sysBlock);
  for (const p of sysfsParts(t.sysfs)) {
    const partition = p.partition ? p.name : null;
    const found = (kind: InUse['kind'], where: string, what: string): InUse => ({
      kind,
      where,
      partition,
      reason: partition !== null ? `has partition ${partition}, which ${what}` : what,
    });
    const where = mountPointOf(mounts, p.name, p.devno);
    if (where !== undefined) return found('mounted', where, `is mounted on ${where}`);
    const holders = listDir(`${p.dir}/holders`).map((h) => `/dev/${h}`);
    if (holders.length > 0) return found('held', holders.join(', '), `is held by ${holders.join(', ')}`);
    if (p.devno !== null && swaps.has(p.devno)) return found('swap', `/dev/${p.name}`, 'is in use as swap');
    const loops = loopBacked.filter((l) => l.backing === `/dev/${p.name}` || (p.devno !== null && devnoOf(l.backing) === p.devno)).map((l) => l.loop);
    if (loops.length > 0) return found('loop', loops.join(', '), `is the backing device of ${loops.join(', ')}`);
  }
  return null;
}

/**
 * Why `t` is in use by someone else (mounted, held by another block device, swap, a loop device's backing
 * file), as the end of a sentence "<role> device <path> ...", or null when nothing says it is.
 */
export function inUseReason(t: ClaimTarget): string | null {
  return inUse(t)?.reason ?? null;
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
