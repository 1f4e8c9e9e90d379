// A block the scan could not read is marked pending (lost) only if it still fails when it is read once more
// under MOVING, after the drain: a user write that reached main after the policy's last failed read (a
// pending sector heals on write, and the scan reads free space, which is what a filesystem writes next) is
// acknowledged with no event reaching TypeScript (the block has no entry); marking the block lost then would
// throw that write away (invariant 1). From the cold review of the scanner (F2).
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_POLICY } from '../../src/config/policy.js';
import { Daemon } from '../../src/device/daemon.js';
import type { AutoRemapper } from '../../src/device/auto-remap.js';
import type { ScanBlockFailure } from '../../src/scan/scanner.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemon: Daemon | null;
const device = (): FakeDevice => native.devices.at(-1) as FakeDevice;
const auto = (): AutoRemapper => daemon?.['auto'] as AutoRemapper;
const bs = (): number => daemon?.status().blockSize as number;
const entry = (block: number): { state: string; origin: string } | undefined =>
  daemon?.['engine']?.store.table.get(block) as { state: string; origin: string } | undefined;

beforeEach(() => {
  w = makeWorld();
  native = fakeFor(w);
  daemon = null;
});
afterEach(async () => {
  await daemon?.shutdown('test');
  w.cleanup();
});

describe('a scan failure and a user write racing it', () => {
  it('a user write acknowledged on main between the last re-read and markLost is not thrown away', async () => {
    daemon = await Daemon.start(deviceConfig(w, { policy: { ...DEFAULT_POLICY, readRetries: 2, retryBackoffMs: 0 } }), {
      native, runDir: w.runDir, log: quietLog(), logFile: null,
    });
    const B = 12;
    native.cfg.failReads.push({ device: 'main', offset: B * bs(), bytes: bs(), code: 'ENODATA' });
    let tries = 0;
    const verdict = await auto().scanReadFailed([{ block: B, device: 'main', errno: 61 }], async (blocks) => {
      const out: ScanBlockFailure[] = [];
      for (const b of blocks) {
        const r = await device().scanRead(BigInt(b * bs()), bs(), true);
        for (const s of r.segments) if (s.skipped === null && s.errno !== 0) out.push({ block: s.block, device: s.device, errno: s.errno });
      }
      if (++tries === 2) {
        // Right after the last failed re-read: the user writes block B. No entry: ublk sends it to main, the
        // drive reallocates the pending sector, the write completes and the kernel acknowledges it.
        const fd = fs.openSync(w.main, 'r+');
        fs.writeSync(fd, Buffer.alloc(bs(), 0x77), 0, bs(), B * bs());
        fs.closeSync(fd);
        native.cfg.failReads.length = 0;
      }
      return out;
    });
    await auto().idle();
    expect(verdict).toBe('handled');
    // Main reads block B now, with the acknowledged data; the table must not make its reads fail.
    expect((await device().readRange('main', BigInt(B * bs()), bs())).equals(Buffer.alloc(bs(), 0x77))).toBe(true);
    expect(entry(B)?.state).not.toBe('lost');
  });
});
