// Reads racing a write main refused (DESIGN.md, "Redirects"): while the write's block is redirected to a
// reserved spare slot (published REDIRECT), native parks a read of it (the fake addon's startRead routes
// reads as request_plan.cc does) until a table ends the redirect: its commit (the read returns the slot's
// data, the new write's) or its abandonment (the read returns main's data: the write never completed).
// A read parked when the daemon detaches is dropped for the kernel to reissue to the successor; a stop
// fails it with EIO. Writes racing the redirect land in the same slot and are committed there.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readEntryOf, writeEntry } from '../../src/control/registry.js';
import { Daemon } from '../../src/device/daemon.js';
import { REMAP_FLAG_REDIRECT, type FaultAction, type NativeEvent } from '../../src/native.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { DEAD_PID, deviceConfig, fakeFor, makeWorld, quietLog, RECOVERY_FEATURES, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemons: Daemon[];
let seq = 0;

const deps = () => ({ native, runDir: w.runDir, log: quietLog(), logFile: null, stateDir: path.join(w.root, 'state') });
const start = async (): Promise<Daemon> => {
  const d = await Daemon.start(deviceConfig(w), deps());
  daemons.push(d);
  return d;
};
const device = (): FakeDevice => native.devices.at(-1) as FakeDevice;
const resolution = (f: { tag: number; seq: number }): Promise<FaultAction> => device().awaitResolution(f);
const published = (block: number): number | undefined => {
  const t = device().remapTable;
  const i = t.blocks.indexOf(BigInt(block));
  return i < 0 ? undefined : t.flags[i];
};
const bs = (): number => (daemons[0] as Daemon).status().blockSize;
const fill = (byte: number): Buffer => Buffer.alloc(bs(), byte);

/** Writes `data` to main's file at `block`, under the daemon (what main holds before the test's write). */
function onMain(block: number, data: Buffer): void {
  const fd = fs.openSync(w.main, 'r+');
  try {
    fs.writeSync(fd, data, 0, data.length, block * data.length);
  } finally {
    fs.closeSync(fd);
  }
}

type Fault = Extract<NativeEvent, { type: 'io_fault' }>;
/** A one-block write main refused (native's first report of it). */
function refusedWrite(block: number, tag = 1): Fault {
  return { type: 'io_fault', queue: 0, tag, seq: ++seq, op: 'write', kind: 'error', block, blocks: 1, attempt: 0, latencyUs: 100, written: [], failed: [{ device: 'main', block, blocks: 1, errno: 5 }] };
}

/** Emits a refused write of `block` and waits until the daemon redirected it (published REDIRECT) and retries it. */
async function redirected(block: number): Promise<Fault> {
  const f = refusedWrite(block);
  device().emit(f);
  expect(await resolution(f)).toEqual({ action: 'retry' });
  expect(published(block)).toBe(REMAP_FLAG_REDIRECT);
  return f;
}

/** The retry of `f` as native runs it now: its data lands where the table sends it (the slot), reported lost_written. */
async function retryLands(f: Fault, data: Buffer, attempt: number): Promise<Fault> {
  const ev = await device().startWrite(f.tag, f.seq, f.block, data).complete();
  if (ev === null) throw new Error(`the retry of block ${f.block} touched no LOST or REDIRECT block`);
  return { ...ev, attempt };
}

beforeEach(() => {
  w = makeWorld();
  native = fakeFor(w, { features: RECOVERY_FEATURES });
  daemons = [];
});
afterEach(async () => {
  for (const d of daemons) await d.shutdown('test done');
  w.cleanup();
});

