// Every check that can be made before the kernel is touched: the devices exist and can be opened, main and
// spare are different devices that do not overlap and that no other dmremap-ublk daemon uses, both are
// claimed exclusively (claim.ts: nothing mounted or held), the block size suits main, and ublk is available.
// Produces the exact options the native device is created with, and holds the claims.
import fs from 'node:fs';
import os from 'node:os';
import { DmrError, backingDeviceError, errnoName } from '../errors.js';
import type { NativeAddon, UblkProbe } from '../native.js';
import type { Occupant } from '../control/registry.js';
import type { DeviceConfig } from './config.js';
import { HeldDevices, type ClaimedDevice } from './claim.js';
import { sysfsBlockPath } from './dev-t.js';

export interface Identity {
  path: string;
  identity: string;
  /** /sys/dev/block/<maj:min> resolved, for block devices: tells a disk from its partitions. */
  sysfs: string | null;
}

export interface DevicePlan {
  main: ClaimedDevice;
  spare: ClaimedDevice;
  /** The claims of main and spare: release() once nothing uses them (after the device stopped). */
  held: HeldDevices;
  probe: UblkProbe;
  queues: number;
  depth: number;
  blockSize: 512 | 4096;
  sizeBytes: bigint;
  maxIoBytes: number;
  discard: boolean;
  zeroCopy: boolean;
}

const UBLK_F_AUTO_BUF_REG = 1n << 11n;


/** Stats `p` (following symlinks) and names what it is; fails with a message naming `role`. */
export function identify(p: string, role: 'main' | 'spare'): Identity {
  const what = `${role} device ${p}`;
  let st: fs.BigIntStats;
  try {
    st = fs.statSync(p, { bigint: true });
  } catch (e) {
    throw backingDeviceError(e, what);
  }
  if (st.isBlockDevice()) {
    let sysfs: string | null = null;
    try {
      sysfs = fs.realpathSync(sysfsBlockPath(st.rdev));
    } catch {
      sysfs = null;
    }
    return { path: p, identity: `b:${st.rdev}`, sysfs };
  }
  if (st.isFile()) return { path: p, identity: `f:${st.dev}:${st.ino}`, sysfs: null };
  throw new DmrError('E_DEVICE_INVALID', `${what} is not a block device or a regular file`);
}

function checkAccess(p: string, what: string): void {
  try {
    fs.accessSync(p, fs.constants.R_OK | fs.constants.W_OK);
  } catch (e) {
    throw backingDeviceError(e, what);
  }
}

export function checkDistinct(main: Identity, spare: Identity): void {
  if (main.identity === spare.identity) {
    const same = main.path === spare.path ? main.path : `${main.path} and ${spare.path}`;
    throw new DmrError('E_SAME_DEVICE', `main and spare are the same device (${same})`);
  }
  if (main.sysfs !== null && spare.sysfs !== null) {
    if (spare.sysfs.startsWith(`${main.sysfs}/`)) {
      throw new DmrError('E_SAME_DEVICE', `spare ${spare.path} is a partition of main ${main.path}`);
    }
    if (main.sysfs.startsWith(`${spare.sysfs}/`)) {
      throw new DmrError('E_SAME_DEVICE', `main ${main.path} is a partition of spare ${spare.path}`);
    }
  }
}

/** Refuses a main or spare that a running dmremap-ublk daemon already serves, and a name already taken. */
export function checkRegistry(entries: Occupant[], main: Identity, spare: Identity, name: string | null): void {
  for (const e of entries) {
    for (const [role, id] of [['main', main], ['spare', spare]] as const) {
      for (const [theirRole, theirs] of [['main', e.main], ['spare', e.spare]] as const) {
        if (theirs.identity === id.identity) {
          throw new DmrError(
            'E_DEVICE_BUSY',
            `${role} device ${id.path} is already the ${theirRole} of dmremap-ublk device ${describe(e)}`,
          );
        }
      }
    }
    if (name !== null && e.name === name) {
      throw new DmrError('E_NAME_TAKEN', `name ${JSON.stringify(name)} is already used by ${e.blockPath}`);
    }
  }
}

function describe(e: Occupant): string {
  return e.name === null ? e.blockPath : `${e.blockPath} (${e.name})`;
}

export function probeUblk(native: NativeAddon): UblkProbe {
  const probe = native.probe();
  if (probe.controlAvailable) return probe;
  const code = probe.controlErrno > 0 ? errnoName(probe.controlErrno) : 'ENOENT';
  if (code === 'EACCES' || code === 'EPERM') {
    throw new DmrError('E_NO_UBLK', `/dev/ublk-control: permission denied (run as root)`);
  }
  throw new DmrError('E_NO_UBLK', `/dev/ublk-control is not available (${code}); load the driver: modprobe ublk_drv`);
}

/**
 * Validates `cfg` against the devices, the registry and the kernel, and claims main and spare. Writes
 * nothing. The caller releases plan.held; a refusal releases the claims before it throws.
 */
export function planDevice(native: NativeAddon, cfg: DeviceConfig, running: Occupant[]): DevicePlan {
  const mainId = identify(cfg.mainPath, 'main');
  const spareId = identify(cfg.sparePath, 'spare');
  checkDistinct(mainId, spareId);
  checkAccess(cfg.mainPath, `main device ${cfg.mainPath}`);
  checkAccess(cfg.sparePath, `spare device ${cfg.sparePath}`);
  checkRegistry(running, mainId, spareId, cfg.name);

  const held = HeldDevices.claim(native, mainId, spareId);
  try {
    return planClaimed(native, cfg, held);
  } catch (e) {
    held.release();
    throw e;
  }
}

function planClaimed(native: NativeAddon, cfg: DeviceConfig, held: HeldDevices): DevicePlan {
  const { main, spare } = held;
  const blockSize = cfg.blockSize ?? (main.logicalBlockSize > 512 ? 4096 : 512);
  if (blockSize < main.logicalBlockSize) {
    throw new DmrError(
      'E_BLOCK_SIZE',
      `block size ${blockSize} is smaller than main device ${main.path}'s logical block size ${main.logicalBlockSize}`,
    );
  }
  if (spare.logicalBlockSize > blockSize) {
    throw new DmrError(
      'E_BLOCK_SIZE',
      `spare device ${spare.path}'s logical block size ${spare.logicalBlockSize} is larger than the block size ${blockSize}`,
    );
  }
  const sizeBytes = (main.sizeBytes / BigInt(blockSize)) * BigInt(blockSize);
  if (sizeBytes === 0n) {
    throw new DmrError('E_DEVICE_INVALID', `main device ${main.path} is smaller than one block (${blockSize} bytes)`);
  }
  if (spare.sizeBytes < BigInt(blockSize)) {
    throw new DmrError('E_DEVICE_INVALID', `spare device ${spare.path} is smaller than one block (${blockSize} bytes)`);
  }
  const probe = probeUblk(native);
  const kernelZeroCopy = (probe.features & UBLK_F_AUTO_BUF_REG) !== 0n;
  if (cfg.buffers === 'zero-copy' && !kernelZeroCopy) {
    throw new DmrError('E_UNSUPPORTED', '--buffers zero-copy needs a kernel with UBLK_F_AUTO_BUF_REG (Linux 6.16 or later)');
  }
  return {
    main,
    spare,
    held,
    probe,
    queues: cfg.queues ?? Math.min(4, os.availableParallelism()),
    depth: cfg.depth,
    blockSize,
    sizeBytes,
    maxIoBytes: cfg.maxIoBytes,
    discard: main.discard,
    zeroCopy: cfg.buffers !== 'copy' && kernelZeroCopy,
  };
}
