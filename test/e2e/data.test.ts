// Data integrity through /dev/ublkbN: fio with crc32c verification over the whole device, and an ext4
// file system that survives unmount, fsck and remount with every file's checksum intact; `del` refuses a
// device whose file system is mounted, that a program holds exclusively or a loop device sits on (it keeps
// serving), and `del --force` deletes it under the mount.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { addDevice, addForeground, BIN, dmr, must, parseFio, pidAlive, sh, ublkNodes, waitFor } from './helpers.js';
import { scratchPerTest } from './setup.js';

const s = scratchPerTest();

describe('data integrity', () => {
  it('fio: random writes of 4k-1M at QD32 over the whole device on two queues verify with crc32c', () => {
    const dev = addDevice(s.loop(256), s.loop(64), '--queues', '2');
    const r = sh('fio', [
      '--name=verify',
      `--filename=${dev.blockPath}`,
      '--rw=randwrite',
      '--bsrange=4k-1m',
      '--iodepth=32',
      '--ioengine=io_uring',
      '--direct=1',
      '--size=100%',
      '--verify=crc32c',
      '--verify_fatal=1',
      '--do_verify=1',
      '--output-format=json',
    ]);
    const fio = parseFio(r.status, r.stdout);
    expect(r.status, r.stderr).toBe(0);
    expect(fio.errors).toEqual([0]);
    expect(fio.writeBytes).toBe(256 << 20);
    expect(fio.readBytes).toBe(256 << 20); // the verify pass read everything back

    const st = JSON.parse(dmr('status', dev.blockPath, '--json').stdout) as {
      queues: number;
      io: { errors: number; writes: number; reads: number };
      ioErrors: { total: number };
    };
    expect(st.queues).toBe(2);
    expect(st.io.errors).toBe(0);
    expect(st.ioErrors.total).toBe(0);
    expect(st.io.writes).toBeGreaterThan(0);
    expect(st.io.reads).toBeGreaterThan(0);
    expect(dmr('del', dev.blockPath).status).toBe(0);
  });

  it('ext4: mkfs, write a tree, fsck clean, remount, checksums match', () => {
    const dev = addDevice(s.loop(256), s.loop(64), '--queues', '2', '--name', 'fs');
    must('mkfs.ext4', ['-q', '-F', dev.blockPath]);
    let mnt = s.mount(dev.blockPath);

    const sums = new Map<string, string>();
    for (let d = 0; d < 6; d++) {
      const dir = path.join(mnt, `dir${d}`, `sub${d % 3}`);
      fs.mkdirSync(dir, { recursive: true });
      for (let f = 0; f < 30; f++) {
        const data = crypto.randomBytes(crypto.randomInt(0, 512 << 10));
        const rel = path.relative(mnt, path.join(dir, `file${f}.bin`));
        fs.writeFileSync(path.join(mnt, rel), data);
        sums.set(rel, crypto.createHash('sha256').update(data).digest('hex'));
      }
    }
    s.umount(mnt);
    const fsck = sh('fsck.ext4', ['-fn', dev.blockPath]);
    expect(fsck.status, fsck.stdout + fsck.stderr).toBe(0);

    mnt = s.mount(dev.blockPath);
    for (const [rel, sum] of sums) {
      expect(crypto.createHash('sha256').update(fs.readFileSync(path.join(mnt, rel))).digest('hex'), rel).toBe(sum);
    }
    s.umount(mnt);
    expect(dmr('del', 'fs').status).toBe(0);
  });

  it('ext4 mounted, an exclusive holder, a loop device on it: del is refused and the device still serves; del --force deletes it under the mount', async () => {
    const d = await addForeground(s.loop(64), s.loop(16), s.dir, ['--name', 'busy']);
    const dev = d.dev.blockPath;
    must('mkfs.ext4', ['-q', '-F', dev]);
    let mnt = s.mount(dev);
    const data = crypto.randomBytes(256 << 10);
    fs.writeFileSync(path.join(mnt, 'f'), data);
    must('sync', []);
    const refused = dmr('del', 'busy');
    expect([refused.status, refused.stdout, refused.stderr]).toEqual([1, '', `dmremap-ublk: ${dev} (busy) is mounted on ${mnt}; unmount it first, or use --force to delete it under its users\n`]);
    // Nothing changed: the same daemon serves the device, and the file reads back from it (not the cache).
    expect(pidAlive(d.dev.pid)).toBe(true);
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    expect(fs.readFileSync(path.join(mnt, 'f')).equals(data)).toBe(true);
    // Users the mount table does not name. A program holding it exclusively (as btrfs's other devices, an
    // external journal or ZFS would): found by del's one exclusive open of the device its daemon serves.
    s.umount(mnt);
    const holder = spawn('python3', ['-c', 'import os,sys,time; os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL); print("held", flush=True); time.sleep(120)', dev], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.on('data', () => resolve());
        holder.on('exit', (code) => reject(new Error(`the exclusive holder exited with ${code}`)));
      });
      const held = dmr('del', 'busy');
      expect([held.status, held.stderr]).toEqual([1, `dmremap-ublk: ${dev} (busy) is open exclusively by another program (a file system, journal or export that is not in the mount table as this device); close it first, or use --force to delete it under its users\n`]);
    } finally {
      holder.kill('SIGKILL');
    }
    await new Promise((r) => holder.once('close', r));
    // A loop device over it (it opens its backing device without a claim: no holders link, its own devno).
    const loop = must('losetup', ['-f', '--show', dev]).trim();
    try {
      const looped = dmr('del', 'busy');
      expect([looped.status, looped.stderr]).toEqual([1, `dmremap-ublk: ${dev} (busy) is the backing device of ${loop}; detach ${loop} first, or use --force to delete it under its users\n`]);
    } finally {
      must('losetup', ['-d', loop]);
    }
    expect(pidAlive(d.dev.pid)).toBe(true);
    mnt = s.mount(dev);
    // --force: the nodes go at once (the file system loses its disk); the kernel's DEL_DEV, which the daemon
    // and del wait for, completes once the file system lets go of the device: unmounted here, not lazily.
    const forced = spawn(process.execPath, [BIN, 'del', 'busy', '--force'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    forced.stdout.on('data', (b: Buffer) => (out += b.toString()));
    forced.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number | null>((r) => forced.on('exit', (code) => r(code)));
    await waitFor('the device nodes to go', () => ublkNodes().length === 0, 30_000);
    s.umount(mnt);
    expect([await exited, out]).toEqual([0, `removed ${dev}\n`]);
    await waitFor('the daemon to exit', () => !pidAlive(d.dev.pid), 30_000);
    expect(d.log.join('\n')).toContain(`"msg":"deleting ${dev} while mounted on ${mnt}: its file system loses its disk; the kernel deletes it only once ${mnt} is unmounted"`);
  });
});
