// A main that refuses writes while it still reads (a drive gone read-only, dm-flakey error_writes), against
// the fake addon: main's reads work (the device-outage probe answers), the test reports failed writes as
// native would and moves native's count of writes main took (mainWritesOk) by hand. Spread write failures
// with no write taken are held, not redirected, until a write goes through; the same failures amid writes
// that go through are bad sectors and are redirected as before.
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { DEFAULT_POLICY, type FaultPolicy } from '../../src/config/policy.js';
import type { Stats } from '../../src/control/protocol.js';
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

const start = async (policy: Partial<FaultPolicy> = {}): Promise<void> => {
  daemon = await Daemon.start(deviceConfig(w, { policy: { ...DEFAULT_POLICY, ...policy } }), { native, runDir: w.runDir, log: quietLog(), logFile: null });
  sock = path.join(w.runDir, `${daemon.info.devId}.sock`);
};
const device = (): FakeDevice => native.devices.at(-1) as FakeDevice;
const stats = async (): Promise<Stats> => (await request(sock, 'stats', {})) as Stats;
const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
// 8 MiB main of 512-byte blocks: 256 blocks per region. One failed write in each of `n` regions:
const spread = (n: number): number[] => Array.from({ length: n }, (_, i) => Math.floor((i * 64) / n) * 256 + 3);
const writeFault = (block: number, attempt = 0, s = ++seq): Fault => ({
  type: 'io_fault', queue: 0, tag: s % 64, seq: s, op: 'write', kind: 'error', block, blocks: 1, attempt, latencyUs: 100, written: [],
  failed: [{ device: 'main', block, blocks: 1, errno: 5 }],
});
/**
 * A `blocks`-block write at `block` failing on main as native reports it: whole (one range: its first
 * try and every retry not narrowed), or narrowed (one backing I/O per block: only `bad` fails).
 */
const multiFault = (block: number, blocks: number, bad: number, narrowed: boolean, attempt: number, s = ++seq): Fault => ({
  type: 'io_fault', queue: 0, tag: s % 64, seq: s, op: 'write', kind: 'error', block, blocks, attempt, latencyUs: 100, written: [],
  failed: [narrowed ? { device: 'main', block: bad, blocks: 1, errno: 5 } : { device: 'main', block, blocks, errno: 5 }],
});
const resolutionOf = (f: Fault): FaultAction | undefined => device().resolutions.find((x) => x.tag === f.tag && x.seq === f.seq)?.action;
const resolution = (f: { tag: number; seq: number }, timeoutMs = 5000): Promise<FaultAction> => device().awaitResolution(f, timeoutMs);
/** Native's count of backing writes main did whole moves on by `n`. */
const emitted = (f: Fault): Fault => (device().emit(f), f);
const mainTakes = (n = 1): void => void ((device().queueStats[0] as { mainWritesOk: number }).mainWritesOk += n);
/**
 * Plays native while main refuses writes: a held write retried by a probe fails again (attempt + 1).
 * Runs for `ms`; returns the faults as last reported.
 */
async function refuseRetries(faults: Fault[], ms: number): Promise<Fault[]> {
  const cur = [...faults];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    await settle(20);
    cur.forEach((f, i) => {
      if (resolutionOf(f)?.action !== 'retry') return;
      device().takeResolution(f);
      const next = { ...f, attempt: f.attempt + 1 };
      cur[i] = next;
      device().emit(next);
    });
  }
  return cur;
}

/**
 * Plays native for one failed write until it completes or fails: a retry on main (a probe) fails again;
 * a retry after its blocks were redirected lands in their slots and comes back as lost_written. Returns
 * what became of it.
 */
