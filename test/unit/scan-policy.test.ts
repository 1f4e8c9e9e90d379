// What a scan finds goes through the auto-remap policy (AutoRemapper.scanReadFailed / scanSlowBlock), against
// the daemon and the fake addon: unreadable blocks become pending (never invented data), blocks a retry reads
// are relocated with their data, slow blocks are relocated with their data, and nothing is decided with
// auto-remap off.
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_POLICY } from '../../src/config/policy.js';
import type { DeviceConfig } from '../../src/device/config.js';
import { Daemon } from '../../src/device/daemon.js';
import { DmrError } from '../../src/errors.js';
import type { AutoRemapper } from '../../src/device/auto-remap.js';
import type { NativeEvent } from '../../src/native.js';
import { ScanHalted, type ScanBlockFailure } from '../../src/scan/scanner.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemon: Daemon | null;

const start = async (over: Partial<DeviceConfig['policy']> = {}): Promise<Daemon> => {
  daemon = await Daemon.start(deviceConfig(w, { policy: { ...DEFAULT_POLICY, readRetries: 2, retryBackoffMs: 0, ...over } }), {
    native, runDir: w.runDir, log: quietLog(), logFile: null,
  });
  return daemon;
};
type Fault = Extract<NativeEvent, { type: 'io_fault' }>;
const device = (): FakeDevice => native.devices.at(-1) as FakeDevice;
const auto = (): AutoRemapper => daemon?.['auto'] as AutoRemapper;
const bs = (): number => daemon?.status().blockSize as number;
const entry = (block: number): { slot: number; state: string; origin: string } | undefined =>
  daemon?.['engine']?.store.table.get(block) as { slot: number; state: string; origin: string } | undefined;
/** The scanner's re-read: each block alone through scanRead; those that fail again. */
const reread = async (blocks: readonly number[]): Promise<ScanBlockFailure[]> => {
  const out: ScanBlockFailure[] = [];
  for (const b of blocks) {
    const r = await device().scanRead(BigInt(b * bs()), bs(), true);
    for (const s of r.segments) if (s.skipped === null && s.errno !== 0) out.push({ block: s.block, device: s.device, errno: s.errno });
  }
  return out;
};

beforeEach(() => {
  w = makeWorld();
  native = fakeFor(w);
  daemon = null;
});
afterEach(async () => {
  await daemon?.shutdown('test');
  w.cleanup();
});

describe('scan findings through the auto-remap policy', () => {
  it('a block that fails every retry is marked pending (lost, reads fail until written); counted as a read error', async () => {
    await start();
    native.cfg.failReads.push({ device: 'main', offset: 12 * bs(), bytes: bs(), code: 'EIO' });
    let calls = 0;
    const verdict = await auto().scanReadFailed([{ block: 12, device: 'main', errno: 5 }], async (b) => {
      calls++;
      return reread(b);
    });
    await auto().idle();
    expect(verdict).toBe('handled');
    expect(calls).toBe(2);
    expect(entry(12)).toMatchObject({ state: 'lost', origin: 'scan' });
    expect(auto().stats()).toMatchObject({ unrecoveredReads: 1, retries: 2, recoveredReads: 0 });
    expect(daemon?.['engine']?.store.counters().readErrors).toBe(1);
  });

  it('a block a retry reads is relocated with its data (errorThreshold 1)', async () => {
    await start({ errorThreshold: 1 });
    const data = Buffer.alloc(bs(), 0x5a);
    const fd = fs.openSync(w.main, 'r+');
    fs.writeSync(fd, data, 0, bs(), 20 * bs());
    fs.closeSync(fd);
    native.cfg.failReads.push({ device: 'main', offset: 20 * bs(), bytes: bs(), code: 'EIO' });
    const verdict = await auto().scanReadFailed([{ block: 20, device: 'main', errno: 5 }], async (b) => {
      native.cfg.failReads.length = 0; // it reads on the retry
      return reread(b);
    });
    await auto().idle();
    expect(verdict).toBe('handled');
    expect(entry(20)).toMatchObject({ state: 'mapped', origin: 'scan' });
    expect(device().calls).toContain('copyRange main->spare');
    const slotData = await device().readRange('spare', BigInt(daemon?.['engine']?.spareDataOffset as bigint) + BigInt((entry(20)?.slot as number) * bs()), bs());
    expect(slotData.equals(data)).toBe(true);
    expect(auto().stats()).toMatchObject({ recoveredReads: 1, relocations: 1, unrecoveredReads: 0 });
  });

  it('a slow block is relocated with its data', async () => {
    await start();
    auto().scanSlowBlock(33, 'main');
    await auto().idle();
    expect(entry(33)).toMatchObject({ state: 'mapped', origin: 'scan' });
    expect(auto().stats().relocations).toBe(1);
  });

  it('closed while the block is being marked: nothing decided (\'closed\': the next daemon reads it again)', async () => {
    await start({ readRetries: 0 });
    native.cfg.failReads.push({ device: 'main', offset: 12 * bs(), bytes: bs(), code: 'EIO' });
    const p = auto().scanReadFailed([{ block: 12, device: 'main', errno: 5 }], reread);
    const closing = auto().close();
    expect(await p).toBe('closed');
    await closing;
    expect(entry(12)).toBeUndefined();
  });

  it('with auto-remap off, a failed block is only counted; nothing is remapped', async () => {
    await start({ autoRemap: false });
    native.cfg.failReads.push({ device: 'main', offset: 12 * bs(), bytes: bs(), code: 'EIO' });
    let calls = 0;
    expect(await auto().scanReadFailed([{ block: 12, device: 'main', errno: 5 }], async (b) => (calls++, reread(b)))).toBe('handled');
    auto().scanSlowBlock(33, 'main');
    await auto().idle();
    expect(calls).toBe(0);
    expect(entry(12)).toBeUndefined();
    expect(entry(33)).toBeUndefined();
    expect(daemon?.['engine']?.store.counters().readErrors).toBe(1);
  });
});