describe('a read racing a write main refused', () => {
  it('parks while the write is redirected and returns the new data once the commit maps the block at its slot', async () => {
    await start();
    onMain(5, fill(0xaa));
    const f = await redirected(5);
    const read = device().startRead(5, 1);
    expect(read.parked).toBe(true);
    const beside = device().startRead(4, 1); // a block beside it is not held
    expect(beside.parked).toBe(false);
    const landed = await retryLands(f, fill(0xbb), 1);
    expect(read.parked).toBe(true); // the data is in the slot, not committed yet: still held
    device().emit(landed);
    expect(await resolution(landed)).toEqual({ action: 'complete' });
    expect(published(5)).toBe(0);
    expect(await read.result).toEqual({ data: fill(0xbb) });
  });

  it('the redirect given up (its commit failed): the write fails, the read is released to main and returns its data', async () => {
    const d = await start();
    onMain(9, fill(0x11));
    const f = await redirected(9);
    const read = device().startRead(9, 1);
    expect(read.parked).toBe(true);
    const store = d['engine']?.store as unknown as { commitBatch: (...a: unknown[]) => Promise<unknown> };
    const orig = store.commitBatch.bind(store);
    store.commitBatch = () => Promise.reject(new Error('spare write failed'));
    const landed = await retryLands(f, fill(0x22), 1);
    device().emit(landed);
    expect(await resolution(landed)).toEqual({ action: 'fail', errno: 5 });
    store.commitBatch = orig;
    expect(published(9)).toBeUndefined();
    // Main still holds the block's last acknowledged data: the failed write never completed.
    expect(await read.result).toEqual({ data: fill(0x11) });
  });

  it('the redirect given up (its slot failed and the spare is full): the write fails, the read returns main\'s data', async () => {
    const d = await start();
    onMain(12, fill(0x33));
    const f = await redirected(12);
    const read = device().startRead(12, 1);
    const store = d['engine']?.store as unknown as { reserveSlot: () => Promise<number> };
    let reserved = 0;
    for (;;) {
      const r = await store.reserveSlot().then(() => null, (e: unknown) => e as { code?: string });
      if (r !== null) {
        expect(r.code).toBe('E_SPARE_FULL');
        break;
      }
      reserved++;
    }
    expect(reserved).toBeGreaterThan(0);
    // The retry fails in its slot: the block would move to a fresh slot, and there is none.
    const again = { ...f, attempt: 1, failed: [{ device: 'spare' as const, block: 12, blocks: 1, errno: 5 }] };
    device().emit(again);
    expect(await resolution(again)).toEqual({ action: 'fail', errno: 5 });
    expect(published(12)).toBeUndefined();
    expect(await read.result).toEqual({ data: fill(0x33) });
  });

  it('a second write racing the redirect lands in the same slot; both commit there, and reads return the one that landed last', async () => {
    await start();
    onMain(20, fill(0x01));
    const first = await redirected(20);
    const read = device().startRead(20, 1);
    // A second write of block 20, dispatched while the first is redirected: planned to the slot too.
    const second = device().startWrite(2, ++seq, 20, fill(0x02));
    const retry = device().startWrite(first.tag, first.seq, 20, fill(0x03));
    // The two are concurrent (neither acknowledged): the block may end with either; here the retry lands last.
    const secondLanded = await second.complete();
    const retryLanded = await retry.complete();
    expect(secondLanded?.kind).toBe('lost_written');
    expect(retryLanded?.written).toEqual(secondLanded?.written); // the same slot
    device().emit(secondLanded as Fault);
    expect(await resolution(secondLanded as Fault)).toEqual({ action: 'complete' });
    device().emit({ ...(retryLanded as Fault), attempt: 1 });
    expect(await resolution(retryLanded as Fault)).toEqual({ action: 'complete' });
    expect(await read.result).toEqual({ data: fill(0x03) });
    // A write after both were acknowledged goes to the committed slot with no report, and reads back.
    expect(await device().startWrite(3, ++seq, 20, fill(0x04)).complete()).toBeNull();
    expect(await device().startRead(20, 1).result).toEqual({ data: fill(0x04) });
  });
});

