// What `del` / `down` (device/in-use.ts ublkDeviceInUse, over claim.ts inUse) must see as a mount of a ublk
// device beyond a mountinfo line whose device number is the device's: a file system whose superblock has an
// anonymous device number (btrfs: every subvolume gets one, so /proc/self/mountinfo shows 0:N in field 3 and
// names the device only as the mount source after " - "), and mount points the kernel escapes (\040 \011 \012
// \134, octal) named as they are. The fake addon's config gives the device a sysfs directory and the mount
// table to read (vitest only), as in del-in-use.test.ts.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ublkDeviceInUse } from '../../src/device/in-use.js';

let root: string;
let mountinfo: string;
let env: NodeJS.ProcessEnv;
let sysBlock: string;
let fake: Record<string, unknown>;

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-inuse-'));
  const dir = path.join(root, 'sys', 'ublkb0');
  fs.mkdirSync(path.join(dir, 'holders'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'dev'), '259:0\n');
  mountinfo = path.join(root, 'mountinfo');
  const swaps = path.join(root, 'swaps');
  fs.writeFileSync(swaps, 'Filename\tType\tSize\tUsed\tPriority\n');
  sysBlock = path.join(root, 'sys-block');
  fs.mkdirSync(sysBlock);
  fake = { blockSysfs: { 0: dir }, mountinfo, swaps, sysBlock };
  env = { VITEST: 'true', DMREMAP_FAKE_NATIVE: JSON.stringify(fake) };
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

describe('ublkDeviceInUse: mounts the device number alone does not show', () => {
  it('a btrfs file system mounted on /dev/ublkb0 (mountinfo: anonymous 0:N, the device as the mount source) is in use', () => {
    // As the kernel writes it for `mount /dev/ublkb0 /srv` of a btrfs file system: no holders link, no 259:0.
    fs.writeFileSync(
      mountinfo,
      '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n' +
        '98 22 0:52 / /srv rw,relatime shared:60 - btrfs /dev/ublkb0 rw,space_cache=v2,subvolid=5,subvol=/\n',
    );
    expect(ublkDeviceInUse(0, env)).toMatchObject({ kind: 'mounted', where: '/srv', partition: null });
  });
});

describe('ublkDeviceInUse: the mount point as it is named', () => {
  it('a mount point holding a backslash or a tab (mountinfo \\134, \\011) is named with them, not their escapes', () => {
    fs.writeFileSync(mountinfo, '98 22 259:0 / /srv/a\\134b\\011c rw,relatime shared:60 - ext4 /dev/ublkb0 rw\n');
    expect(ublkDeviceInUse(0, env)).toMatchObject({ kind: 'mounted', where: '/srv/a\\b\tc' });
  });
});

describe('ublkDeviceInUse: users that are neither mounts, holders nor swap', () => {
  it('a loop device whose backing file is /dev/ublkb0 (losetup of the device: no holders link, its own devno) is in use', () => {
    fs.writeFileSync(mountinfo, '');
    fs.mkdirSync(path.join(sysBlock, 'loop3', 'loop'), { recursive: true });
    fs.writeFileSync(path.join(sysBlock, 'loop3', 'loop', 'backing_file'), '/dev/ublkb0\n');
    fs.mkdirSync(path.join(sysBlock, 'loop4', 'loop'), { recursive: true });
    fs.writeFileSync(path.join(sysBlock, 'loop4', 'loop', 'backing_file'), '/dev/ublkb01\n'); // not ours
    expect(ublkDeviceInUse(0, env)).toMatchObject({ kind: 'loop', where: '/dev/loop3', reason: 'is the backing device of /dev/loop3' });
  });

  it('held exclusively by a program nothing names (an exclusive open fails: EBUSY) is in use, found only when the daemon serves it (probe)', () => {
    fs.writeFileSync(mountinfo, '');
    const busy = { VITEST: 'true', DMREMAP_FAKE_NATIVE: JSON.stringify({ ...fake, exclusiveBusy: [0] }) };
    expect(ublkDeviceInUse(0, busy, true)).toMatchObject({ kind: 'open', partition: null });
    // A quiesced device is not opened (its I/O would wait for a daemon): what the tables say is all.
    expect(ublkDeviceInUse(0, busy, false)).toBeNull();
    expect(ublkDeviceInUse(0, env, true)).toBeNull();
  });

  it('a newline in a mount point stays written as \\012: the refusal is one line', () => {
    fs.writeFileSync(mountinfo, '98 22 259:0 / /srv/a\\012b rw,relatime shared:60 - ext4 /dev/ublkb0 rw\n');
    expect(ublkDeviceInUse(0, env)).toMatchObject({ kind: 'mounted', where: '/srv/a\\012b' });
  });
});
