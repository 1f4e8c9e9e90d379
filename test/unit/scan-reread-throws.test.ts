// When the scanner's re-read for the policy throws (native EBUSY while a scan_read debug command runs, the remap
// table changing under it, a command halting the scan), nothing is decided: the policy answers 'undecided' and
// the scanner reads the chunk again later instead of moving past a block it knows fails. From the cold review (F4).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_POLICY } from '../../src/config/policy.js';
import { Daemon } from '../../src/device/daemon.js';
import type { AutoRemapper } from '../../src/device/auto-remap.js';
import { DmrError } from '../../src/errors.js';
import type { FakeNative } from '../../src/testing/fake-native.js';
import { deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemon: Daemon | null;
const auto = (): AutoRemapper => daemon?.['auto'] as AutoRemapper;
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

describe('a re-read that throws is not a decision', () => {
  it('answers something the scanner reads again later (not handled), or decides the block', async () => {
    daemon = await Daemon.start(deviceConfig(w, { policy: { ...DEFAULT_POLICY, readRetries: 2, retryBackoffMs: 0 } }), {
      native, runDir: w.runDir, log: quietLog(), logFile: null,
    });
    const verdict = await auto().scanReadFailed([{ block: 12, device: 'main', errno: 61 }], async () => {
      throw new DmrError('E_INTERNAL', 'scan: block 12 was re-read 3 times while the remap table changed; nothing is decided for it');
    });
    await auto().idle();
    // 'handled' makes Scanner.readRange advance the front past block 12 with nothing decided.
    expect(verdict === 'handled' && entry(12) === undefined).toBe(false);
  });
});
