// The native data path's remap split, driven through the addon directly (the remap engine that owns the
// table arrives with its own tests): reads and writes that span remapped blocks go to the right slots
// on the spare, the rest stays on main, a lost block is never served, and a table published while the
// device serves I/O takes effect for the next request, and so does an update of a few entries.
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REMAP_FLAG_REMOVE as REMOVE, type NativeAddon, type NativeDevice, type NativeEvent } from '../../src/native.js';
import { parseFio, readAt, REPO } from './helpers.js';
import { scratchPerTest } from './setup.js';

const native = createRequire(import.meta.url)(path.join(REPO, 'build/Release/dmremap_native.node')) as NativeAddon;
const BS = 4096;
const SPARE_DATA = 1 << 20; // slot 0 starts 1 MiB into the spare

/** Reads `blocks` blocks at block `at` with O_DIRECT (dd), or returns the failure. */
function readBlocks(dev: string, at: number, blocks: number): { ok: boolean; data: Buffer; stderr: string } {
  const r = spawnSync('dd', [`if=${dev}`, `bs=${BS}`, `skip=${at}`, `count=${blocks}`, 'iflag=direct', 'status=none']);
  return { ok: r.status === 0, data: r.stdout, stderr: r.stderr.toString() };
}

function writeBlocks(dev: string, at: number, data: Buffer): { ok: boolean; stderr: string } {
  const r = spawnSync('dd', [`of=${dev}`, `bs=${BS}`, `seek=${at}`, 'iflag=fullblock', 'oflag=direct', 'conv=notrunc', 'status=none'], { input: data });
  return { ok: r.status === 0, stderr: r.stderr.toString() };
}

/** writeBlocks without blocking the JS thread (events must be handled while the write waits). */
function writeBlocksAsync(dev: string, at: number, data: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    const c = spawn('dd', [`of=${dev}`, `bs=${BS}`, `seek=${at}`, 'oflag=direct', 'conv=notrunc', 'status=none'], { stdio: ['pipe', 'ignore', 'ignore'] });
    c.on('close', (code) => resolve(code === 0));
    c.stdin.end(data);
  });
}


function table(entries: [block: number, slot: number, lost?: boolean][]): [BigUint64Array, BigUint64Array, Uint8Array] {
  return [
    BigUint64Array.from(entries.map((e) => BigInt(e[0]))),
    BigUint64Array.from(entries.map((e) => BigInt(e[1]))),
    Uint8Array.from(entries.map((e) => (e[2] ? 1 : 0))),
  ];
}

let device: NativeDevice | undefined;
const s = scratchPerTest(async () => {
  await device?.stop();
  device = undefined;
});

