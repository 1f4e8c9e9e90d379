// Fault parking in the native data path, driven through the addon directly over a real error source: main
// is a device-mapper table of `linear` segments with `error` blocks between them (EIO on reads and writes).
// A failed read or write is held in native and reported as io_fault until resolveFault() says retry, fail
// or complete; a write to a LOST block lands in its slot and is held (lost_written) until TypeScript has
// committed the block; a stopping device completes every held request. The I/O runs in child processes
// (dd, O_DIRECT) so that this thread stays free to receive the events and resolve them.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { NativeAddon, NativeDevice, NativeEvent } from '../../src/native.js';
import { must, readAt, REPO, sh, ublkNodes } from './helpers.js';
import { expectCleanKernel, requireUblkHost } from './setup.js';

const native = createRequire(import.meta.url)(path.join(REPO, 'build/Release/dmremap_native.node')) as NativeAddon;
const BS = 4096;
const MAIN_BLOCKS = 4096; // 16 MiB
const SPARE_DATA = 1 << 20; // slot 0 starts 1 MiB into the spare
const EIO = 5;
const LOST = 1;
// Blocks of main that fail (dm `error` segments), one group per test so that the tests stay independent.
const BAD = { failWrite: 100, heal: 150, narrow: [202, 205], read: 300, stop: 400, parkingOff: 500, zeroes: 700 };
const BAD_BLOCKS = [BAD.failWrite, BAD.heal, ...BAD.narrow, BAD.read, BAD.stop, BAD.parkingOff, BAD.zeroes];
const ZERO_COPY_FEATURE = 1n << 11n; // UBLK_F_AUTO_BUF_REG

type Fault = Extract<NativeEvent, { type: 'io_fault' }>;

let dir = '';
let mainLoop = '';
let spareLoop = '';
const dmName = `dmr-fault-${process.pid}`;
const mainDev = `/dev/mapper/${dmName}`;
const children: ChildProcess[] = [];
let device: NativeDevice | undefined;
let events: NativeEvent[] = [];
// Retries reuse the request's buffer: in copy mode ours, in zero copy mode (where the kernel has it) the
// request's own pages, registered until the commit.
const zeroCopyModes = (native.probe().features & ZERO_COPY_FEATURE) !== 0n ? [false, true] : [false];

beforeAll(() => {
  requireUblkHost();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-fault-'));
  const loop = (name: string, mib: number) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, mib << 20);
    return must('losetup', ['-f', '--show', '--direct-io=on', file]).trim();
  };
  mainLoop = loop('main.img', MAIN_BLOCKS * BS >> 20);
  spareLoop = loop('spare.img', 4);
  // linear over the loop device, with a one-block `error` segment at each bad block (sectors of 512).
  const spb = BS / 512;
  const lines: string[] = [];
  let at = 0;
  for (const b of [...BAD_BLOCKS].sort((x, y) => x - y)) {
    if (b * spb > at) lines.push(`${at} ${b * spb - at} linear ${mainLoop} ${at}`);
    lines.push(`${b * spb} ${spb} error`);
    at = (b + 1) * spb;
  }
  lines.push(`${at} ${MAIN_BLOCKS * spb - at} linear ${mainLoop} ${at}`);
  const r = spawnSync('dmsetup', ['create', dmName], { input: lines.join('\n') + '\n', encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  must('dmsetup', ['mknodes', dmName]);
  expect(fs.existsSync(mainDev)).toBe(true);
});

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await device?.stop();
  device = undefined;
  expectCleanKernel();
});

