// Discard and write-zeroes over a failing main (README "Discard and write-zeroes"), against dm tables with
// `error` segments (test/e2e/error-sources.ts) and the daemon with auto-remap on:
// - a write-zeroes is a write: over a bad block it is redirected to a spare slot like any write, a
//   remapped block's zeros go to its slot, and the zeroed range reads back as zeros;
// - mkfs.ext4 with and without -E nodiscard succeeds over a main with 80 error segments, fsck is clean;
// - a discard leaves a remapped block's data in its slot and never heals a pending (lost) block;
// - a discard main refuses is no write error (errors=W unchanged), counted as ioErrors.discardsRefused;
// - a discard main takes slowly (dm-delay) does not hold up reads on the same queue;
// - and the kernel logs no error for the device meanwhile.
// About 1 to 2 minutes in the TCG VM.
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import type { Stats } from '../../src/control/protocol.js';
import { addForeground, dmr, pidAlive, RUN_DIR, sh, ublkNodes, waitFor, type Added, type ForegroundDaemon } from './helpers.js';
import { directRead, ErrorSources, leftoverDmDevices, scatterSegments } from './error-sources.js';
import { expectCleanKernel, requireUblkHost } from './setup.js';

const BS = 4096;
const SPB = BS / 512;

interface Entry {
  block: number;
  slot: number;
  state: 'mapped' | 'lost';
}

let dir = '';
let src: ErrorSources;
let daemon: ForegroundDaemon | null = null;
let dmesgBefore = 0;
/** dm devices a test made itself (not through ErrorSources): removed before the error sources. */
let ownDm: string[] = [];

beforeAll(requireUblkHost);
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-discard-'));
  src = new ErrorSources();
  dmesgBefore = dmesgLines().length;
  ownDm = [];
});
afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail' && daemon) console.log(daemon.log.slice(-40).join('\n'));
  try {
    await stopDaemon();
  } finally {
    for (const name of ownDm) run('dmsetup', ['remove', '--retry', name]);
    src.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  expectCleanKernel();
  expect(leftoverDmDevices()).toEqual([]);
});

/** `add --foreground --json` (auto-remap on by default); resolves once the device is live. */
async function add(main: string, spare: string, extra: string[] = []): Promise<Added> {
  daemon = await addForeground(main, spare, path.join(dir, 'state'), ['--block-size', String(BS), ...extra]);
  return daemon.dev;
}

async function stopDaemon(): Promise<void> {
  if (!daemon) return;
  const { dev, child } = daemon;
  daemon = null;
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  try {
    await waitFor(`daemon ${dev.pid} to stop`, () => !pidAlive(dev.pid) && !fs.existsSync(dev.blockPath), 60_000);
  } catch {
    child.kill('SIGKILL');
    dmr('del', String(dev.devId));
  }
  if (ublkNodes().length > 0) dmr('del', String(dev.devId));
}

const sock = (d: Added) => path.join(RUN_DIR, `${d.devId}.sock`);

