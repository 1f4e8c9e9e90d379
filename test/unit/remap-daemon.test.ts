// The remap engine wired into the daemon, against the fake addon over file-backed main and spare: the spare
// metadata is opened (or formatted, or refused) on add, the table reaches the data path before start, and
// remap / unremap / verify / table / message work over the real control socket in the durability order,
// with typed errors that change nothing.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import type { DeviceConfig } from '../../src/device/config.js';
import { Daemon } from '../../src/device/daemon.js';
import { mainIdentity } from '../../src/device/fingerprint.js';
import { main } from '../../src/cli/main.js';
import { DmrError } from '../../src/errors.js';
import { FileSpareIo, RemapStore, slotOffset } from '../../src/remap/index.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { captureCtx, deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';
import { readAt, writeAt } from '../../src/testing/file-bytes.js';

let w: World;
let native: FakeNative;
let daemon: Daemon | null;
let sock: string;

const MAIN_BYTES = 8 << 20;
const config = (over: Partial<DeviceConfig> = {}): DeviceConfig => deviceConfig(w, over);
const start = async (over: Partial<DeviceConfig> = {}): Promise<Daemon> => {
  daemon = await Daemon.start(config(over), { native, runDir: w.runDir, log: quietLog(), logFile: null });
  sock = path.join(w.runDir, `${daemon.info.devId}.sock`);
  return daemon;
};
const stop = async (): Promise<void> => {
  await daemon?.shutdown('test');
  daemon = null;
};
const device = (): FakeDevice => native.devices.at(-1) as FakeDevice;

/** Main's block `b` (blockSize bytes) as the fill pattern writes it: its number, repeated. */
function pattern(b: number, blockSize = 512): Buffer {
  const buf = Buffer.alloc(blockSize);
  for (let i = 0; i < blockSize; i += 8) buf.writeBigUInt64LE(BigInt(b) * 1000n + 7n, i);
  return buf;
}
/** Opens the spare's metadata directly (as the next add would) and returns its table. */
async function reopenTable(): Promise<ReturnType<RemapStore['table']['toJSON']>> {
  const io = await FileSpareIo.open(w.spare);
  try {
    const { table } = await RemapStore.open(io, { main: mainIdentity(w.main, BigInt(MAIN_BYTES)), blockSize: 512 });
    return table.toJSON();
  } finally {
    await io.close();
  }
}

async function rejected(p: Promise<unknown>): Promise<DmrError> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(DmrError);
  return e as DmrError;
}

beforeEach(() => {
  w = makeWorld();
  native = fakeFor(w);
  daemon = null;
  for (let b = 0; b < 64; b++) writeAt(w.main, b * 512, pattern(b));
});
afterEach(async () => {
  await stop();
  w.cleanup();
});