afterAll(() => {
  if (fs.existsSync(mainDev)) sh('dmsetup', ['remove', dmName]);
  for (const l of [mainLoop, spareLoop]) if (l) sh('losetup', ['-d', l]);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function start(opts: { parkFaults?: boolean; zeroCopy?: boolean } = {}): Promise<string> {
  events = [];
  device = new native.Device({
    mainPath: mainDev,
    sparePath: spareLoop,
    queues: 2,
    depth: 16,
    blockSize: BS,
    sizeBytes: BigInt(MAIN_BLOCKS * BS),
    maxIoBytes: 256 * 1024,
    discard: false,
    devId: -1,
    spareDataOffset: BigInt(SPARE_DATA),
    zeroCopy: opts.zeroCopy ?? false,
    parkFaults: opts.parkFaults,
    onEvent: (e) => events.push(e),
  });
  const info = await device.start();
  expect(info.zeroCopy).toBe(opts.zeroCopy ?? false);
  return info.blockPath;
}

interface Dd {
  code: number | null;
  stderr: string;
  data: Buffer;
}

function dd(args: string[]): Promise<Dd> {
  return new Promise((resolve) => {
    const c = spawn('dd', [...args, 'status=none'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(c);
    const out: Buffer[] = [];
    let err = '';
    c.stdout.on('data', (d: Buffer) => out.push(d));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('close', (code) => resolve({ code, stderr: err, data: Buffer.concat(out) }));
  });
}

/** One O_DIRECT write request of data.length bytes at `block`. */
function write(dev: string, block: number, data: Buffer): Promise<Dd> {
  const file = path.join(dir, `w-${crypto.randomUUID()}`);
  fs.writeFileSync(file, data);
  return dd([`if=${file}`, `of=${dev}`, `bs=${data.length}`, 'count=1', `seek=${block * BS}`, 'oflag=direct,seek_bytes', 'conv=notrunc']);
}

/** One O_DIRECT read request of `blocks` blocks at `block`. */
function read(dev: string, block: number, blocks: number): Promise<Dd> {
  return dd([`if=${dev}`, `bs=${blocks * BS}`, 'count=1', `skip=${block * BS}`, 'iflag=direct,skip_bytes']);
}

async function until<T>(what: string, find: () => T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = find();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; events: ${JSON.stringify(events)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The next io_fault with this attempt number. */
function fault(attempt: number): Promise<Fault> {
  return until(`io_fault attempt ${attempt}`, () =>
    events.find((e): e is Fault => e.type === 'io_fault' && e.attempt === attempt),
  );
}

function table(entries: [block: number, slot: number, flags: number][]): [BigUint64Array, BigUint64Array, Uint8Array] {
  return [
    BigUint64Array.from(entries.map((e) => BigInt(e[0]))),
    BigUint64Array.from(entries.map((e) => BigInt(e[1]))),
    Uint8Array.from(entries.map((e) => e[2])),
  ];
}

const ioErrors = () => events.filter((e) => e.type === 'io_error');

describe('fault parking in the native data path', () => {
  it('parks a failed write as io_fault; a stale resolve is ignored, fail completes it with the errno', async () => {
    const dev = await start({ parkFaults: true });
    const w = write(dev, BAD.failWrite, crypto.randomBytes(BS));
    const f = await fault(0);
    expect(f).toMatchObject({
      op: 'write',
      kind: 'error',
      block: BAD.failWrite,
      blocks: 1,
      failed: [{ device: 'main', block: BAD.failWrite, blocks: 1, errno: EIO }],
      written: [],
    });
    expect(typeof f.seq).toBe('number');
    expect(f.latencyUs).toBeGreaterThanOrEqual(0);
    // Held out of drains; the writer still waits.
    await device!.drain();
    // Bad arguments throw; a resolve with another seq (or to a tag that is not faulted) is ignored.
    expect(() => device!.resolveFault(99, f.tag, f.seq, { action: 'fail', errno: EIO })).toThrow(RangeError);
    expect(() => device!.resolveFault(f.queue, f.tag, f.seq, { action: 'nope' } as never)).toThrow(TypeError);
    expect(() => device!.resolveFault(f.queue, f.tag, f.seq, { action: 'fail', errno: 0 })).toThrow(RangeError);
    expect(() => device!.setFaultParking('yes' as never)).toThrow(TypeError);
    device!.resolveFault(f.queue, f.tag, f.seq + 1, { action: 'fail', errno: 28 });
    device!.resolveFault(f.queue, (f.tag + 1) % 16, f.seq, { action: 'fail', errno: 28 });
    let settled = false;
    void w.then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 200));
    expect(settled).toBe(false); // still parked
    device!.resolveFault(f.queue, f.tag, f.seq, { action: 'fail', errno: EIO });
    const r = await w;
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Input\/output error/);
    expect(ioErrors()).toEqual([]);
    expect(events.filter((e) => e.type === 'fault_cleared')).toEqual([]);
  });

  it.each(zeroCopyModes)('heals a failed write: remap LOST, retry -> lost_written -> commit -> complete (zero copy %s)', async (zeroCopy) => {
    const dev = await start({ parkFaults: true, zeroCopy });
    const first = BAD.heal - 2;
    const data = crypto.randomBytes(4 * BS);
    const w = write(dev, first, data);
    const f0 = await fault(0);
    expect(f0).toMatchObject({ kind: 'error', block: first, blocks: 4, failed: [{ device: 'main', block: first, blocks: 4, errno: EIO }] });
    // TypeScript's side: the bad block gets a slot, its contents lost until written.
    device!.setRemapTable(...table([[BAD.heal, 3, LOST]]));
    device!.resolveFault(f0.queue, f0.tag, f0.seq, { action: 'retry' });
    const f1 = await fault(1);
    expect(f1).toMatchObject({
      tag: f0.tag,
      seq: f0.seq,
      op: 'write',
      kind: 'lost_written',
      block: first,
      blocks: 4,
      failed: [],
      written: [{ block: BAD.heal, blocks: 1, slot: 3 }],
    });
    // The data is in the slot before the write is acknowledged.
    expect(readAt(spareLoop, SPARE_DATA + 3 * BS, BS).equals(data.subarray(2 * BS, 3 * BS))).toBe(true);
    device!.setRemapTable(...table([[BAD.heal, 3, 0]]));
    device!.resolveFault(f1.queue, f1.tag, f1.seq, { action: 'complete' });
    const r = await w;
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const cleared = await until('fault_cleared', () => events.find((e) => e.type === 'fault_cleared'));
    expect(cleared).toEqual({ type: 'fault_cleared', queue: f0.queue, tag: f0.tag, seq: f0.seq, attempts: 2 });
    const back = await read(dev, first, 4);
    expect(back.code).toBe(0);
    expect(back.data.equals(data)).toBe(true);
    expect(ioErrors()).toEqual([]);
  });

  it('lost_written names the slot each block went to, split where the slots are not consecutive', async () => {
    const dev = await start({ parkFaults: true });
    // LOST blocks 600 -> slot 7, 601 -> 12, 602 -> 13 (none on a bad block of main); 603 stays on main.
    device!.setRemapTable(...table([[600, 7, LOST], [601, 12, LOST], [602, 13, LOST]]));
    const data = crypto.randomBytes(4 * BS);
    const w = write(dev, 600, data);
    const f = await fault(0);
    expect(f).toMatchObject({ op: 'write', kind: 'lost_written', block: 600, blocks: 4, failed: [] });
    expect(f.written).toEqual([
      { block: 600, blocks: 1, slot: 7 },
      { block: 601, blocks: 2, slot: 12 },
    ]);
    for (const [i, slot] of [[0, 7], [1, 12], [2, 13]] as const) {
      expect(readAt(spareLoop, SPARE_DATA + slot * BS, BS).equals(data.subarray(i * BS, (i + 1) * BS))).toBe(true);
    }
    device!.setRemapTable(...table([[600, 7, 0], [601, 12, 0], [602, 13, 0]]));
    device!.resolveFault(f.queue, f.tag, f.seq, { action: 'complete' });
    expect((await w).code).toBe(0);
    expect((await read(dev, 600, 4)).data.equals(data)).toBe(true);
  });

  it('a write-zeroes over a bad block parks like a write (op write_zeroes); redirected, its zeros land in the slot', async () => {
    const dev = await start({ parkFaults: true });
    // Slot 4 holds old bytes that must not survive.
    const garbage = path.join(dir, 'garbage');
    fs.writeFileSync(garbage, crypto.randomBytes(BS));
    must('dd', [`if=${garbage}`, `of=${spareLoop}`, `bs=${BS}`, `seek=${(SPARE_DATA >> 12) + 4}`, 'oflag=direct', 'conv=notrunc', 'status=none']);
    const first = BAD.zeroes - 2;
    const z = spawn('blkdiscard', ['-z', '-o', String(first * BS), '-l', String(4 * BS), dev], { stdio: 'ignore' });
    children.push(z);
    const exited = new Promise<number | null>((resolve) => z.on('close', (code) => resolve(code)));
    const f0 = await fault(0);
    expect(f0).toMatchObject({ op: 'write_zeroes', kind: 'error', block: first, blocks: 4, written: [] });
    expect(f0.failed).toEqual([{ device: 'main', block: first, blocks: 4, errno: EIO }]);
    device!.resolveFault(f0.queue, f0.tag, f0.seq, { action: 'retry', narrow: true });
    const f1 = await fault(1);
    expect(f1.failed).toEqual([{ device: 'main', block: BAD.zeroes, blocks: 1, errno: EIO }]);
    device!.setRemapTable(...table([[BAD.zeroes, 4, LOST]]));
    device!.resolveFault(f1.queue, f1.tag, f1.seq, { action: 'retry' });
    const f2 = await fault(2);
    expect(f2).toMatchObject({ op: 'write_zeroes', kind: 'lost_written', failed: [], written: [{ block: BAD.zeroes, blocks: 1, slot: 4 }] });
    expect(readAt(spareLoop, SPARE_DATA + 4 * BS, BS).equals(Buffer.alloc(BS))).toBe(true);
    device!.setRemapTable(...table([[BAD.zeroes, 4, 0]]));
    device!.resolveFault(f2.queue, f2.tag, f2.seq, { action: 'complete' });
    expect(await exited).toBe(0);
    const back = await read(dev, first, 4);
    expect(back.code).toBe(0);
    expect(back.data.equals(Buffer.alloc(4 * BS))).toBe(true);
    expect(ioErrors()).toEqual([]);
  });

  it.each(zeroCopyModes)('a narrow retry reports exactly the bad blocks of a multi-block write (zero copy %s)', async (zeroCopy) => {
    const dev = await start({ parkFaults: true, zeroCopy });
    const w = write(dev, 200, crypto.randomBytes(8 * BS));
    const f0 = await fault(0);
    expect(f0.failed).toEqual([{ device: 'main', block: 200, blocks: 8, errno: EIO }]);
    device!.resolveFault(f0.queue, f0.tag, f0.seq, { action: 'retry', narrow: true });
    const f1 = await fault(1);
    expect(f1).toMatchObject({ kind: 'error', block: 200, blocks: 8, seq: f0.seq });
    expect(f1.failed).toEqual(BAD.narrow.map((b) => ({ device: 'main', block: b, blocks: 1, errno: EIO })));
    device!.resolveFault(f1.queue, f1.tag, f1.seq, { action: 'fail', errno: EIO });
    expect((await w).code).not.toBe(0);
  });

  it('a read fault retried fails again, then fails with EIO when resolved fail', async () => {
    const dev = await start({ parkFaults: true });
    const r = read(dev, BAD.read - 1, 2);
    const f0 = await fault(0);
    expect(f0).toMatchObject({ op: 'read', kind: 'error', block: BAD.read - 1, blocks: 2, written: [] });
    expect(f0.failed).toEqual([{ device: 'main', block: BAD.read - 1, blocks: 2, errno: EIO }]);
    device!.resolveFault(f0.queue, f0.tag, f0.seq, { action: 'retry' });
    const f1 = await fault(1);
    expect(f1).toMatchObject({ op: 'read', kind: 'error', tag: f0.tag, seq: f0.seq, failed: f0.failed });
    device!.resolveFault(f1.queue, f1.tag, f1.seq, { action: 'fail', errno: EIO });
    const res = await r;
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/Input\/output error/);
    expect(ioErrors()).toEqual([]);
  });

  it('with parking off a failure completes with its errno and io_error, as before; setFaultParking switches', async () => {
    const dev = await start();
    const r = await write(dev, BAD.parkingOff, crypto.randomBytes(BS));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Input\/output error/);
    expect(events.filter((e) => e.type === 'io_fault')).toEqual([]);
    expect(ioErrors()).toMatchObject([
      { op: 'write', device: 'main', sector: BigInt((BAD.parkingOff * BS) / 512), sectors: BS / 512, errno: EIO },
    ]);
    device!.setFaultParking(true);
    const w = write(dev, BAD.parkingOff, crypto.randomBytes(BS));
    const f = await fault(0);
    device!.resolveFault(f.queue, f.tag, f.seq, { action: 'fail', errno: EIO });
    expect((await w).code).not.toBe(0);
    expect(ioErrors()).toHaveLength(1);
  });

  it('stop completes faulted requests (error and lost_written) promptly with EIO and leaves no device', async () => {
    const dev = await start({ parkFaults: true });
    device!.setRemapTable(...table([[BAD.stop + 10, 5, LOST]]));
    const failing = write(dev, BAD.stop, crypto.randomBytes(BS));
    const healing = write(dev, BAD.stop + 10, crypto.randomBytes(BS));
    await until('two faults', () => (events.filter((e) => e.type === 'io_fault').length >= 2 ? true : undefined));
    const kinds = events.flatMap((e) => (e.type === 'io_fault' ? [e.kind] : [])).sort();
    expect(kinds).toEqual(['error', 'lost_written']);
    const held = events.find((e): e is Fault => e.type === 'io_fault')!;
    const t0 = Date.now();
    await device!.stop();
    expect(Date.now() - t0).toBeLessThan(10_000);
    // After stop a resolve changes nothing and does not throw.
    device!.resolveFault(held.queue, held.tag, held.seq, { action: 'complete' });
    for (const res of await Promise.all([failing, healing])) {
      expect(res.code).not.toBe(0);
      expect(res.stderr).toMatch(/Input\/output error/);
    }
    expect(ublkNodes()).toEqual([]);
  });

  it('a read of a REDIRECT block parks; a table still carrying the flag keeps it parked; the commit (mapped) releases it with the slot data; stop fails a parked one with EIO', async () => {
    const REDIRECT = 4;
    const dev = await start({ parkFaults: true });
    const B = 800;
    const onMain = crypto.randomBytes(BS);
    const inSlot = crypto.randomBytes(BS);
    const f1 = path.join(dir, 'redirect-main');
    const f2 = path.join(dir, 'redirect-slot');
    fs.writeFileSync(f1, onMain);
    fs.writeFileSync(f2, inSlot);
    must('dd', [`if=${f1}`, `of=${mainDev}`, `bs=${BS}`, `seek=${B}`, 'oflag=direct', 'conv=notrunc', 'status=none']);
    must('dd', [`if=${f2}`, `of=${spareLoop}`, `bs=${BS}`, `seek=${(SPARE_DATA >> 12) + 20}`, 'oflag=direct', 'conv=notrunc', 'status=none']);
    device!.setRemapTable(...table([[B, 20, REDIRECT]]));
    let done = false;
    const r = read(dev, B, 1).then((x) => ((done = true), x));
    await new Promise((res) => setTimeout(res, 500));
    expect(done).toBe(false);
    // Another block's change: the table still carries the flag, the read parks again.
    device!.updateRemapTable(...table([[B + 1, 21, REDIRECT]]));
    await new Promise((res) => setTimeout(res, 500));
    expect(done).toBe(false);
    // The redirect committed: mapped at its slot, flag gone.
    device!.updateRemapTable(...table([[B, 20, 0], [B + 1, 0, 0x80]]));
    const got = await r;
    expect(got.code, got.stderr).toBe(0);
    expect(got.data.equals(inSlot)).toBe(true);
    // Given up (entry removed): a parked read goes to main.
    device!.updateRemapTable(...table([[B + 2, 22, REDIRECT]]));
    const r2 = read(dev, B + 2, 1);
    await new Promise((res) => setTimeout(res, 300));
    device!.updateRemapTable(...table([[B + 2, 0, 0x80]]));
    expect((await r2).code).toBe(0);
    // Stop: a parked read fails with EIO, promptly.
    device!.updateRemapTable(...table([[B + 3, 23, REDIRECT]]));
    const r3 = read(dev, B + 3, 1);
    await new Promise((res) => setTimeout(res, 300));
    const t0 = Date.now();
    await device!.stop();
    device = undefined;
    expect(Date.now() - t0).toBeLessThan(10_000);
    const x3 = await r3;
    expect(x3.code).not.toBe(0);
    expect(ublkNodes()).toEqual([]);
  });
});