/** Stats once nothing is parked, queued or running. */
async function drained(d: Added): Promise<Stats> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const st = await request(sock(d), 'stats', {});
    if (st.queue.queued + st.queue.running === 0 && st.faultsParked === 0) return st;
    if (Date.now() > deadline) throw new Error(`the fault queue did not drain: ${JSON.stringify(st.queue)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function tableOf(d: Added): Promise<Entry[]> {
  return (await request(sock(d), 'table', { offset: 0, limit: 100_000 })).entries as Entry[];
}

function dmesgLines(): string[] {
  return sh('dmesg', []).stdout.split('\n');
}

/** Kernel log lines since the test began that report an error for the device (I/O error, not supported...). */
function deviceErrorsInKernelLog(d: Added): string[] {
  const name = path.basename(d.blockPath);
  return dmesgLines()
    .slice(dmesgBefore)
    .filter((l) => l.includes(name) && /error|not supported|fail/i.test(l));
}

function run(cmd: string, args: string[], timeoutMs = 300_000): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

/**
 * One O_DIRECT write request of `data` at block `at`, from a file: dd reading a pipe (directWrite) may get
 * less than a large block in one read and write only that.
 */
function writeBlocks(dev: string, at: number, data: Buffer): void {
  const file = path.join(dir, `data-${crypto.randomUUID()}`);
  fs.writeFileSync(file, data);
  const r = run('dd', [`if=${file}`, `of=${dev}`, `bs=${data.length}`, 'count=1', `seek=${at * BS}`, 'iflag=fullblock', 'oflag=direct,seek_bytes', 'conv=notrunc', 'status=none']);
  fs.rmSync(file);
  expect(r.status, r.out).toBe(0);
}

const queueAttr = (d: Added, attr: string): number =>
  Number(fs.readFileSync(`/sys/block/${path.basename(d.blockPath)}/queue/${attr}`, 'utf8').trim());

describe('write-zeroes over a failing main', () => {
  it('blkdiscard -z over bad blocks (remapped and not) succeeds and the range reads back as zeros', async () => {
    // Block 100 wholly bad, block 103 partly (3 of its sectors), block 200 wholly bad.
    const main = src.dmError(16, [
      { start: 100 * SPB, sectors: SPB },
      { start: 103 * SPB + 2, sectors: 3 },
      { start: 200 * SPB, sectors: SPB },
    ]);
    const d = await add(main.path, src.loop(8));
    // Write-zeroes is advertised whatever main offers, bounded by one request's buffer.
    expect(queueAttr(d, 'write_zeroes_max_bytes')).toBeGreaterThan(0);
    // Data over 96..111: blocks 100 and 103 fail on main and are redirected to slots (remapped).
    const data = crypto.randomBytes(16 * BS);
    writeBlocks(d.blockPath, 96, data);
    expect(directRead(d.blockPath, 96, 16).data.equals(data)).toBe(true);
    await drained(d);
    expect((await tableOf(d)).map((e) => e.block)).toEqual([100, 103]);

    // Zero 96..207: the remapped blocks' zeros go to their slots; block 200, never written, fails on
    // main as a write would and is redirected too. The user sees success.
    const z = run('blkdiscard', ['-z', '-o', String(96 * BS), '-l', String((208 - 96) * BS), d.blockPath]);
    expect(z.status, z.out).toBe(0);
    const back = directRead(d.blockPath, 96, 208 - 96);
    expect(back.ok, back.stderr).toBe(true);
    expect(back.data.equals(Buffer.alloc((208 - 96) * BS))).toBe(true);
    const st = await drained(d);
    expect(st).toMatchObject({ lostBlocks: 0, pendingBlocks: 0, passedThrough: 0 });
    const table = await tableOf(d);
    expect(table.map((e) => [e.block, e.state])).toEqual([
      [100, 'mapped'],
      [103, 'mapped'],
      [200, 'mapped'],
    ]);
    // Still zeros after the daemon settled (reads now come from the slots).
    expect(directRead(d.blockPath, 200, 1).data.equals(Buffer.alloc(BS))).toBe(true);
    expect(deviceErrorsInKernelLog(d)).toEqual([]);
  });

  it('mkfs.ext4 with and without -E nodiscard over a 256 MiB main with 80 error segments; fsck is clean', async () => {
    const sectors = (256 << 20) / 512;
    // Away from the first and last MiB, which mkfs and blkid probe by reading.
    const bad = scatterSegments({ seed: 11, count: 80, from: 2048, to: sectors - 2048, minSectors: 1, maxSectors: 16 });
    const main = src.dmError(256, bad);
    const d = await add(main.path, src.loop(32));
    for (const args of [['-E', 'nodiscard'], []]) {
      const mk = run('mkfs.ext4', ['-F', '-q', ...args, d.blockPath]);
      expect(mk.status, `mkfs.ext4 ${args.join(' ')}: ${mk.out}`).toBe(0);
      const fsck = run('fsck.ext4', ['-fn', d.blockPath]);
      expect(fsck.status, `fsck after mkfs.ext4 ${args.join(' ')}: ${fsck.out}`).toBe(0);
    }
    const st = await drained(d);
    expect(st).toMatchObject({ lostBlocks: 0, pendingBlocks: 0, passedThrough: 0 });
    expect(st.autoRemaps).toBeGreaterThan(0); // the bad blocks mkfs wrote were redirected
    // mkfs discarded the device: main (error segments) refused some of it, which counts apart.
    const before = await request(sock(d), 'status', {});
    expect(before.ioErrors.discardsRefused).toBeGreaterThan(0);
    expect(before.ioErrors.total).toBe(0);
    // A discard of the whole device over the 80 error segments: refused in part, never a write error.
    const dis = run('blkdiscard', [d.blockPath]);
    expect(dis.status, dis.out).toBe(0);
    const after = await drained(d);
    const status = await request(sock(d), 'status', {});
    expect(after.writeErrors).toBe(st.writeErrors);
    expect(status.remap.line).toContain(` errors=W${st.writeErrors}:R${st.readErrors} `);
    expect(status.ioErrors.discardsRefused).toBeGreaterThan(before.ioErrors.discardsRefused);
    expect(status.ioErrors.total).toBe(0);
    expect(deviceErrorsInKernelLog(d)).toEqual([]);
  });
});

describe('regular files as main and spare', () => {
  it('on tmpfs (no fallocate ZERO_RANGE there) write-zeroes falls back to writes of zeros; a discard punches a hole', async () => {
    const main = path.join(dir, 'main.img');
    const spare = path.join(dir, 'spare.img');
    fs.writeFileSync(main, '');
    fs.truncateSync(main, 16 << 20);
    fs.writeFileSync(spare, '');
    fs.truncateSync(spare, 8 << 20);
    const d = await add(main, spare);
    expect(queueAttr(d, 'discard_max_bytes')).toBeGreaterThan(0); // a file takes a punched hole
    const data = crypto.randomBytes(64 * BS);
    writeBlocks(d.blockPath, 0, data);
    const z = run('blkdiscard', ['-z', '-o', String(16 * BS), '-l', String(16 * BS), d.blockPath]);
    expect(z.status, z.out).toBe(0);
    const dis = run('blkdiscard', ['-o', String(40 * BS), '-l', String(8 * BS), d.blockPath]);
    expect(dis.status, dis.out).toBe(0);
    const back = directRead(d.blockPath, 0, 64);
    expect(back.ok, back.stderr).toBe(true);
    expect(back.data.subarray(0, 16 * BS).equals(data.subarray(0, 16 * BS))).toBe(true);
    expect(back.data.subarray(16 * BS, 32 * BS).equals(Buffer.alloc(16 * BS))).toBe(true);
    expect(back.data.subarray(32 * BS, 40 * BS).equals(data.subarray(32 * BS, 40 * BS))).toBe(true);
    expect(back.data.subarray(48 * BS).equals(data.subarray(48 * BS))).toBe(true);
    // The zeros are in main's file, and the discarded range is a hole there (tmpfs reads holes as zeros).
    const onMain = fs.readFileSync(main).subarray(0, 64 * BS);
    expect(onMain.subarray(16 * BS, 32 * BS).equals(Buffer.alloc(16 * BS))).toBe(true);
    expect(onMain.subarray(40 * BS, 48 * BS).equals(Buffer.alloc(8 * BS))).toBe(true);
    const st = await drained(d);
    expect(st).toMatchObject({ writeErrors: 0, readErrors: 0, autoRemaps: 0 });
    expect(deviceErrorsInKernelLog(d)).toEqual([]);
  });
});

describe('discard over remapped and pending blocks', () => {
  it('leaves a remapped block its data and a pending block unreadable (never heals it)', async () => {
    const main = src.dmError(16, [
      { start: 50 * SPB, sectors: SPB },
      { start: 60 * SPB, sectors: SPB },
    ]);
    const d = await add(main.path, src.loop(8));
    // main (linear + error over loop) takes discards here, so the device advertises them.
    expect(queueAttr(d, 'discard_max_bytes')).toBeGreaterThan(0);
    // Block 50: never written, unreadable: the read fails every retry and the block becomes pending.
    expect(directRead(d.blockPath, 50).errno).toBe('EIO');
    await drained(d);
    // Block 60: written, redirected to a slot.
    const data = crypto.randomBytes(BS);
    writeBlocks(d.blockPath, 60, data);
    await drained(d);
    expect((await tableOf(d)).map((e) => [e.block, e.state])).toEqual([
      [50, 'lost'],
      [60, 'mapped'],
    ]);

    const r = run('blkdiscard', ['-o', String(48 * BS), '-l', String(16 * BS), d.blockPath]);
    expect(r.status, r.out).toBe(0);
    const st = await drained(d);
    // The pending block stays pending: reads still fail, nothing was committed for it.
    expect(directRead(d.blockPath, 50).errno).toBe('EIO');
    expect(st).toMatchObject({ pendingBlocks: 1, lostBlocks: 1 }); // one block: pending is lost of origin auto
    expect((await tableOf(d)).map((e) => [e.block, e.state])).toEqual([
      [50, 'lost'],
      [60, 'mapped'],
    ]);
    // The remapped block keeps its data: the discard left its slot alone.
    expect(directRead(d.blockPath, 60).data.equals(data)).toBe(true);
    expect(deviceErrorsInKernelLog(d).filter((l) => !/ublkb\d+, .*READ|Buffer I\/O error/.test(l))).toEqual([]);
  });
});

describe('a slow discard', () => {
  it('does not hold up reads on the same queue (main: dm-delay, discards delayed 15 s)', async () => {
    const backing = src.loop(16);
    const sectors = (16 << 20) / 512;
    // Reads pass at once; writes and discards (a discard is a write to dm-delay) wait 15 s: far longer than
    // the reads below take in the TCG VM (a second or two), so they end first unless the discard blocks them.
    const mod = run('modprobe', ['dm_delay']); // not preloaded in the VM, and the kernel does not load it on demand there
    expect(mod.status, mod.out).toBe(0);
    const name = `dmr-es-delay-${process.pid}-${Date.now().toString(36)}`;
    const mk = spawnSync('dmsetup', ['create', name], { input: `0 ${sectors} delay ${backing} 0 0 ${backing} 0 15000\n`, encoding: 'utf8' });
    expect(mk.status, `dmsetup create: ${mk.stderr}`).toBe(0);
    ownDm.push(name);
    sh('dmsetup', ['mknodes', name]);
    const d = await add(`/dev/mapper/${name}`, src.loop(8), ['--queues', '1']);
    expect(queueAttr(d, 'discard_max_bytes')).toBeGreaterThan(0);
    // 16 O_DIRECT preads (not dd: dd lseeks the device, and the kernel holds an lseek of the device
    // behind the BLKDISCARD ioctl that blkdiscard is in, whatever the daemon does).
    const reads = [
      '-c',
      `import mmap, os\nfd = os.open(${JSON.stringify(d.blockPath)}, os.O_RDONLY | os.O_DIRECT)\nb = mmap.mmap(-1, ${BS})\n` +
        `for i in range(16):\n    assert os.preadv(fd, [b], i * ${BS}) == ${BS}\n`,
    ];
    // Baseline: the same reads with nothing else going on.
    let t0 = Date.now();
    const alone = run('python3', reads);
    expect(alone.status, alone.out).toBe(0);
    const baselineMs = Date.now() - t0;

    // One discard request (1 MiB, below the device's discard limit) in the background.
    t0 = Date.now();
    const discard = spawn('blkdiscard', ['-o', String(256 * BS), '-l', String(256 * BS), d.blockPath], { stdio: 'ignore' });
    const discardExit = new Promise<number | null>((resolve) => discard.on('exit', (code) => resolve(code)));
    const inflight = async () => (await request(sock(d), 'status', {})).io;
    for (let io = await inflight(); !(io.discards >= 1 && io.inflight >= 1); io = await inflight()) {
      if (Date.now() - t0 > 30_000) throw new Error(`the discard never showed in flight: ${JSON.stringify(io)}`);
      await new Promise((res) => setTimeout(res, 50));
    }
    const r = run('python3', reads, 60_000);
    const readsMs = Date.now() - t0;
    expect(r.status, r.out).toBe(0);
    // The reads were served while the discard still waited in dm-delay (the device still has it in
    // flight): the queue thread was not blocked by it. Blocked, the reads would have waited for its end.
    const io = await inflight();
    expect(io.inflight, `reads took ${readsMs} ms (${baselineMs} ms alone); discard exited: ${String(discard.exitCode)}`).toBe(1);
    expect(await discardExit).toBe(0);
    expect((await request(sock(d), 'status', {})).ioErrors).toMatchObject({ total: 0, discardsRefused: 0 });
    expect(deviceErrorsInKernelLog(d)).toEqual([]);
  });
});