async function untilRedirected(first: Fault, timeoutMs = 4000): Promise<string> {
  let f = first;
  for (;;) {
    const r = await resolution(f, timeoutMs);
    device().takeResolution(f);
    if (r.action !== 'retry') return `${r.action}${'errno' in r ? ` errno ${r.errno}` : ''}`;
    if (!device().remapTable.blocks.includes(BigInt(f.block))) {
      f = { ...f, attempt: f.attempt + 1 };
      device().emit(f);
      continue;
    }
    const lw: Fault = { ...f, attempt: f.attempt + 1, kind: 'lost_written', failed: [], written: device().writtenRanges(f.block, 1) };
    device().emit(lw);
    const r2 = await resolution(lw, timeoutMs);
    device().takeResolution(lw);
    return `redirected, then ${r2.action}`;
  }
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

describe('write outages of main (it refuses writes, still reads)', () => {
  it('writes failing in `write_outage_regions` regions with no write taken: held, not redirected; retried once main takes a write', async () => {
    await start({ writeOutageRegions: 4 });
    const [a, b, c, d, e] = spread(5) as [number, number, number, number, number];
    // The first three are indistinguishable from bad sectors yet: redirected (the rule needs 4 regions).
    const early = [writeFault(a), writeFault(b), writeFault(c)];
    for (const f of early) {
      device().emit(f);
      expect(await resolution(f)).toEqual({ action: 'retry' });
    }
    // The fourth completes the evidence: held; so is every write failing on main from now on.
    const held = [writeFault(d), writeFault(e), writeFault(a + 100)];
    for (const f of held) device().emit(f);
    const cur = await refuseRetries(held, 600);
    for (const f of cur) expect(resolutionOf(f), `block ${f.block}`).toBeUndefined();
    let s = await stats();
    expect(s.writeOutage).toMatchObject({ active: true, outages: 1, held: 3, heldTotal: 3 });
    expect(s.outage.active).toBe(false); // main reads: no device outage
    expect(s.health).toBe('critical');
    expect((await request(sock, 'status', {})).remap.health).toBe('critical');
    const table = device().remapTable.blocks;
    for (const f of held) expect(table).not.toContain(BigInt(f.block));
    // Probes retried held writes meanwhile (their retries failed again).
    expect(cur.some((f) => f.attempt > 0)).toBe(true);
    // Main takes a write again (the device came back writable): the next probe sees it; all are retried.
    mainTakes();
    for (const f of cur) expect(await resolution(f, 3000)).toEqual({ action: 'retry' });
    for (const f of cur) device().emit({ type: 'fault_cleared', queue: 0, tag: f.tag, seq: f.seq, attempts: f.attempt + 2 });
    await daemon?.['auto']?.idle();
    s = await stats();
    expect(s.writeOutage).toMatchObject({ active: false, outages: 1, held: 0, failedAfterHold: 0 });
    expect(s).toMatchObject({ lostBlocks: 0, pendingBlocks: 0 });
    expect(s.autoRemaps).toBe(0); // the three early redirects were never committed (no lost_written here)
    for (const f of held) expect(daemon?.['engine']?.store.table.get(f.block)).toBeUndefined();
  });

  it('a held write retried by a probe that goes through ends the write outage', async () => {
    await start({ writeOutageRegions: 2 });
    const [a, b] = spread(2) as [number, number];
    const first = writeFault(a);
    device().emit(first);
    expect(await resolution(first)).toEqual({ action: 'retry' });
    const f = writeFault(b);
    device().emit(f);
    // The probe retries it (the only one held): this time native completes it.
    expect(await resolution(f, 3000)).toEqual({ action: 'retry' });
    device().takeResolution(f);
    mainTakes();
    device().emit({ type: 'fault_cleared', queue: 0, tag: f.tag, seq: f.seq, attempts: 2 });
    const deadline = Date.now() + 3000;
    while ((await stats()).writeOutage.active && Date.now() < deadline) await settle(20);
    expect((await stats()).writeOutage).toMatchObject({ active: false, outages: 1, held: 0 });
  });

  it('the same spread of failures with writes going through between them is bad sectors: each write redirected, no write outage', async () => {
    await start({ writeOutageRegions: 4 });
    const faults = spread(12).map((b) => writeFault(b));
    for (const f of faults) {
      mainTakes(5); // the workload's other writes land on main
      device().emit(f);
      expect(await resolution(f), `block ${f.block}`).toEqual({ action: 'retry' });
    }
    const table = device().remapTable.blocks;
    for (const f of faults) expect(table).toContain(BigInt(f.block));
    const s = await stats();
    expect(s.writeOutage).toMatchObject({ active: false, outages: 0, heldTotal: 0 });
    expect(s.writeOutage.mainWritesOk).toBe(60);
  });

  it('main refusing writes past outage_hold_ms: each held write is redirected to the spare when its hold ends; nothing lost', async () => {
    await start({ writeOutageRegions: 2, outageHoldMs: 300 });
    const faults = spread(4).map((b) => writeFault(b));
    device().emit(faults[0] as Fault);
    expect(await resolution(faults[0] as Fault)).toEqual({ action: 'retry' });
    const held = faults.slice(1);
    const t0 = Date.now();
    for (const f of held) device().emit(f);
    const outcome = await Promise.all(held.map((f) => untilRedirected(f)));
    expect(outcome).toEqual(held.map(() => 'redirected, then complete'));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    await daemon?.['auto']?.idle();
    const s = await stats();
    // Main still took no write: the write outage goes on (health critical), its writes are redirected one hold each.
    expect(s.writeOutage).toMatchObject({ active: true, failedAfterHold: 3, held: 0 });
    expect(s).toMatchObject({ lostBlocks: 0, pendingBlocks: 0, health: 'critical' });
    for (const f of held) expect(daemon?.['engine']?.store.table.get(f.block)?.state).toBe('mapped');
  });

  it('multi-block writes failing whole are no evidence until narrowed: then per-block failures with no write taken are', async () => {
    await start({ writeOutageRegions: 4 });
    // 2-block writes failing whole in 6 regions (in the first 1000 blocks of each region: no two collide).
    const whole = spread(6).map((b) => ({ ...writeFault(b), blocks: 2, failed: [{ device: 'main' as const, block: b, blocks: 2, errno: 5 }] }));
    for (const f of whole) {
      device().emit(f);
      expect(await resolution(f), `block ${f.block}`).toEqual({ action: 'retry', narrow: true });
    }
    expect((await stats()).writeOutage.active).toBe(false);
    // Their narrowed retries fail on every block, and main took no write: a write outage.
    const narrowed = whole.map((f) => {
      device().takeResolution(f);
      return { ...f, attempt: 1, failed: [{ device: 'main' as const, block: f.block, blocks: 1, errno: 5 }, { device: 'main' as const, block: f.block + 1, blocks: 1, errno: 5 }] };
    });
    for (const f of narrowed) device().emit(f);
    await settle(150);
    expect((await stats()).writeOutage).toMatchObject({ active: true, outages: 1 });
    expect(resolutionOf(narrowed.at(-1) as Fault)).toBeUndefined();
  });
  it('main takes writes again while a probe retry is still out (slow on main): the next probe sees it; other held writes are retried', async () => {
    await start({ writeOutageRegions: 2, outageHoldMs: 2500 });
    const [a, b, c] = spread(3) as [number, number, number];
    const first = writeFault(a);
    device().emit(first);
    expect(await resolution(first)).toEqual({ action: 'retry' });
    const probed = writeFault(b);
    device().emit(probed); // completes the evidence: held; the first probe retries it
    expect(await resolution(probed, 3000)).toEqual({ action: 'retry' });
    device().takeResolution(probed); // its retry never comes back
    const other = writeFault(c);
    device().emit(other);
    await settle(100);
    expect((await stats()).writeOutage.active).toBe(true);
    mainTakes(100);
    // Retried when the outage ends, well before its hold (2500 ms) would end.
    expect(await resolution(other, 2000)).toEqual({ action: 'retry' });
    expect(device().remapTable.blocks).not.toContain(BigInt(c));
  });

  it('a probe retry that never reports back (native completed it, auto-remap off): a write main takes still ends the outage', async () => {
    await start({ writeOutageRegions: 2, outageHoldMs: 1500 });
    const [a, b] = spread(2) as [number, number];
    const first = writeFault(a);
    device().emit(first);
    expect(await resolution(first)).toEqual({ action: 'retry' });
    const probed = writeFault(b);
    device().emit(probed);
    expect(await resolution(probed, 3000)).toEqual({ action: 'retry' });
    device().takeResolution(probed);
    mainTakes(1000);
    const deadline = Date.now() + 3000;
    while ((await stats()).writeOutage.active && Date.now() < deadline) await settle(20);
    expect((await stats()).writeOutage.active, 'still in a write outage although main took 1000 writes').toBe(false);
  });

  it('auto-remap switched off while a probe retry is out: the probe is told, and the next probe retries another held write', async () => {
    await start({ writeOutageRegions: 2, outageHoldMs: 3000 });
    const [a, b, c] = spread(3) as [number, number, number];
    const first = writeFault(a);
    device().emit(first);
    expect(await resolution(first)).toEqual({ action: 'retry' });
    const probed = writeFault(b);
    device().emit(probed);
    expect(await resolution(probed, 3000)).toEqual({ action: 'retry' });
    device().takeResolution(probed);
    // Parking off: native completes the retry itself, no event reaches the daemon.
    await request(sock, 'set_auto_remap', { enabled: false });
    await request(sock, 'set_auto_remap', { enabled: true });
    const other = writeFault(c);
    device().emit(other);
    // A probe retries it on main (not redirected), long before its hold ends.
    expect(await resolution(other, 2000)).toEqual({ action: 'retry' });
    expect(device().remapTable.blocks).not.toContain(BigInt(c));
  });

  it('bad sectors rewritten one at a time in 8 regions, no other write (the default rule sees a write outage): each write is redirected, the last after its hold', async () => {
    await start({ outageHoldMs: 1500 }); // write_outage_regions 8
    const outcome: string[] = [];
    for (const b of spread(8)) outcome.push(await untilRedirected(emitted(writeFault(b))));
    expect(outcome).toEqual(Array(8).fill('redirected, then complete'));
    expect((await stats()).writeOutage).toMatchObject({ active: true, failedAfterHold: 1 });
  });

  it('during a write outage a write failing on a spare slot moves to a fresh slot at once (it is not held)', async () => {
    await start({ writeOutageRegions: 2, outageHoldMs: 1500 });
    const [a, b] = spread(2) as [number, number];
    // a: a bad sector, remapped (redirect, lost_written, committed).
    expect(await untilRedirected(emitted(writeFault(a)))).toBe('redirected, then complete');
    const slotBefore = daemon?.['engine']?.store.table.get(a)?.slot;
    expect(slotBefore).toBeDefined();
    // b's failure (another region, no write taken since a's) completes the evidence.
    device().emit(writeFault(b));
    await settle(100);
    expect((await stats()).writeOutage.active).toBe(true);
    // A write to a fails on its slot: the spare's failure, not main's.
    const s: Fault = { ...writeFault(a), failed: [{ device: 'spare', block: a, blocks: 1, errno: 5 }] };
    device().emit(s);
    expect(await resolution(s, 1000)).toEqual({ action: 'retry' });
    const slotAfter = daemon?.['engine']?.store.table.get(a)?.slot;
    expect(slotAfter).toBeDefined();
    expect(slotAfter).not.toBe(slotBefore);
  });
  it('a multi-block write with one bad block, held in a write outage more times than MAX_WRITE_ATTEMPTS (whole, narrowed, held, retried whole...): finally redirected, never failed', async () => {
    await start({ writeOutageRegions: 2, outageHoldMs: 10_000 });
    // 256 blocks (region 20, the whole of it), one bad block; each time a write outage is entered, main
    // fails a one-block write in region 40 first (a bad sector there: redirected), then the narrowed
    // retry's bad block completes the evidence. Main takes a write then: the outage ends, held writes are
    // retried whole.
    const block = 20 * 256;
    const bad = block + 100;
    const first = multiFault(block, 256, bad, false, 0);
    let f = first;
    const next = (narrowed: boolean): Fault => multiFault(block, 256, bad, narrowed, f.attempt + 1, f.seq);
    device().emit(f);
    expect(await resolution(f)).toEqual({ action: 'retry', narrow: true });
    const cycles = 10; // each cycle: two tries of its own before d48e675; 8 (MAX_WRITE_ATTEMPTS) failed it
    for (let i = 0; i < cycles; i++) {
      const other = emitted(writeFault(40 * 256 + i));
      expect(await resolution(other), `cycle ${i}: the other region's bad sector`).toEqual({ action: 'retry' });
      f = emitted(next(true)); // its bad block fails again: a write outage begins; the write is held
      const deadline = Date.now() + 1000;
      while (!(await stats()).writeOutage.active && Date.now() < deadline) await settle(5);
      expect((await stats()).writeOutage.active, `cycle ${i}: write outage`).toBe(true);
      expect(resolutionOf(f), `cycle ${i}: held`).toBeUndefined();
      if (i % 2 === 1) {
        // A probe retries it whole (the write held longest); it fails whole again: held again, not narrowed.
        expect(await resolution(f, 1000), `cycle ${i}: probe retry`).toEqual({ action: 'retry' });
        f = emitted(next(false));
        await settle(20);
        expect(resolutionOf(f), `cycle ${i}: held again after the probe`).toBeUndefined();
      }
      mainTakes();
      expect(await resolution(f, 1000), `cycle ${i}: released when main takes a write`).toEqual({ action: 'retry' });
      f = emitted(next(false)); // retried whole: fails whole; narrowed again
      expect(await resolution(f), `cycle ${i}: narrowed again`).toEqual({ action: 'retry', narrow: true });
    }
    expect(f.attempt).toBeGreaterThanOrEqual(2 * 8);
    // The narrowed retry fails on its bad block once more, no write outage now (one region): a bad sector.
    f = emitted(next(true));
    expect(await resolution(f), 'after the last narrowing').toEqual({ action: 'retry' });
    expect(device().remapTable.blocks).toContain(BigInt(bad));
    const lw: Fault = { ...next(false), kind: 'lost_written', failed: [], written: device().writtenRanges(block, 256) };
    expect(lw.written).toEqual([expect.objectContaining({ block: bad, blocks: 1 })]);
    device().emit(lw);
    expect(await resolution(lw)).toEqual({ action: 'complete' });
    expect(device().resolutions.filter((r) => r.seq === first.seq && r.action.action === 'fail')).toEqual([]);
    await daemon?.['auto']?.idle();
    expect(daemon?.['engine']?.store.table.get(bad)?.state).toBe('mapped');
    for (const b of [block, bad - 1, bad + 1, block + 255]) expect(daemon?.['engine']?.store.table.get(b), `block ${b}`).toBeUndefined();
    expect((await stats()).writeOutage).toMatchObject({ outages: cycles, failedAfterHold: 0, held: 0 });
  });
});