describe('remap split in the native data path', () => {
  it('sends remapped blocks to their spare slots, the rest to main, and never serves a lost block', async () => {
    const main = s.loop(64);
    const spare = s.loop(16);
    const original = crypto.randomBytes(1024 * BS);
    expect(writeBlocks(main, 0, original).ok).toBe(true);
    const slot5 = crypto.randomBytes(BS);
    const fd = fs.openSync(spare, 'r+');
    fs.writeSync(fd, slot5, 0, BS, SPARE_DATA + 5 * BS);
    fs.fsyncSync(fd);
    fs.closeSync(fd);

    const events: NativeEvent[] = [];
    device = new native.Device({
      mainPath: main,
      sparePath: spare,
      queues: 2,
      depth: 32,
      blockSize: BS,
      sizeBytes: 64n << 20n,
      maxIoBytes: 512 * 1024,
      discard: false,
      devId: -1,
      spareDataOffset: BigInt(SPARE_DATA),
      onEvent: (e) => {
        events.push(e);
        // The remap engine's part, refused here: a write to a lost block is not committed, so it fails.
        if (e.type === 'io_fault') device?.resolveFault(e.queue, e.tag, e.seq, { action: 'fail', errno: 5 });
      },
    });
    device.setRemapTable(...table([[10, 0], [11, 1], [12, 2], [100, 5], [200, 7, true]]));
    const { blockPath } = await device.start();

    // Untouched blocks read from main; a remapped block reads from its slot.
    expect(readBlocks(blockPath, 0, 8).data.equals(original.subarray(0, 8 * BS))).toBe(true);
    expect(readBlocks(blockPath, 100, 1).data.equals(slot5)).toBe(true);

    // A write over blocks 8..15: 10..12 land in slots 0..2, the others on main; main's 10..12 keep old data.
    const fresh = crypto.randomBytes(8 * BS);
    expect(writeBlocks(blockPath, 8, fresh).ok).toBe(true);
    expect(readBlocks(blockPath, 8, 8).data.equals(fresh)).toBe(true);
    const onMain = readAt(main, 8 * BS, 8 * BS);
    expect(onMain.subarray(0, 2 * BS).equals(fresh.subarray(0, 2 * BS))).toBe(true);
    expect(onMain.subarray(2 * BS, 5 * BS).equals(original.subarray(10 * BS, 13 * BS))).toBe(true);
    expect(onMain.subarray(5 * BS).equals(fresh.subarray(5 * BS))).toBe(true);
    expect(readAt(spare, SPARE_DATA, 3 * BS).equals(fresh.subarray(2 * BS, 5 * BS))).toBe(true);

    // A lost block's reads fail with EIO, alone or inside a larger request. A write to it goes to its
    // slot and then waits for the remap engine (lost_written); refused, it fails and the block stays lost.
    expect(readBlocks(blockPath, 200, 1).ok).toBe(false);
    expect(readBlocks(blockPath, 198, 4).ok).toBe(false);
    expect(await writeBlocksAsync(blockPath, 200, crypto.randomBytes(BS))).toBe(false);
    expect(events.filter((e) => e.type === 'io_fault')).toMatchObject([{ kind: 'lost_written', op: 'write', block: 200, blocks: 1, written: [{ block: 200, blocks: 1 }] }]);
    expect(readBlocks(blockPath, 200, 1).ok).toBe(false);

    // A table published while serving applies to the next request.
    device.setRemapTable(...table([[10, 0], [11, 1], [12, 2], [100, 5], [200, 7, true], [300, 9]]));
    const b300 = crypto.randomBytes(BS);
    expect(writeBlocks(blockPath, 300, b300).ok).toBe(true);
    expect(readAt(spare, SPARE_DATA + 9 * BS, BS).equals(b300)).toBe(true);
    expect(readAt(main, 300 * BS, BS).equals(original.subarray(300 * BS, 301 * BS))).toBe(true);

    // A table that is not sorted is refused and the old one stays.
    expect(() => device?.setRemapTable(...table([[5, 1], [4, 2]]))).toThrow(/sorted/);
    expect(readBlocks(blockPath, 300, 1).data.equals(b300)).toBe(true);

    // An update changes only the blocks it names: 100 is dropped (main again), 400 is added at slot 11,
    // 500 had no entry (nothing to drop); 300 stays in slot 9.
    const update = table([[100, 0], [400, 11], [500, 0]]);
    update[2].set([REMOVE, 0, REMOVE]);
    device.updateRemapTable(...update);
    expect(readBlocks(blockPath, 100, 1).data.equals(original.subarray(100 * BS, 101 * BS))).toBe(true);
    const b400 = crypto.randomBytes(BS);
    expect(writeBlocks(blockPath, 400, b400).ok).toBe(true);
    expect(readAt(spare, SPARE_DATA + 11 * BS, BS).equals(b400)).toBe(true);
    expect(readAt(main, 400 * BS, BS).equals(original.subarray(400 * BS, 401 * BS))).toBe(true);
    expect(readBlocks(blockPath, 300, 1).data.equals(b300)).toBe(true);
    expect(readBlocks(blockPath, 200, 1).ok).toBe(false);
    // Bad updates are refused whole: unknown flags, REMOVE in a whole table, unsorted blocks.
    // 8 is the first bit no flag uses (LOST 1, MOVING 2, REDIRECT 4; REMOVE 0x80 only in an update).
    const bad = table([[100, 3], [401, 12]]);
    bad[2].set([0, 8]);
    expect(() => device?.updateRemapTable(...bad)).toThrow(/flags/);
    expect(() => device?.setRemapTable(...update)).toThrow(/flags/);
    expect(() => device?.updateRemapTable(...table([[401, 1], [400, 2]]))).toThrow(/sorted/);
    expect(readBlocks(blockPath, 100, 1).data.equals(original.subarray(100 * BS, 101 * BS))).toBe(true);
    expect(readBlocks(blockPath, 400, 1).data.equals(b400)).toBe(true);
    expect(events.filter((e) => e.type === 'io_error')).toEqual([]);
  });

  it('moves blocks under a running fio verify without losing a write (park, drain, copy, publish)', async () => {
    const main = s.loop(64);
    const spare = s.loop(32);
    device = new native.Device({
      mainPath: main,
      sparePath: spare,
      queues: 2,
      depth: 64,
      blockSize: BS,
      sizeBytes: 64n << 20n,
      maxIoBytes: 512 * 1024,
      discard: false,
      devId: -1,
      spareDataOffset: BigInt(SPARE_DATA),
      onEvent: () => {},
    });
    const dev = device;
    const { blockPath } = await dev.start();
    const fio = spawn('fio', [
      '--name=moves', `--filename=${blockPath}`, '--direct=1', '--ioengine=io_uring', '--rw=randwrite',
      '--bsrange=4k-256k', '--iodepth=32', '--size=48M', '--verify=crc32c', '--verify_fatal=1',
      '--randrepeat=0', '--output-format=json',
    ], { cwd: s.dir });
    let out = '';
    fio.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => fio.on('exit', (code) => r(code)));
    let running = true;
    void exited.then(() => (running = false));

    // The table as the remap engine would keep it: block -> slot, published sorted.
    const mapped = new Map<number, number>();
    let nextSlot = 0;
    const publish = (moving?: { block: number; slot: number }) => {
      const rows: [number, number, number][] = [...mapped].map(([b, sl]) => [b, sl, 0]);
      if (moving) rows.push([moving.block, moving.slot, 2]);
      rows.sort((a, b) => a[0] - b[0]);
      dev.setRemapTable(
        BigUint64Array.from(rows.map((r) => BigInt(r[0]))),
        BigUint64Array.from(rows.map((r) => BigInt(r[1]))),
        Uint8Array.from(rows.map((r) => r[2])),
      );
    };
    let remaps = 0;
    let unremaps = 0;
    const fioBlocks = (48 << 20) / BS;
    while (running && (remaps < 200 || unremaps < 50)) {
      if (unremaps < 50 && mapped.size > 0 && (remaps >= 200 || remaps % 4 === 3)) {
        const [block, slot] = [...mapped][Math.floor(Math.random() * mapped.size)] as [number, number];
        mapped.delete(block);
        publish({ block, slot });
        await dev.drain();
        await dev.copyRange('spare', BigInt(SPARE_DATA + slot * BS), 'main', BigInt(block * BS), BS);
        await dev.flush('main');
        publish();
        unremaps++;
      } else {
        let block = Math.floor(Math.random() * fioBlocks);
        while (mapped.has(block)) block = (block + 1) % fioBlocks;
        const slot = nextSlot++;
        publish({ block, slot });
        await dev.drain();
        await dev.copyRange('main', BigInt(block * BS), 'spare', BigInt(SPARE_DATA + slot * BS), BS);
        await dev.flush('spare');
        mapped.set(block, slot);
        publish();
        remaps++;
      }
    }
    const code = await exited;
    const r = parseFio(code, out);
    expect(r.errors).toEqual([0]);
    expect(code).toBe(0);
    // fio may finish first on a fast machine; the moves that did happen must all have been under load.
    expect(remaps).toBeGreaterThan(20);
    console.log(`moves under fio verify: ${remaps} remaps, ${unremaps} unremaps`);
  });

  it('a process that ends without stopping its device leaves nothing behind (env cleanup hook)', () => {
    const main = s.loop(16);
    const spare = s.loop(8);
    const script = `
      const a = require(${JSON.stringify(path.join(REPO, 'build/Release/dmremap_native.node'))});
      const d = new a.Device({ mainPath: ${JSON.stringify(main)}, sparePath: ${JSON.stringify(spare)}, queues: 2, depth: 16,
        blockSize: 512, sizeBytes: 16n << 20n, maxIoBytes: 131072, discard: false, devId: -1, onEvent: () => {} });
      // No stop(), no process.exit(): the event loop runs dry and the environment is torn down, which is
      // when the addon's cleanup hook must stop and delete the device. (process.exit() skips env cleanup
      // hooks in Node; the daemon only exits after it stopped its device.)
      d.start().then((info) => console.log(info.blockPath));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\/dev\/ublkb\d+$/);
    // The hooks (scratchPerTest) check that no /dev/ublkb* or /dev/ublkc* is left and the kernel logged no hung task.
  });
});
