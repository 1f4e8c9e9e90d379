// Review of 446220f (claim.ts mountPointOf): a mount is matched by its source as well as by its superblock's
// device number, so that btrfs (an anonymous 0:N superblock) is seen. But a mount whose superblock is a real
// block device (a non-zero major in mountinfo field 3) that is not ours is a mount of THAT device, whatever
// its source string says: the source is the text given at mount time and goes stale. An LV renamed while
// mounted (`lvrename vg/old vg/new`, allowed while mounted) and a new LV created under the old name: the mount
// still says /dev/mapper/vg-old, which now resolves to the new, unused LV; `add --spare /dev/vg/old` (claimDevice
// -> inUse) must not be refused as "mounted", nor `del` of a ublk device whose name a stale source carries.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { inUse } from '../../src/device/claim.js';

let root: string;
let files: { mountinfo: string; swaps: string; sysBlock: string };

/** A fake sysfs dir for block device `name` with "maj:min" `devno`. */
function sysfsOf(name: string, devno: string): string {
  const dir = path.join(root, 'sys', name);
  fs.mkdirSync(path.join(dir, 'holders'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'dev'), `${devno}\n`);
  return dir;
}

/** A real block device node under /dev on this host and its "maj:min" (stat needs no access to the node). */
function someBlockNode(): { node: string; devno: string } | null {
  for (const e of fs.readdirSync('/dev')) {
    const st = fs.statSync(`/dev/${e}`, { throwIfNoEntry: false, bigint: true });
    if (st?.isBlockDevice()) return { node: `/dev/${e}`, devno: `${st.rdev >> 8n & 0xfffn}:${(st.rdev & 0xffn) | ((st.rdev >> 12n) & ~0xffn)}` };
  }
  return null;
}

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-stale-src-'));
  files = { mountinfo: path.join(root, 'mountinfo'), swaps: path.join(root, 'swaps'), sysBlock: path.join(root, 'sys-block') };
  fs.writeFileSync(files.swaps, 'Filename\tType\tSize\tUsed\tPriority\n');
  fs.mkdirSync(files.sysBlock);
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

describe('inUse: a mount whose superblock is another block device is not a mount of this one', () => {
  const blk = someBlockNode();
  it.skipIf(blk === null)('a stale mount source that now resolves to this device (renamed LV, new LV under the old name) does not make it mounted', () => {
    const { node, devno } = blk!;
    // The file system is on 253:99 (the renamed LV); its source string now names the new device `node`.
    fs.writeFileSync(files.mountinfo, `22 1 8:1 / / rw - ext4 /dev/sda1 rw\n98 22 253:99 / /srv rw,relatime shared:60 - ext4 ${node} rw\n`);
    expect(inUse({ path: node, sysfs: sysfsOf('dm-7', devno) }, files)).toBeNull();
  });

  it('a mount of 253:99 whose source string is /dev/<this device name> does not make this device (259:0) mounted', () => {
    fs.writeFileSync(files.mountinfo, '98 22 253:99 / /srv rw,relatime shared:60 - xfs /dev/ublkb0 rw\n');
    expect(inUse({ path: '/dev/ublkb0', sysfs: sysfsOf('ublkb0', '259:0') }, files)).toBeNull();
  });

  it('still: btrfs (anonymous 0:N superblock) naming this device as its source is a mount of it', () => {
    fs.writeFileSync(files.mountinfo, '98 22 0:52 / /srv rw,relatime shared:60 - btrfs /dev/ublkb0 rw,subvolid=5,subvol=/\n');
    expect(inUse({ path: '/dev/ublkb0', sysfs: sysfsOf('ublkb0', '259:0') }, files)).toMatchObject({ kind: 'mounted', where: '/srv' });
  });
});