describe('scan findings racing users and commands (from the cold review: F2, F4)', () => {
  it('a user write acknowledged on main between the last failed re-read and the marking is not thrown away', async () => {
    // A pending sector heals when written, and the scan reads free space, which is what a filesystem writes
    // next: the write reaches main with no event for TypeScript (the block has no entry). The block is read
    // once more under MOVING before it is marked: it reads, so it is not marked lost.
    await start();
    const B = 12;
    native.cfg.failReads.push({ device: 'main', offset: B * bs(), bytes: bs(), code: 'ENODATA' });
    let tries = 0;
    const verdict = await auto().scanReadFailed([{ block: B, device: 'main', errno: 61 }], async (blocks) => {
      const out = await reread(blocks);
      if (++tries === 2) {
        const fd = fs.openSync(w.main, 'r+');
        fs.writeSync(fd, Buffer.alloc(bs(), 0x77), 0, bs(), B * bs());
        fs.closeSync(fd);
        native.cfg.failReads.length = 0;
      }
      return out;
    });
    await auto().idle();
    expect(verdict).toBe('handled');
    expect((await device().readRange('main', BigInt(B * bs()), bs())).equals(Buffer.alloc(bs(), 0x77))).toBe(true);
    expect(entry(B)).toBeUndefined();
  });

  it("a re-read that throws (halted, refused, the table changing) decides nothing: 'undecided', the scanner reads it again", async () => {
    await start();
    const verdict = await auto().scanReadFailed([{ block: 12, device: 'main', errno: 61 }], async () => {
      throw new DmrError('E_INTERNAL', 'scan: block 12 was re-read 3 times while the remap table changed; nothing is decided for it');
    });
    await auto().idle();
    expect(verdict).toBe('undecided');
    expect(entry(12)).toBeUndefined();
  });
});

