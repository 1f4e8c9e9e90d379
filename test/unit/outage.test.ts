// Device-wide outages of main against the fake addon: main's reads (the probes) fail everywhere while the
// test reports failed requests as native would. Held requests get no answer until main reads again; then
// they are retried. Nothing is remapped or marked lost, also for faults already being narrowed.
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { DEFAULT_POLICY, type FaultPolicy } from '../../src/config/policy.js';
import { Daemon } from '../../src/device/daemon.js';
import type { FaultAction, NativeEvent } from '../../src/native.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemon: Daemon | null;
let sock: string;
let seq = 0;

type Fault = Extract<NativeEvent, { type: 'io_fault' }>;
type Stats = { lostBlocks: number; autoRemaps: number; pendingBlocks: number; recoveredReads: number; passedThrough: number; health: string;
  outage: { active: boolean; outages: number; held: number; heldTotal: number; failedAfterHold: number } };

const start = async (policy: Partial<FaultPolicy> = {}): Promise<void> => {
  daemon = await Daemon.start(deviceConfig(w, { policy: { ...DEFAULT_POLICY, ...policy } }), { native, runDir: w.runDir, log: quietLog(), logFile: null });
  sock = path.join(w.runDir, `${daemon.info.devId}.sock`);
};
const device = (): FakeDevice => native.devices.at(-1) as FakeDevice;
const stats = async (): Promise<Stats> => (await request(sock, 'stats', {})) as unknown as Stats;
const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const MAIN = 8 << 20; // 16384 blocks of 512 bytes: 256 per region
const mainDown = (code = 'EIO'): void => void native.cfg.failReads.push({ device: 'main', offset: 0, bytes: MAIN, code });
const mainUp = (): void => void (native.cfg.failReads.length = 0);
const fault = (op: 'read' | 'write', block: number, errno = 5, attempt = 0, s = ++seq): Fault => ({
  type: 'io_fault', queue: 0, tag: block % 64, seq: s, op, kind: 'error', block, blocks: 1, attempt, latencyUs: 100, written: [],
  failed: [{ device: 'main', block, blocks: 1, errno }],
});
/** The resolution of `f` if there is one, left in place. */
const resolutionOf = (f: Fault): FaultAction | undefined => device().resolutions.find((x) => x.tag === f.tag && x.seq === f.seq)?.action;
const resolution = (f: { tag: number; seq: number }, timeoutMs = 5000): Promise<FaultAction> => device().awaitResolution(f, timeoutMs);
/**
 * Plays native while main is down: a request told to retry fails again (attempt + 1), until every one is
 * held (no answer) or answered otherwise. Returns the faults as last reported.
 */
async function failRetries(faults: Fault[]): Promise<Fault[]> {
  const cur = [...faults];
  for (let round = 0; round < 20; round++) {
    await settle(40);
    let any = false;
    cur.forEach((f, i) => {
      const a = resolutionOf(f);
      if (a?.action !== 'retry') return;
      device().takeResolution(f);
      const next = { ...f, attempt: f.attempt + 1 };
      cur[i] = next;
      device().emit(next);
      any = true;
    });
    if (!any) return cur;
  }
  throw new Error('requests kept being retried');
}
const entry = (block: number): unknown => daemon?.['engine']?.store.table.get(block);

beforeEach(() => {
  w = makeWorld();
  native = fakeFor(w);
  daemon = null;
});
afterEach(async () => {
  await daemon?.shutdown('test');
  w.cleanup();
});

