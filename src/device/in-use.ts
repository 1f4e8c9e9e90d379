// Whether a ublk device's own block device (/dev/ublkbN, sysfs /sys/class/block/ublkbN) is in use: mounted
// (/proc/self/mountinfo), held by another block device (its sysfs holders: device-mapper, md, LVM on top),
// active swap, or a loop device's backing device, its partitions included (claim.ts inUse, the check add makes
// of main and the spare); and, for a device its daemon serves, held open exclusively by anything else. `del` and
// `down` refuse such a device (E_DEVICE_IN_USE) unless --force; the daemon, told to stop anyway (SIGTERM,
// `shutdown`), deletes it and logs a warning naming its users.
//
// Under vitest, DMREMAP_FAKE_NATIVE (the fake addon's config, native-select.ts) may give each fake device a
// sysfs directory, the /proc files and /sys/block to read instead, and the devices whose exclusive open fails
// (`blockSysfs`, `mountinfo`, `swaps`, `sysBlock`, `exclusiveBusy`): the fake's device nodes are plain files,
// with no sysfs of their own. Outside vitest it is ignored.
import fs from 'node:fs';
import { DmrError } from '../errors.js';
import { inUse, PROC_FILES, type InUse, type ProcFiles } from './claim.js';

export type { InUse } from './claim.js';

const SYS_CLASS_BLOCK = '/sys/class/block';

interface Sources {
  /** The sysfs directory of ublk block device `devId`, null when the kernel has none (deleted, never started). */
  sysfs(devId: number): string | null;
  files: ProcFiles;
  /** Opens /dev/ublkb<devId> exclusively and closes it: the errno code it failed with, or null. */
  openExclusive(devId: number): string | null;
}

const systemSources: Sources = {
  sysfs: (devId) => {
    const dir = `${SYS_CLASS_BLOCK}/ublkb${devId}`;
    return fs.existsSync(dir) ? dir : null;
  },
  files: PROC_FILES,
  openExclusive: (devId) => {
    try {
      // O_EXCL without O_CREAT on a block device: an exclusive claim, refused (EBUSY) while someone holds one.
      // Read-only: closing it then sends udev no change event.
      fs.closeSync(fs.openSync(`/dev/ublkb${devId}`, fs.constants.O_RDONLY | fs.constants.O_EXCL | fs.constants.O_NONBLOCK));
      return null;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code ?? 'EIO';
    }
  },
};

interface FakeSources {
  blockSysfs?: Record<string, string>;
  mountinfo?: string;
  swaps?: string;
  sysBlock?: string;
  exclusiveBusy?: number[];
}

function sources(env: NodeJS.ProcessEnv): Sources {
  const fake = env.VITEST === 'true' ? env.DMREMAP_FAKE_NATIVE : undefined;
  if (fake === undefined) return systemSources;
  const cfg = JSON.parse(fake) as FakeSources;
  return {
    sysfs: (devId) => cfg.blockSysfs?.[String(devId)] ?? null,
    files: { mountinfo: cfg.mountinfo ?? PROC_FILES.mountinfo, swaps: cfg.swaps ?? PROC_FILES.swaps, sysBlock: cfg.sysBlock ?? PROC_FILES.sysBlock },
    openExclusive: (devId) => ((cfg.exclusiveBusy ?? []).includes(devId) ? 'EBUSY' : null),
  };
}

/**
 * How ublk device `devId`'s block device is in use (mounted, held, swap, a loop device's backing device; a
 * partition of it included), or null. With `probe` (a device its daemon serves), one exclusive open of it
 * finds what none of those names: a file system that names it only as one of its devices or its journal
 * (btrfs, XFS logdev, ext4's external journal), ZFS, an iSCSI export. Never for a quiesced device: its
 * I/O waits for a daemon, and an open may read it (a partition scan).
 */
export function ublkDeviceInUse(devId: number, env: NodeJS.ProcessEnv = process.env, probe = false): InUse | null {
  const src = sources(env);
  const sysfs = src.sysfs(devId);
  if (sysfs === null) return null;
  const use = inUse({ path: `/dev/ublkb${devId}`, sysfs }, src.files);
  if (use !== null || !probe) return use;
  if (src.openExclusive(devId) !== 'EBUSY') return null;
  return { kind: 'open', where: 'another program', partition: null, reason: 'is open exclusively by another program (a file system, journal or export that is not in the mount table as this device)' };
}

/** What to do about it first, for the refusal's message. */
function remedy(use: InUse): string {
  switch (use.kind) {
    case 'mounted':
      return 'unmount it first';
    case 'held':
      return `remove ${use.where} first`;
    case 'swap':
      return 'swapoff it first';
    case 'loop':
      return `detach ${use.where} first`;
    case 'open':
      return 'close it first';
  }
}

/** "/dev/ublkb0 (data)", or the path alone for a device without a name. */
export function deviceLabel(blockPath: string, name: string | null): string {
  return name !== null ? `${blockPath} (${name})` : blockPath;
}

/**
 * The refusal of `del` / `down` without --force, one line: "/dev/ublkb0 (data) is mounted on /srv; unmount it
 * first, or use --force to delete it under its users".
 */
export function inUseError(blockPath: string, name: string | null, use: InUse): DmrError {
  return new DmrError('E_DEVICE_IN_USE', `${deviceLabel(blockPath, name)} ${use.reason}; ${remedy(use)}, or use --force to delete it under its users`);
}

/**
 * The daemon's warning when it deletes a device in use all the same (a stop request must end it): "deleting
 * /dev/ublkb0 while mounted on /srv: its file system loses its disk; the kernel deletes it only once /srv is
 * unmounted" (its nodes go at once, and the daemon waits in DEL_DEV until then).
 */
export function deletingInUseWarning(blockPath: string, use: InUse): string {
  const what = use.partition !== null ? `its partition ${use.partition} ${use.reason.replace(/^has partition \S+, which /, '')}` : use.reason.replace(/^is /, '');
  const loses = use.kind === 'mounted' ? 'its file system loses its disk' : use.kind === 'swap' ? 'the swapped-out pages lose their disk' : `${use.where} loses its disk`;
  return `deleting ${blockPath} while ${what}: ${loses}; ${deletedOnceFree(use)}`;
}

/**
 * Why a device deleted in use outlives its nodes: the kernel's DEL_DEV waits for the last opener of the block
 * device (a mounted file system, a holder), and the daemon waits in it. "the kernel deletes it only once /srv
 * is unmounted".
 */
export function deletedOnceFree(use: InUse): string {
  switch (use.kind) {
    case 'mounted':
      return `the kernel deletes it only once ${use.where} is unmounted`;
    case 'held':
      return `the kernel deletes it only once ${use.where} lets go of it`;
    case 'swap':
      return 'the kernel deletes it only once it is swapped off';
    case 'loop':
      return `the kernel deletes it only once ${use.where} is detached`;
    case 'open':
      return 'the kernel deletes it only once that program lets go of it';
  }
}