describe('a scan that found a dead zone and the users beside it (from the second cold review: N1, N2)', () => {
  // The scan's blocks are marked 8 at a time (one batch each), a batch's confirm reads two at a time: a
  // user's failed write elsewhere waits for one group, not for the whole zone.
  it('a user write failing elsewhere is not held for the whole batch of confirm reads (64 bad blocks x 100 ms)', async () => {
    await start({ readRetries: 0 });
    const bs = (daemon as Daemon).status().blockSize;
    const N = 64;
    const FIRST = 256;
    native.cfg.failReads.push({ device: 'main', offset: FIRST * bs, bytes: N * bs, code: 'ENODATA' });
    // Each read of a bad sector takes 100 ms (a real drive: seconds).
    const dev = device();
    const orig = dev.readRange.bind(dev);
    let confirmReads = 0;
    dev.readRange = async (from, offset, bytes) => {
      const b = Number(offset) / bs;
      if (from === 'main' && b >= FIRST && b < FIRST + N) {
        confirmReads++;
        await new Promise((r) => setTimeout(r, 100));
      }
      return orig(from, offset, bytes);
    };
    const failed = Array.from({ length: N }, (_, i) => ({ block: FIRST + i, device: 'main' as const, errno: 61 }));
    const scan = auto().scanReadFailed(failed, async (blocks) => blocks.map((block) => ({ block, device: 'main' as const, errno: 61 })));
    while (confirmReads === 0) await new Promise((r) => setTimeout(r, 5));
    // A user write to block 3 fails on main now: its redirect is a foreground job.
    const t0 = Date.now();
    const f: Fault = { type: 'io_fault', queue: 0, tag: 7, seq: 1, kind: 'error', op: 'write', block: 3, blocks: 1, attempt: 0, latencyUs: 100, written: [], failed: [{ device: 'main', block: 3, blocks: 1, errno: 5 }] };
    dev.emit(f);
    const action = await dev.awaitResolution(f, 20_000);
    const waited = Date.now() - t0;
    await scan;
    expect(action).toEqual({ action: 'retry' });
    // One confirm read of slack, not the whole batch (64 x 100 ms = 6.4 s).
    expect(waited).toBeLessThan(1000);
  }, 30_000);

  it('the same failed chunk read 3 times (paused twice during the re-reads) counts its 4 blocks once, not 12 times', async () => {
    await start();
    const failed = [12, 13, 14, 15].map((block) => ({ block, device: 'main' as const, errno: 61 }));
    for (let i = 0; i < 3; i++) {
      const v = await auto().scanReadFailed(failed, async () => {
        throw new ScanHalted();
      });
      expect(v).toBe('undecided');
    }
    await auto().idle();
    const readErrors = (daemon as Daemon).status().remap.readErrors;
    // Nothing was decided; the scanner counted nothing (errorsFound 0). At most one observation's worth.
    expect(readErrors).toBeLessThanOrEqual(4);
  });

  it("a block whose marking meets an outage ('outage': the scanner reads the chunk again) counts nothing, however many tries", async () => {
    await start({ readRetries: 0 });
    // Main stops answering between the policy's re-reads and the lost batch (its probe fails): OutageHold.
    (auto()['outage'] as unknown as { confirm: () => Promise<boolean> }).confirm = async () => true;
    for (let i = 0; i < 3; i++) {
      const v = await auto().scanReadFailed([{ block: 12, device: 'main', errno: 61 }], async (b) => b.map((block) => ({ block, device: 'main' as const, errno: 61 })));
      expect(v).toBe('outage');
    }
    await auto().idle();
    // 'outage' decides nothing and the scanner counts nothing for it; the persistent counter should not either.
    expect((daemon as Daemon).status().remap.readErrors).toBe(0);
  });

  it('a dead zone of 64 blocks is marked in groups of 8, two confirm reads at a time: 8 batches, not 64', async () => {
    await start({ readRetries: 0 });
    const bs = (daemon as Daemon).status().blockSize;
    const N = 64;
    const FIRST = 256;
    native.cfg.failReads.push({ device: 'main', offset: FIRST * bs, bytes: N * bs, code: 'ENODATA' });
    const dev = device();
    const orig = dev.readRange.bind(dev);
    let inFlight = 0;
    let maxInFlight = 0;
    dev.readRange = async (from, offset, bytes) => {
      const b = Number(offset) / bs;
      if (from === 'main' && b >= FIRST && b < FIRST + N) {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise((r) => setTimeout(r, 100));
        inFlight--;
      }
      return orig(from, offset, bytes);
    };
    const batches0 = auto().stats().queue.batches;
    const failed = Array.from({ length: N }, (_, i) => ({ block: FIRST + i, device: 'main' as const, errno: 61 }));
    const t0 = Date.now();
    const v = await auto().scanReadFailed(failed, async (blocks) => blocks.map((block) => ({ block, device: 'main' as const, errno: 61 })));
    const took = Date.now() - t0;
    const batches = auto().stats().queue.batches - batches0;
    expect(v).toBe('handled');
    expect(entry(FIRST)?.state).toBe('lost');
    // One batch (one drain, probe, commit and table publish) per group of 8, not one per block; two reads of
    // bad sectors at a time (the pool keeps room for the outage probe): 64 x 100 ms / 2 = 3.2 s, not 6.4 s.
    expect(batches).toBeLessThanOrEqual(64 / 8 + 1);
    expect(maxInFlight).toBe(2);
    expect(took).toBeLessThan(5000);
  }, 30_000);
});
