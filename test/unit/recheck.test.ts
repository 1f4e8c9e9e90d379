// recheck: lost blocks whose last data is on main are read there again; those that read go back to main
// (entry removed, slot freed) under MOVING and a drain; those whose main copy is older than their lost
// data (their slot failed) stay lost. Also run for pending blocks when an outage of main ends.
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { DEFAULT_POLICY } from '../../src/config/policy.js';
import { Daemon } from '../../src/device/daemon.js';
import type { FaultAction, NativeEvent } from '../../src/native.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { deviceConfig, fakeFor, makeWorld, quietLog, waitFor, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemon: Daemon | null;
let sock: string;
let seq = 0;
type Fault = Extract<NativeEvent, { type: 'io_fault' }>;

const start = async (): Promise<void> => {
  const policy = { ...DEFAULT_POLICY, readRetries: 0, retryBackoffMs: 0 };
  daemon = await Daemon.start(deviceConfig(w, { policy }), { native, runDir: w.runDir, log: quietLog(), logFile: null });
  sock = path.join(w.runDir, `${daemon.info.devId}.sock`);
};
const device = (): FakeDevice => native.devices.at(-1) as FakeDevice;
const readFault = (block: number, where: 'main' | 'spare' = 'main'): Fault => ({
  type: 'io_fault', queue: 0, tag: block % 64, seq: ++seq, op: 'read', kind: 'error', block, blocks: 1, attempt: 0, latencyUs: 10, written: [],
  failed: [{ device: where, block, blocks: 1, errno: 5 }],
});
const resolution = (f: { tag: number; seq: number }): Promise<FaultAction> => device().awaitResolution(f);
const entry = (block: number): { slot: number; state: string } | undefined => daemon?.['engine']?.store.table.get(block);
const badMain = (block: number): void => void native.cfg.failReads.push({ device: 'main', offset: block * 512, bytes: 512, code: 'EIO' });
/** Makes `block` pending: its read fails on main on every try. */
async function pending(block: number): Promise<void> {
  badMain(block);
  const f = readFault(block);
  device().emit(f);
  expect(await resolution(f)).toEqual({ action: 'fail', errno: 5 });
  expect(entry(block)?.state).toBe('lost');
}

beforeEach(() => {
  w = makeWorld();
  native = fakeFor(w);
  daemon = null;
});
afterEach(async () => {
  await daemon?.shutdown('test');
  w.cleanup();
});

describe('recheck', () => {
  it('a pending block that reads on main again goes back to main: moved, drained, committed, slot freed', async () => {
    await start();
    await pending(12);
    const free = (await request(sock, 'stats', {})).freeSlots;
    // Still unreadable: stays lost.
    let r = await request(sock, 'recheck', { sectors: [12] });
    expect(r).toMatchObject({ checked: 1, recovered: 0, unreadable: 1, blocks: [{ sector: 12, block: 12, result: 'unreadable', errno: 'EIO' }] });
    expect(entry(12)?.state).toBe('lost');
    native.cfg.failReads.length = 0;
    const calls = device().calls.length;
    r = await request(sock, 'recheck', { sectors: [12] });
    expect(r).toMatchObject({ checked: 1, recovered: 1, unreadable: 0, blocks: [{ sector: 12, block: 12, result: 'recovered', errno: null }] });
    expect(entry(12)).toBeUndefined();
    expect(device().remapTable.blocks).toEqual([]);
    // Published MOVING, drained, read again, then the table without it.
    const after = device().calls.slice(calls);
    expect(after.indexOf('drain')).toBeGreaterThan(after.indexOf('updateRemapTable'));
    expect(after.lastIndexOf('readRange main')).toBeGreaterThan(after.indexOf('drain'));
    expect(device().tables.some((t) => t.blocks.includes(12n) && t.flags[t.blocks.indexOf(12n)] === 2)).toBe(true);
    const s = await request(sock, 'stats', {});
    expect(s).toMatchObject({ recoveredBlocks: 1, pendingBlocks: 0, lostBlocks: 0, freeSlots: free + 1 });
  });

  it('a block whose slot failed stays lost (main holds older data); a block not lost is said so', async () => {
    await start();
    await request(sock, 'remap', { sector: 30 });
    // The slot fails reads for real: read once more before the block is marked lost, it must fail there too.
    const slotAt = (daemon?.['engine']?.store.allocator.offsetOf(entry(30)?.slot as number)) as number;
    native.cfg.failReads.push({ device: 'spare', offset: slotAt, bytes: 512, code: 'EIO' });
    const f = readFault(30, 'spare');
    device().emit(f);
    expect(await resolution(f)).toEqual({ action: 'fail', errno: 5 });
    expect(entry(30)?.state).toBe('lost');
    const r = await request(sock, 'recheck', { sectors: [30, 40] });
    expect(r.recovered).toBe(0);
    expect(r.blocks).toEqual([
      { sector: 30, block: 30, result: 'main-stale', errno: null },
      { sector: 40, block: 40, result: 'not-lost', errno: null },
    ]);
    expect(entry(30)?.state).toBe('lost');
    // Without sectors: every lost block, the same answer for this one.
    expect((await request(sock, 'recheck', {})).blocks).toEqual([{ sector: 30, block: 30, result: 'main-stale', errno: null }]);
  });

  it('as a message, with dmsetup\'s leading 0 too', async () => {
    await start();
    await pending(50);
    native.cfg.failReads.length = 0;
    const r = await request(sock, 'message', { words: ['0', 'recheck', '50'] });
    expect(r.reply).toBe('rechecked 1 lost block(s): 1 read on main again and are back there, 0 still unreadable\nsector 50 (block 50): recovered');
    expect(entry(50)).toBeUndefined();
  });

  it('runs by itself for pending blocks when an outage of main ends', async () => {
    await start();
    await pending(70);
    // Main drops: a failure in a device-gone way starts an outage.
    native.cfg.failReads.push({ device: 'main', offset: 0, bytes: 8 << 20, code: 'EIO' });
    const f = { ...readFault(9000), failed: [{ device: 'main' as const, block: 9000, blocks: 1, errno: 19 }] };
    device().emit(f);
    await waitFor(() => daemon?.['auto']?.outage.active === true);
    // Main is back, block 70 with it.
    native.cfg.failReads.length = 0;
    expect(await resolution(f)).toEqual({ action: 'retry' });
    await waitFor(() => entry(70) === undefined);
    expect((await request(sock, 'stats', {})).recoveredBlocks).toBe(1);
  });

  it('bad input: a sector beyond the device or a bad list is refused, nothing changes', async () => {
    await start();
    await pending(12);
    await expect(request(sock, 'recheck', { sectors: [1 << 30] })).rejects.toMatchObject({ code: 'E_OUT_OF_RANGE' });
    await expect(request(sock, 'recheck', { sectors: [] })).rejects.toMatchObject({ code: 'E_PROTOCOL' });
    await expect(request(sock, 'message', { words: ['recheck', 'x'] })).rejects.toMatchObject({ code: 'E_USAGE' });
    expect(entry(12)?.state).toBe('lost');
  });
});
