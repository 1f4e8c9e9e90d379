// Cleaning up after a daemon that died without stopping its device (kill -9, crash): its registry entry is
// stale and the kernel may still hold /dev/ublkbN with no server. The kernel device is deleted only if the
// kernel says it belongs to the dead daemon's pid, or has no server at all (the kernel resets the pid of a
// device whose server died), so a device id reused by a newer, live daemon is never touched.
import { isNativeError, type NativeAddon } from '../native.js';
import { DmrError, errorCodeOf, kernelError } from '../errors.js';
import fs from 'node:fs';
import { isAlive, removeStale, type InvalidEntry, type RegistryEntry } from '../control/registry.js';
import type { Logger } from '../log.js';

export type ReapResult = 'deleted' | 'already-gone' | 'reused';

export async function reapStale(native: NativeAddon, dir: string, entry: RegistryEntry, log: Logger): Promise<ReapResult> {
  let result: ReapResult;
  try {
    const info = await native.kernelDeviceInfo(entry.devId);
    // When its server dies the kernel marks the device dead and forgets the pid (-1): that is our orphan.
    // A live pid other than ours means the id was reused by a newer daemon.
    const orphan = info.pid === entry.pid || (info.pid <= 0 && info.state === 'dead');
    if (!orphan) {
      result = 'reused';
    } else {
      await native.deleteKernelDevice(entry.devId);
      result = 'deleted';
    }
  } catch (e) {
    if (!(isNativeError(e) && e.code === 'ENODEV')) throw kernelError(e, `cannot delete orphaned ublk device ${entry.devId}`);
    result = 'already-gone';
  }
  removeStale(dir, entry);
  log.info({ devId: entry.devId, pid: entry.pid, result }, 'cleaned up after a daemon that is gone');
  return result;
}

/**
 * `del` of a quiesced device (its daemon gone, its kernel device waiting for `recover`): STOP_DEV (the kernel
 * fails the I/O its users were waiting with) and DEL_DEV, then its registry entry and socket. Refuses
 * (E_DEVICE_LIVE) a device another process serves now (a successor took it over in the meantime).
 */
export async function deleteQuiesced(native: NativeAddon, dir: string, entry: RegistryEntry, log: Logger): Promise<ReapResult> {
  let result: ReapResult;
  try {
    const info = await native.kernelDeviceInfo(entry.devId);
    if (info.state === 'live' && info.pid > 0 && info.pid !== entry.pid && running(info.pid)) {
      throw new DmrError('E_DEVICE_LIVE', `${entry.blockPath} is live again (served by pid ${info.pid}): del it again to stop that daemon`);
    }
    await native.deleteKernelDevice(entry.devId);
    result = 'deleted';
  } catch (e) {
    if (e instanceof DmrError) throw e;
    if (!(isNativeError(e) && e.code === 'ENODEV')) throw kernelError(e, `cannot delete quiesced ublk device ${entry.devId}`);
    result = 'already-gone';
  }
  removeStale(dir, entry);
  log.info({ devId: entry.devId, pid: entry.pid, result }, 'deleted a quiesced device');
  return result;
}

/**
 * `del` of a device whose registry file this version cannot parse (invalid): refuses (E_DEVICE_LIVE) while
 * its daemon, or any live process serving its kernel device, runs; else deletes the kernel device (if any)
 * like a quiesced one, then the file and socket.
 */
export async function deleteInvalid(native: NativeAddon, entry: InvalidEntry, log: Logger): Promise<ReapResult> {
  const what = `device ${entry.devId}`;
  if (entry.pid !== null && isAlive({ pid: entry.pid, pidStart: entry.pidStart })) {
    throw new DmrError('E_DEVICE_LIVE', `${what} is served by pid ${entry.pid}, whose state file ${entry.file} this version cannot read (${entry.reason}): stop it with the version that started it`);
  }
  let result: ReapResult;
  try {
    const info = await native.kernelDeviceInfo(entry.devId);
    if (info.state === 'live' && info.pid > 0 && info.pid !== entry.pid && running(info.pid)) {
      throw new DmrError('E_DEVICE_LIVE', `${what} is live (served by pid ${info.pid}); its state file ${entry.file} cannot be read (${entry.reason})`);
    }
    await native.deleteKernelDevice(entry.devId);
    result = 'deleted';
  } catch (e) {
    if (e instanceof DmrError) throw e;
    if (!(isNativeError(e) && e.code === 'ENODEV')) throw kernelError(e, `cannot delete ublk ${what}`);
    result = 'already-gone';
  }
  fs.rmSync(entry.file, { force: true });
  if (entry.socket !== null) fs.rmSync(entry.socket, { force: true });
  log.info({ devId: entry.devId, pid: entry.pid, result, reason: entry.reason }, 'deleted a device whose state file could not be read');
  return result;
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errorCodeOf(e) === 'EPERM';
  }
}