describe('a read that failed on main just before the block was redirected', () => {
  it('with no read retries configured it is not failed as if its block were marked pending: retried, it waits for the redirect and reads', async () => {
    const d = await Daemon.start(deviceConfig(w, { policy: { readRetries: 0 } } as never), deps());
    daemons.push(d);
    onMain(15, fill(0x15));
    const f = await redirected(15);
    // A read of block 15 dispatched before the redirect was published went to main and failed there (the
    // sector the write found bad). markLost leaves a redirected block alone (nothing is marked pending), yet the
    // read is failed with EIO and counted unrecovered, though its block is about to be readable.
    const readFault: Fault = { ...refusedWrite(15, 9), op: 'read' };
    device().emit(readFault);
    const res = await resolution(readFault);
    expect(res.action).not.toBe('fail');
    const landed = await retryLands(f, fill(0x16), 1);
    device().emit(landed);
    expect(await resolution(landed)).toEqual({ action: 'complete' });
  });
});

describe('a read parked on a redirect when the daemon goes', () => {
  it('a detach drops it (the kernel reissues it); after recover the reissued read is served from main, the redirect forgotten', async () => {
    const d = await start();
    const id = d.info.devId;
    onMain(7, fill(0x44));
    await redirected(7);
    const read = device().startRead(7, 1);
    expect(read.parked).toBe(true);
    await d.detach('upgrade');
    daemons = [];
    expect(await read.result).toEqual({ dropped: true });
    // The detached daemon's process exits; a successor recovers the device.
    const e = readEntryOf(w.runDir, id);
    if (e === null || e.version !== 2) throw new Error('no version 2 entry');
    writeEntry(w.runDir, { ...e, pid: DEAD_PID, pidStart: null });
    daemons.push(await Daemon.recover(id, deps()));
    // Nothing of the redirect was committed: the block is on main, where the reissued read goes at once.
    expect(published(7)).toBeUndefined();
    const again = device().startRead(7, 1);
    expect(again.parked).toBe(false);
    expect(await again.result).toEqual({ data: fill(0x44) });
  });

  it('a stop fails it with EIO (nothing will end the redirect any more)', async () => {
    const d = await start();
    onMain(3, fill(0x55));
    await redirected(3);
    const read = device().startRead(3, 1);
    await d.shutdown('test');
    daemons = [];
    expect(await read.result).toEqual({ errno: 'EIO' });
  });
});

describe('a read parked on a redirect when auto-remap is switched off', () => {
  const autoOf = (d: Daemon) => d['auto'] as unknown as { setAutoRemap(on: boolean): void; idle(): Promise<void> };

  it('the redirected write then fails (its retry fails in the slot): the redirect is given up and the read released to main', async () => {
    const d = await start();
    onMain(6, fill(0x66));
    const f = await redirected(6);
    const read = device().startRead(6, 1);
    expect(read.parked).toBe(true);
    // `set_auto_remap 0` while the write is redirected; its retry fails in the slot (reported: it was parked
    // before the switch took effect in native).
    autoOf(d).setAutoRemap(false);
    const again = { ...f, attempt: 1, failed: [{ device: 'spare' as const, block: 6, blocks: 1, errno: 5 }] };
    device().emit(again);
    expect(await resolution(again)).toEqual({ action: 'fail', errno: 5 });
    await autoOf(d).idle();
    // The write failed for good: nothing will ever commit the redirect, so the table must end it.
    expect(published(6)).toBeUndefined();
    expect(read.parked).toBe(false);
    expect(await read.result).toEqual({ data: fill(0x66) });
  });

  it('the redirected write then fails with parking off (native completes it with io_error, no io_fault): the redirect is not left published', async () => {
    const d = await start();
    onMain(8, fill(0x77));
    await redirected(8);
    const read = device().startRead(8, 1);
    expect(read.parked).toBe(true);
    autoOf(d).setAutoRemap(false);
    // Native with fault parking off (queue.cc Finish): the retry's failed slot write completes the request with
    // EIO and reports only an io_error (no tag, no io_fault): TypeScript never hears that the write ended.
    device().emit({ type: 'io_error', queue: 0, op: 'write', device: 'spare', sector: 0n, sectors: 8, errno: 5 } as NativeEvent);
    await new Promise((r) => setTimeout(r, 200));
    await autoOf(d).idle();
    // No write of block 8 is outstanding any more, yet a read of it must not wait forever.
    expect(published(8)).toBeUndefined();
    expect(read.parked).toBe(false);
  });
});