describe('remap engine in the daemon', () => {
  it('formats a fresh spare on add and publishes the (empty) table before start, with the slot area offset', async () => {
    await start();
    const d = device();
    expect(d.calls[0]).toBe('setRemapTable');
    expect(d.remapTable).toEqual({ blocks: [], slots: [], flags: [] });
    const s = await request(sock, 'status', {});
    expect(d.opts.spareDataOffset).toBe(BigInt(s.remap.spareDataOffset));
    expect(s.remap.spareDataOffset).toBeGreaterThan(0);
    expect(s.remap.spareOffset).toBe(0);
    expect(s.remap.spareSize).toBe(4 << 20);
    expect(s.remap.slots).toBeGreaterThan(1000);
    expect(s.remap.line).toBe(`0 16384 remap v2.0 0/${s.remap.slots} 0/${s.remap.slots} 0/${s.remap.slots} health=healthy errors=W0:R0 auto_remaps=0 manual_remaps=0 scan=0%`);
  });

  it('remap copies the block to its slot, flushes, journals, then publishes it mapped', async () => {
    await start();
    const d = device();
    d.calls.length = 0;
    const r = await request(sock, 'remap', { sector: 21 });
    expect(r).toEqual({ sector: 21, block: 21, slot: 0, state: 'mapped', readErrno: null });
    // The data moved: the slot holds main's block.
    const slot0 = Number(d.opts.spareDataOffset);
    expect(readAt(w.spare, slot0, 512).equals(pattern(21))).toBe(true);
    // Order: MOVING published, drained, copied, spare flushed, then the mapped entry published.
    expect(d.calls).toEqual(['updateRemapTable', 'drain', 'copyRange main->spare', 'flush spare', 'updateRemapTable']);
    const [moving, done] = d.tables.slice(-2);
    expect(moving).toEqual({ blocks: [21n], slots: [0n], flags: [2] });
    expect(done).toEqual({ blocks: [21n], slots: [0n], flags: [0] });
    // Journaled: the spare's metadata has it without the daemon.
    expect((await reopenTable()).map((e) => [e.block, e.slot, e.state, e.origin])).toEqual([[21, 0, 'mapped', 'manual']]);
    const s = await request(sock, 'status', {});
    expect(s.remap).toMatchObject({ remapped: 1, mapped: 1, lost: 0, used: 1, manualRemaps: 1 });
    expect(s.remap.line).toContain(` 1/${s.remap.slots} 0/${s.remap.slots} 1/${s.remap.slots} `);
    expect(s.remap.line).toContain('manual_remaps=1 ');
  });

  it('remaps the block holding the sector with 4096-byte blocks, at the slot the geometry says', async () => {
    for (let b = 0; b < 4; b++) writeAt(w.main, b * 4096, pattern(b, 4096));
    await start({ blockSize: 4096 });
    const r = await request(sock, 'remap', { sector: 17 }); // sector 17 is in block 2
    expect(r).toMatchObject({ block: 2, slot: 0, state: 'mapped' });
    const r2 = await request(sock, 'remap', { sector: 8 });
    expect(r2).toMatchObject({ block: 1, slot: 1 });
    const io = await FileSpareIo.open(w.spare);
    const { store } = await RemapStore.open(io, { main: mainIdentity(w.main, BigInt(MAIN_BYTES)), blockSize: 4096 });
    await io.close();
    expect(readAt(w.spare, slotOffset(store.geometry, 1), 4096).equals(pattern(1, 4096))).toBe(true);
    expect(readAt(w.spare, slotOffset(store.geometry, 0), 4096).equals(pattern(2, 4096))).toBe(true);
    expect(device().remapTable).toEqual({ blocks: [1n, 2n], slots: [1n, 0n], flags: [0, 0] });
  });

  it('a main read failure during the copy remaps the block as lost (published LOST); unremap of it is refused', async () => {
    await start();
    native.cfg.failReads.push({ device: 'main', offset: 5 * 512, bytes: 512, code: 'ENODATA' });
    const r = await request(sock, 'remap', { sector: 5 });
    expect(r).toEqual({ sector: 5, block: 5, slot: 0, state: 'lost', readErrno: 'ENODATA' });
    expect(device().remapTable).toEqual({ blocks: [5n], slots: [0n], flags: [1] });
    expect((await reopenTable()).map((e) => [e.block, e.state])).toEqual([[5, 'lost']]);
    const v = await request(sock, 'verify', { sector: 5 });
    expect(v).toMatchObject({ state: 'lost', readable: false, errno: 'EIO', device: 'spare', slot: 0 });
    const e = await rejected(request(sock, 'unremap', { sector: 5 }));
    expect(e.code).toBe('E_REMAP_STATE');
    expect(e.message).toMatch(/lost: its data is gone/);
    expect(device().remapTable).toEqual({ blocks: [5n], slots: [0n], flags: [1] });
    expect((await request(sock, 'status', {})).remap).toMatchObject({ lost: 1, health: 'degraded' });
  });

  it('a failed write to the spare undoes the remap: slot free again, nothing journaled, block back on main', async () => {
    await start();
    const spareData = Number(device().opts.spareDataOffset);
    native.cfg.failWrites.push({ device: 'spare', offset: spareData, bytes: 512, code: 'EIO' });
    const e = await rejected(request(sock, 'remap', { sector: 9 }));
    expect(e.code).toBe('E_IO');
    expect(device().remapTable).toEqual({ blocks: [], slots: [], flags: [] });
    expect(await reopenTable()).toEqual([]);
    native.cfg.failWrites.length = 0;
    expect(await request(sock, 'remap', { sector: 9 })).toMatchObject({ slot: 0, state: 'mapped' });
  });

  it('unremap copies the slot back to main, flushes main, and frees the slot', async () => {
    await start();
    await request(sock, 'remap', { sector: 30 });
    const slot0 = Number(device().opts.spareDataOffset);
    const newer = Buffer.alloc(512, 0xab); // a write that went to the slot while remapped
    writeAt(w.spare, slot0, newer);
    device().calls.length = 0;
    expect(await request(sock, 'unremap', { sector: 30 })).toEqual({ sector: 30, block: 30, slot: 0 });
    expect(readAt(w.main, 30 * 512, 512).equals(newer)).toBe(true);
    expect(device().calls).toEqual(['updateRemapTable', 'drain', 'copyRange spare->main', 'flush main', 'updateRemapTable']);
    expect(device().tables.at(-2)).toEqual({ blocks: [30n], slots: [0n], flags: [2] });
    expect(device().remapTable).toEqual({ blocks: [], slots: [], flags: [] });
    expect(await reopenTable()).toEqual([]);
    expect((await request(sock, 'status', {})).remap).toMatchObject({ remapped: 0, used: 0, unremaps: 1, manualRemaps: 1 });
    const e = await rejected(request(sock, 'unremap', { sector: 30 }));
    expect(e.code).toBe('E_REMAP_STATE');
  });

  it('verify says where a sector maps and whether it reads', async () => {
    await start();
    expect(await request(sock, 'verify', { sector: 3 })).toEqual({
      sector: 3, block: 3, state: 'unmapped', device: 'main', slot: null, offset: 1536, readable: true, errno: null,
    });
    native.cfg.failReads.push({ device: 'main', offset: 4 * 512, bytes: 512, code: 'EIO' });
    expect(await request(sock, 'verify', { sector: 4 })).toMatchObject({ state: 'unmapped', readable: false, errno: 'EIO' });
    await request(sock, 'remap', { sector: 3 });
    expect(await request(sock, 'verify', { sector: 3 })).toMatchObject({
      state: 'mapped', device: 'spare', slot: 0, offset: Number(device().opts.spareDataOffset), readable: true,
    });
  });

  it('bad input gets a typed error and changes nothing', async () => {
    await start({ spareSize: 33792 }); // room for the metadata and exactly 2 slots
    await request(sock, 'remap', { sector: 1 });
    const before = await request(sock, 'table', {});
    const tablesBefore = device().tables.length;
    const cases: Array<[Promise<unknown>, string, RegExp]> = [
      [request(sock, 'remap', { sector: 16384 }), 'E_OUT_OF_RANGE', /sector 16384 is beyond the end of the device \(16384 sectors\)/],
      [request(sock, 'verify', { sector: 1 << 30 }), 'E_OUT_OF_RANGE', /beyond the end/],
      [request(sock, 'message', { words: ['remap', 'abc'] }), 'E_USAGE', /sector must be a whole number/],
      [request(sock, 'message', { words: ['remap', '-1'] }), 'E_USAGE', /sector must be a whole number/],
      [request(sock, 'message', { words: ['remap'] }), 'E_USAGE', /expected "remap <sector>"/],
      [request(sock, 'message', { words: ['frobnicate'] }), 'E_USAGE', /unknown message "frobnicate"/],
      [request(sock, 'message', { words: ['table', 'x'] }), 'E_USAGE', /offset must be a whole number/],
      [request(sock, 'remap', { sector: 1 }), 'E_REMAP_STATE', /already remapped/],
      [request(sock, 'unremap', { sector: 2 }), 'E_REMAP_STATE', /not remapped/],
    ];
    for (const [p, code, msg] of cases) {
      const e = await rejected(p);
      expect(e.code).toBe(code);
      expect(e.message).toMatch(msg);
      expect(e.message).not.toContain('\n');
    }
    // The protocol refuses a non-numeric sector before any handler runs.
    const raw = await rejected(request(sock, 'remap', { sector: 'x' as unknown as number }));
    expect(raw.code).toBe('E_PROTOCOL');
    await request(sock, 'remap', { sector: 2 });
    const full = await rejected(request(sock, 'remap', { sector: 3 }));
    expect(full.code).toBe('E_SPARE_FULL');
    const after = await request(sock, 'table', {});
    expect(after.entries.map((e) => e.block)).toEqual([1, 2]);
    expect(before.entries.map((e) => e.block)).toEqual([1]);
    // Only the successful remap of sector 2 published tables (MOVING, then mapped).
    expect(device().tables.length).toBe(tablesBefore + 2);
    expect((await request(sock, 'status', {})).remap).toMatchObject({ slots: 2, used: 2, free: 0, health: 'failed' }); // the spare full
  });

  it('table pages through the entries sorted by block', async () => {
    await start();
    for (const s of [40, 10, 30, 20]) await request(sock, 'remap', { sector: s });
    const all = await request(sock, 'table', {});
    expect(all.total).toBe(4);
    expect(all.entries.map((e) => [e.block, e.slot])).toEqual([[10, 1], [20, 3], [30, 2], [40, 0]]);
    const page = await request(sock, 'table', { offset: 1, limit: 2 });
    expect(page).toMatchObject({ total: 4, offset: 1 });
    expect(page.entries.map((e) => e.block)).toEqual([20, 30]);
    expect(page.entries[0]).toMatchObject({ sector: 20, state: 'mapped', origin: 'manual', errorCount: 0 });
  });

  it('message speaks the dm-style words', async () => {
    await start();
    const m = (...words: string[]) => request(sock, 'message', { words }).then((r) => r.reply);
    expect(await m('ping')).toBe('pong');
    expect(await m('remap', '12')).toBe('remapped sector 12 (block 12) to spare slot 0');
    expect(await m('verify', '12')).toMatch(/^sector 12 \(block 12\): remapped to spare slot 0 .*reads fine$/);
    expect(await m('table')).toMatch(/^1 remapped block\(s\)\nblock 12 sector 12 slot 0 mapped manual /);
    expect(await m('status')).toMatch(/^0 16384 remap v2\.0 1\/\d+ 0\/\d+ 1\/\d+ health=watch errors=W0:R0 auto_remaps=0 manual_remaps=1 scan=0%$/);
    expect(await m('unremap', '12')).toBe('unremapped sector 12 (block 12): data moved back to main, spare slot 0 freed');
    expect(device().remapTable.blocks).toEqual([]);
  });

  it('message takes dmsetup\'s leading sector 0 ("0 remap N") as well as the form without it', async () => {
    await start();
    const m = (...words: string[]) => request(sock, 'message', { words }).then((r) => r.reply);
    expect(await m('0', 'remap', '12')).toBe('remapped sector 12 (block 12) to spare slot 0');
    expect(await m('0', 'verify', '12')).toMatch(/^sector 12 \(block 12\): remapped to spare slot 0 /);
    expect(await m('0', 'status')).toMatch(/^0 16384 remap v2\.0 1\//);
    expect(await m('0', 'unremap', '12')).toMatch(/^unremapped sector 12 /);
    // Another target sector, or nothing after the 0: refused, nothing changed.
    for (const [words, msg] of [
      [['8', 'remap', '12'], /leading sector .* must be 0, got 8/],
      [['0'], /nothing after the leading sector 0/],
    ] as const) {
      const e = await rejected(request(sock, 'message', { words: [...words] }));
      expect(e.code).toBe('E_USAGE');
      expect(e.message).toMatch(msg);
    }
    expect((await request(sock, 'table', {})).total).toBe(0);
  });

  it('a restart on the same files brings back the table and the counters, and publishes the table before start', async () => {
    await start();
    await request(sock, 'remap', { sector: 7 });
    native.cfg.failReads.push({ device: 'main', offset: 8 * 512, bytes: 512, code: 'EIO' });
    await request(sock, 'remap', { sector: 8 });
    await request(sock, 'remap', { sector: 9 });
    await request(sock, 'unremap', { sector: 9 });
    device().emit({ type: 'io_error', queue: 0, op: 'read', device: 'main', sector: 100n, sectors: 8, errno: 5, latencyUs: 10 });
    device().emit({ type: 'io_error', queue: 0, op: 'write', device: 'main', sector: 100n, sectors: 8, errno: 5, latencyUs: 10 });
    device().emit({ type: 'io_error', queue: 0, op: 'read', device: 'main', sector: 101n, sectors: 8, errno: 61, latencyUs: 10 });
    const line1 = (await request(sock, 'status', {})).remap.line;
    expect(line1).toMatch(/ 2\/\d+ 1\/\d+ 2\/\d+ health=degraded errors=W1:R2 auto_remaps=0 manual_remaps=3 scan=0%$/);
    await stop();
    native.cfg.failReads.length = 0;
    await start();
    const d = device();
    expect(d.calls[0]).toBe('setRemapTable');
    expect(d.tables[0]).toEqual({ blocks: [7n, 8n], slots: [0n, 1n], flags: [0, 1] });
    const s = await request(sock, 'status', {});
    expect(s.remap.line).toBe(line1);
    expect(s.remap).toMatchObject({ unremaps: 1, manualRemaps: 3, readErrors: 2, writeErrors: 1 });
    expect((await request(sock, 'table', {})).entries.map((e) => [e.block, e.slot, e.state])).toEqual([[7, 0, 'mapped'], [8, 1, 'lost']]);
  });

  it('refuses a spare of another main unchanged, with one line; --force-format takes it over', async () => {
    await start();
    await request(sock, 'remap', { sector: 3 });
    await stop();
    const other = w.file('other.img', MAIN_BYTES);
    const spareBefore = fs.readFileSync(w.spare);
    const e = await rejected(Daemon.start(config({ mainPath: other }), { native, runDir: w.runDir, log: quietLog(), logFile: null }));
    expect(e.code).toBe('E_SPARE_FOREIGN');
    expect(e.message).toMatch(/another main device.*--force-format/);
    expect(fs.readFileSync(w.spare).equals(spareBefore)).toBe(true);
    expect(w.devNodes()).toEqual([]);
    await start({ mainPath: other, forceFormat: true });
    expect((await request(sock, 'table', {})).total).toBe(0);
    expect(device().tables[0]).toEqual({ blocks: [], slots: [], flags: [] });
    await stop();
    // Now the original main is the foreign one.
    const e2 = await rejected(Daemon.start(config(), { native, runDir: w.runDir, log: quietLog(), logFile: null }));
    expect(e2.code).toBe('E_SPARE_FOREIGN');
  });

  it('refuses a spare region too small for its metadata', async () => {
    const e = await rejected(Daemon.start(config({ spareSize: 16384 }), { native, runDir: w.runDir, log: quietLog(), logFile: null }));
    expect(e.code).toBe('E_SPARE_TOO_SMALL');
    expect(w.devNodes()).toEqual([]);
    expect(fs.readFileSync(w.spare).equals(Buffer.alloc(4 << 20))).toBe(true);
  });

  it('honours --spare-offset: metadata and slots start inside the region', async () => {
    await start({ spareOffset: 1 << 20 });
    const s = await request(sock, 'status', {});
    expect(s.remap).toMatchObject({ spareOffset: 1 << 20, spareSize: 3 << 20 });
    expect(readAt(w.spare, 0, 1 << 20).equals(Buffer.alloc(1 << 20))).toBe(true); // nothing written before it
    await request(sock, 'remap', { sector: 6 });
    expect(s.remap.spareDataOffset).toBeGreaterThan(1 << 20);
    expect(readAt(w.spare, s.remap.spareDataOffset, 512).equals(pattern(6))).toBe(true);
  });
});

describe('remap CLI commands', () => {
  it('remap, verify, table, unremap, message and status through the CLI', async () => {
    await start();
    const run = async (...args: string[]) => {
      const c = captureCtx(w, native);
      const code = await main(args, c.ctx);
      return { code, out: c.stdout(), err: c.stderr() };
    };
    expect(await run('remap', 'data', '14')).toEqual({ code: 0, out: 'remapped sector 14 (block 14) to spare slot 0\n', err: '' });
    const j = await run('verify', 'data', '14', '--json');
    expect(JSON.parse(j.out)).toMatchObject({ state: 'mapped', slot: 0, readable: true });
    const t = await run('table', 'data', '--json', '--limit', '5');
    expect(JSON.parse(t.out)).toMatchObject({ total: 1, entries: [{ block: 14, slot: 0 }] });
    const st = await run('status', 'data');
    expect(st.out.split('\n')[0]).toMatch(/^0 16384 remap v2\.0 1\/\d+ 0\/\d+ 1\/\d+ health=watch errors=W0:R0 auto_remaps=0 manual_remaps=1 scan=0%$/);
    // The device flags line keeps its flags and tells the buffer strategy after them.
    expect(st.out).toMatch(/^ {2}device flags 0x[0-9a-f]+: [^\n]*; (zero copy|copy into (registered|plain) buffers)$/m);
    expect(JSON.parse((await run('status', 'data', '--json')).out).remap.manualRemaps).toBe(1);
    expect((await run('message', 'data', 'unremap', '14')).out).toBe('unremapped sector 14 (block 14): data moved back to main, spare slot 0 freed\n');
    expect((await run('message', 'data', 'status')).out).toMatch(/^0 16384 remap v2\.0 0\//);
    // Bad input: one line, exit 2 for usage, 1 for run-time failures.
    expect(await run('remap', 'data', 'abc')).toEqual({ code: 2, out: '', err: 'dmremap-ublk: sector must be a whole number of 512-byte sectors, got "abc"\n' });
    expect((await run('remap', 'data')).code).toBe(2);
    expect((await run('table', 'data', '--limit', '0')).code).toBe(2);
    const far = await run('remap', 'data', '99999999');
    expect(far.code).toBe(1);
    expect(far.err).toBe('dmremap-ublk: sector 99999999 is beyond the end of the device (16384 sectors)\n');
    const unk = await run('message', 'data', 'frobnicate');
    expect(unk.code).toBe(2);
    expect(unk.err).toMatch(/^dmremap-ublk: unknown message "frobnicate" \(known: .*\)\n$/);
    expect((await run('unremap', 'data', '14')).code).toBe(1);
    expect(device().remapTable.blocks).toEqual([]);
    expect((await run('remap', '--help')).out).toMatch(/^Usage: dmremap-ublk remap <device> <sector>/);
  });
});

describe('remap requests while others run', () => {
  it('serializes moves: a second remap of the same block is refused after the first, and shutdown waits for the move', async () => {
    await start();
    const d = device();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const copy = d.copyRange.bind(d);
    d.copyRange = async (...a: Parameters<FakeDevice['copyRange']>) => {
      await gate;
      return copy(...a);
    };
    const first = request(sock, 'remap', { sector: 5 });
    const again = request(sock, 'remap', { sector: 5 });
    const other = request(sock, 'remap', { sector: 6 });
    await new Promise((r) => setTimeout(r, 50));
    // While block 5 moves it is published MOVING, nothing else changed.
    expect(d.remapTable).toEqual({ blocks: [5n], slots: [0n], flags: [2] });
    const stopping = daemon?.shutdown('test');
    await new Promise((r) => setTimeout(r, 20));
    const late = await rejected(request(sock, 'remap', { sector: 7 }));
    expect(late.code).toBe('E_DAEMON');
    expect(d.info().state).toBe('live'); // the device is not stopped under a moving block
    release();
    expect(await first).toMatchObject({ block: 5, slot: 0, state: 'mapped' });
    expect((await rejected(again)).code).toBe('E_REMAP_STATE');
    expect(await other).toMatchObject({ block: 6, slot: 1 });
    expect(await stopping).toBe(0);
    daemon = null;
    expect(d.calls.filter((c) => c.startsWith('copyRange'))).toHaveLength(2);
    expect((await reopenTable()).map((e) => [e.block, e.slot])).toEqual([[5, 0], [6, 1]]);
  });
});

describe('main fingerprint', () => {
  it('is the same through a symlink, differs for another file, and does not depend on the contents', async () => {
    const { mainIdentitySource } = await import('../../src/device/fingerprint.js');
    const link = path.join(w.root, 'link.img');
    fs.symlinkSync(w.main, link);
    const a = Buffer.from(mainIdentity(w.main, 1n).fingerprint);
    expect(a.equals(mainIdentity(link, 1n).fingerprint)).toBe(true);
    writeAt(w.main, 0, Buffer.alloc(512, 0x55));
    expect(a.equals(mainIdentity(w.main, 1n).fingerprint)).toBe(true);
    expect(a.equals(mainIdentity(w.main, 2n).fingerprint)).toBe(false);
    expect(a.equals(mainIdentity(w.spare, 1n).fingerprint)).toBe(false);
    expect(mainIdentitySource(link)).toEqual({ kind: 'file', text: `file:${fs.realpathSync(w.main)}` });
  });
});