describe('outages of main', () => {
  it('failures spread over the device while main does not answer: held (no remap, nothing lost), retried when main answers', async () => {
    await start();
    mainDown();
    const faults = [fault('write', 10), fault('read', 4100), fault('write', 8200), fault('read', 12300), fault('write', 16000)];
    for (const f of faults) device().emit(f);
    // The first reads are retried before the failures look spread; their retries fail and are held.
    await failRetries(faults);
    for (const f of faults) expect(resolutionOf(f), `block ${f.block}`).toBeUndefined();
    let s = await stats();
    expect(s.outage).toMatchObject({ active: true, outages: 1, held: 5, heldTotal: 5 });
    expect(s.health).toBe('critical');
    expect((await request(sock, 'status', {})).remap.line).toContain(' health=critical ');
    expect(device().remapTable.blocks).toEqual([]);
    // New failures during the outage are held at once, whatever their place: a read gets no retry.
    const late = fault('read', 11);
    device().emit(late);
    await settle(50);
    expect(resolutionOf(late)).toBeUndefined();
    mainUp();
    for (const f of [...faults, late]) expect(await resolution(f, 3000)).toEqual({ action: 'retry' });
    for (const f of [...faults, late]) device().emit({ type: 'fault_cleared', queue: 0, tag: f.tag, seq: f.seq, attempts: 1 });
    await daemon?.['auto']?.idle();
    s = await stats();
    // The health model: an outage that ended and the errors it caused are `watch` (nothing lost, no slot used).
    expect(s).toMatchObject({ lostBlocks: 0, autoRemaps: 0, pendingBlocks: 0, recoveredReads: 0, health: 'watch' });
    expect(s.outage).toMatchObject({ active: false, outages: 1, held: 0, heldTotal: 6 });
    expect((await request(sock, 'status', {})).remap.health).not.toBe('critical');
    for (const f of faults) expect(entry(f.block)).toBeUndefined();
    // Retried whole (not narrowed), and a failure after that goes the usual way, its retries intact.
    const again = { ...fault('read', 4100, 5, 1, faults[1]?.seq), tag: (faults[1] as Fault).tag };
    device().emit(again);
    expect(await resolution(again)).toEqual({ action: 'retry', narrow: true });
  });

  it('a device-gone errno (ENODEV) starts an outage at the first failure: the read is held, not retried', async () => {
    await start();
    mainDown('ENODEV');
    const f = fault('read', 100, 19);
    device().emit(f);
    await settle(100);
    expect(resolutionOf(f)).toBeUndefined();
    expect((await stats()).outage.active).toBe(true);
    mainUp();
    expect(await resolution(f)).toEqual({ action: 'retry' });
  });

  it('a read being narrowed when main goes away is held at the last step, not marked pending', async () => {
    await start({ readRetries: 1, retryBackoffMs: 0 });
    // One failure in one place: a bad sector as far as anyone can tell.
    const f = fault('read', 300);
    device().emit(f);
    expect(await resolution(f)).toEqual({ action: 'retry', narrow: true });
    // Main drops before the retry; the retry fails too, and would mark the block pending.
    mainDown();
    device().emit({ ...f, attempt: 1 });
    await settle(150);
    expect(resolutionOf(f)).toBeUndefined();
    expect(entry(300)).toBeUndefined();
    expect((await stats()).outage).toMatchObject({ active: true, held: 1 });
    mainUp();
    expect(await resolution(f)).toEqual({ action: 'retry' });
    device().emit({ type: 'fault_cleared', queue: 0, tag: f.tag, seq: f.seq, attempts: 2 });
    await daemon?.['auto']?.idle();
    expect(entry(300)).toBeUndefined();
    expect((await stats()).pendingBlocks).toBe(0);
  });

  it('a write being redirected when main goes away is held, not remapped', async () => {
    await start();
    mainDown();
    const f = fault('write', 500); // one place only: no suspicion until the redirect batch probes main
    device().emit(f);
    await settle(150);
    expect(resolutionOf(f)).toBeUndefined();
    expect(device().remapTable.blocks).toEqual([]);
    mainUp();
    expect(await resolution(f)).toEqual({ action: 'retry' });
    expect(entry(500)).toBeUndefined();
  });

  it('main not answering within outage_hold_ms: the held requests fail with their errno, nothing marked lost', async () => {
    await start({ outageHoldMs: 300 });
    mainDown();
    const faults = [fault('read', 10, 5), fault('write', 6000, 5), fault('read', 9000, 5), fault('write', 15000, 5)];
    const t0 = Date.now();
    for (const f of faults) device().emit(f);
    await failRetries(faults);
    for (const f of faults) expect(await resolution(f, 5000)).toEqual({ action: 'fail', errno: 5 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    const s = await stats();
    expect(s).toMatchObject({ lostBlocks: 0, autoRemaps: 0, pendingBlocks: 0 });
    expect(s.outage).toMatchObject({ active: true, held: 0, failedAfterHold: 4 });
    expect(device().remapTable.blocks).toEqual([]);
    mainUp();
    await settle(1200);
    expect((await stats()).outage.active).toBe(false);
  });

  it('a bad sector while main answers is no outage: the read is marked pending as before', async () => {
    await start({ readRetries: 0, retryBackoffMs: 0 });
    native.cfg.failReads.push({ device: 'main', offset: 700 * 512, bytes: 512, code: 'EIO' });
    const f = fault('read', 700);
    device().emit(f);
    expect(await resolution(f)).toEqual({ action: 'fail', errno: 5 });
    expect(entry(700)).toMatchObject({ state: 'lost' });
    expect((await stats()).outage).toMatchObject({ active: false, outages: 0 });
  });
  it('a write whose batch waited in the engine past the outage\'s end is retried, not held for ever', async () => {
    await start();
    mainDown();
    // The engine's chain is busy (a slow spare flush, a relocation) for 400 ms.
    const engine = daemon?.['engine'] as unknown as { serial: (fn: () => Promise<void>) => Promise<void> };
    void engine.serial(() => settle(400));
    const f = fault('write', 500);
    device().emit(f);
    // The redirect batch's probe fails: an outage begins; main is back 100 ms later and the outage ends,
    // with nothing held yet: the batch still waits for the engine.
    await settle(100);
    mainUp();
    expect(await resolution(f, 2500)).toEqual({ action: 'retry' });
    expect((await stats()).outage).toMatchObject({ active: false, outages: 1, held: 0 });
    expect(entry(500)).toBeUndefined();
  });

  it('a held write that fails after outage_hold_ms gives its earlier redirect up: the block is back on main, the slot free', async () => {
    await start({ outageHoldMs: 300 });
    const free0 = daemon?.['engine']?.store.allocator.free as number;
    // A 2-block write fails on block 500 only: 500 is redirected to a slot, the write retried.
    const f: Fault = { ...fault('write', 500), blocks: 2 };
    device().emit(f);
    expect(await resolution(f)).toEqual({ action: 'retry' });
    expect(device().remapTable.blocks).toContain(500n);
    // Main drops; the retry fails on block 501 (500 went to its slot): held, then failed after the hold.
    mainDown();
    const again: Fault = { ...f, attempt: 1, failed: [{ device: 'main', block: 501, blocks: 1, errno: 5 }] };
    device().emit(again);
    expect(await resolution(f, 3000)).toEqual({ action: 'fail', errno: 5 });
    await daemon?.['auto']?.idle();
    expect(device().remapTable.blocks).not.toContain(500n);
    expect(entry(500)).toBeUndefined();
    expect(daemon?.['engine']?.store.allocator.free).toBe(free0);
    expect((await stats()).outage).toMatchObject({ failedAfterHold: 1 });
  });

  it('the probe skips blocks in the table: bad first, middle and last blocks do not make bad sectors look like an outage', async () => {
    await start({ readRetries: 0, retryBackoffMs: 0 });
    const bad = (b: number): void => void native.cfg.failReads.push({ device: 'main', offset: b * 512, bytes: 512, code: 'EIO' });
    // Blocks 0, 8192 and 16383 are bad and remapped (lost: main could not be read).
    for (const b of [0, 8192, 16383]) {
      bad(b);
      await request(sock, 'remap', { sector: b });
    }
    // Bad sectors in four regions within the window: the spread rule suspects an outage and main is probed.
    const faults = [fault('read', 100), fault('read', 4200), fault('read', 8300), fault('read', 12400)];
    for (const f of faults) bad(f.block);
    for (const f of faults) device().emit(f);
    for (const f of faults) expect(await resolution(f)).toEqual({ action: 'fail', errno: 5 });
    for (const f of faults) expect(entry(f.block)).toMatchObject({ state: 'lost' });
    expect((await stats()).outage).toMatchObject({ active: false, outages: 0 });
  });

  it('manual remap and recheck are refused during an outage (E_OUTAGE): they would mark blocks lost whose data is on main', async () => {
    await start();
    mainDown('ENODEV');
    const f = fault('read', 100, 19);
    device().emit(f);
    await settle(100);
    expect((await stats()).outage.active).toBe(true);
    await expect(request(sock, 'remap', { sector: 800 })).rejects.toMatchObject({ code: 'E_OUTAGE' });
    await expect(request(sock, 'recheck', {})).rejects.toMatchObject({ code: 'E_OUTAGE' });
    await expect(request(sock, 'message', { words: ['remap', '800'] })).rejects.toMatchObject({ code: 'E_OUTAGE' });
    // verify of a block on main too: its read would only hold a pool thread until the outage ends.
    await expect(request(sock, 'verify', { sector: 800 })).rejects.toMatchObject({ code: 'E_OUTAGE', message: 'verify refused: main is in an outage (it does not answer); try again once it ends' });
    expect(entry(100)).toBeUndefined();
    expect(entry(800)).toBeUndefined();
    mainUp();
    expect(await resolution(f)).toEqual({ action: 'retry' });
    await expect(request(sock, 'remap', { sector: 800 })).resolves.toMatchObject({ state: 'mapped' });
  });
});
