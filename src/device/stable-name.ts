// Stable names: /dev/dmremap/<name> -> /dev/ublkbN for a device added with --name, so that fstab and scripts
// need not know which N the kernel gave it this time. The daemon makes the link once its device is live (a
// successor after a recovery makes it again) and removes it when the device is deleted; a daemon that merely
// dies leaves it (the quiesced device still exists). DMREMAP_NAME_DIR overrides /dev/dmremap for tests.
// A link is only ever replaced when it is stale: it points at nothing, or at a ublkbN node that is not another
// live or quiesced device of ours. A file that is not a symlink, a link to another device of ours, or a link
// to anything else that exists (a disk, made by hand) is refused (E_LINK).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { DmrError, errorCodeOf } from '../errors.js';

export const DEFAULT_NAME_DIR = '/dev/dmremap';
/** A ublk block device node's name (/dev/ublkbN). */
const UBLK_NODE_RE = /^ublkb\d+$/;

export function nameDir(env: NodeJS.ProcessEnv = process.env): string {
  const d = env.DMREMAP_NAME_DIR;
  return d !== undefined && d !== '' ? path.resolve(d) : DEFAULT_NAME_DIR;
}

export const stableNamePath = (dir: string, name: string): string => path.join(dir, name);

/** Where the link at `p` points (as written), or null when there is nothing at `p`; 'not-a-link' for anything else. */
function linkTarget(p: string): string | null | 'not-a-link' {
  try {
    return fs.readlinkSync(p);
  } catch (e) {
    const code = errorCodeOf(e);
    if (code === 'ENOENT') return null;
    if (code === 'EINVAL') return 'not-a-link';
    throw new DmrError('E_LINK', `cannot read ${p} (${code ?? String(e)})`, { cause: e });
  }
}

/**
 * Makes `dir/name` a symlink to `blockPath` (the directory is made, mode 0755, if missing). Idempotent. Refuses
 * (E_LINK, nothing changed) a non-symlink at that path, a link whose target `otherDevice` says is another
 * live or quiesced device of ours, or a link to something that exists and is not a /dev/ublkbN node (made by
 * hand); a stale link (to a ublkbN node, or to nothing) is replaced atomically (a new link renamed over it).
 */
export function linkStableName(dir: string, name: string, blockPath: string, otherDevice: (target: string) => boolean): string {
  const p = stableNamePath(dir, name);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw new DmrError('E_LINK', `cannot create ${dir} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  }
  const now = linkTarget(p);
  if (now === 'not-a-link') throw new DmrError('E_LINK', `${p} exists and is not a symlink: not replaced (remove it, or use another --name)`);
  if (now === blockPath) return p;
  if (now !== null) {
    const abs = path.resolve(dir, now);
    if (otherDevice(abs)) throw new DmrError('E_LINK', `${p} points at ${abs}, another dmremap-ublk device: not replaced`);
    // Only a stale link is ours to replace: one to a ublk block device (a device of ours that is gone, or
    // whose number went to another), or to nothing. A link made by hand to a disk that exists is someone's.
    if (!UBLK_NODE_RE.test(path.basename(abs)) && fs.existsSync(abs)) {
      throw new DmrError('E_LINK', `${p} points at ${abs}, which exists and is not a ublk device: not replaced (remove the link, or use another --name)`);
    }
  }
  const tmp = path.join(dir, `.${name}.${process.pid}.${randomBytes(4).toString('hex')}`);
  try {
    fs.symlinkSync(blockPath, tmp);
    fs.renameSync(tmp, p);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new DmrError('E_LINK', `cannot link ${p} to ${blockPath} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  }
  return p;
}

/** Removes `dir/name` if it is a symlink to `blockPath` (and nothing else). Returns whether it removed it. */
export function unlinkStableName(dir: string, name: string, blockPath: string): boolean {
  const p = stableNamePath(dir, name);
  let now: string | null | 'not-a-link';
  try {
    now = linkTarget(p);
  } catch {
    return false;
  }
  if (now === null || now === 'not-a-link' || path.resolve(dir, now) !== blockPath) return false;
  try {
    fs.unlinkSync(p);
    return true;
  } catch {
    return false;
  }
}

/** `dir/name` when it is a symlink to `blockPath` (what `list` shows), else null. */
export function stableNameOf(dir: string, name: string | null, blockPath: string): string | null {
  if (name === null) return null;
  const p = stableNamePath(dir, name);
  try {
    const now = fs.readlinkSync(p);
    return path.resolve(dir, now) === blockPath ? p : null;
  } catch {
    return null;
  }
}

/**
 * For udev (scripts/systemd/90-dmremap-ublk.rules): the device's name in <run dir>/<devId>.name, then a
 * "change" uevent for /dev/ublkbN so that udev reads it and adds the same link, which gives systemd a device
 * unit for /dev/dmremap/<name> (what an fstab line naming it waits for). Without udev (or sysfs) the uevent
 * does nothing; a failure is returned for the log, never thrown.
 */
export function tellUdev(runDir: string, devId: number, name: string, blockPath: string): string | null {
  try {
    fs.writeFileSync(nameFilePath(runDir, devId), `${name}\n`, { mode: 0o644 });
  } catch (e) {
    return `cannot write ${nameFilePath(runDir, devId)} (${errorCodeOf(e) ?? String(e)})`;
  }
  const uevent = path.join('/sys/class/block', path.basename(blockPath), 'uevent');
  try {
    fs.writeFileSync(uevent, 'change');
  } catch (e) {
    if (errorCodeOf(e) !== 'ENOENT') return `cannot write ${uevent} (${errorCodeOf(e) ?? String(e)})`;
  }
  return null;
}

/** The file tellUdev writes: the rule reads /run/dmremap-ublk/%n.name (%n: the N of ublkbN). */
export const nameFilePath = (runDir: string, devId: number): string => path.join(runDir, `${devId}.name`);

/** Removes the name file once the device is deleted. */
export function forgetUdevName(runDir: string, devId: number): void {
  fs.rmSync(nameFilePath(runDir, devId), { force: true });
}
