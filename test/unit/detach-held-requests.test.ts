// An in-place restart (Daemon.detach) never fails a request with an I/O error (invariant 7). Faults held
// for TypeScript when detach begins, and those reported while it runs, are left to native detach
// (uncommitted: the kernel reissues them to the successor). Without AutoRemapper.close({ leaveHeld }) the
// closing work queue answered queued foreground jobs with 'the device is stopping', writeFailed /
// readFailed / lostWritten took that as a failure and resolved the faults 'fail' (EIO), and faults arriving
// after auto-remap closed were failed at once, all before native detach, while the queues still complete
// what is resolved.
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readEntryOf, writeEntry, type RegistryEntryV2 } from '../../src/control/registry.js';
import { DEFAULT_POLICY } from '../../src/config/policy.js';
import { Daemon, RESTART_EXIT_CODE } from '../../src/device/daemon.js';
import type { NativeEvent } from '../../src/native.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { deviceConfig, fakeFor, makeWorld, quietLog, RECOVERY_FEATURES, type World } from './helpers.js';

let w: World;
let native: FakeNative;
type Fault = Extract<NativeEvent, { type: 'io_fault' }>;
let seq = 0;
const fault = (over: Partial<Fault> & Pick<Fault, 'op' | 'failed'>): Fault =>
  ({ type: 'io_fault', queue: 0, tag: 1, seq: ++seq, kind: 'error', block: 0, blocks: 1, attempt: 0, latencyUs: 100, written: [], ...over });

const deps = () => ({ native, runDir: w.runDir, log: quietLog(), logFile: null, stateDir: path.join(w.root, 'state') });
const start = (over: Parameters<typeof deviceConfig>[1] = {}): Promise<Daemon> => Daemon.start(deviceConfig(w, over), deps());

/** The resolutions the daemon gave before it asked native to detach (each 'fail' reaches the user as EIO). */
const beforeDetach = (dev: FakeDevice): string[] => dev.calls.slice(0, dev.calls.indexOf('detach')).filter((c) => c.startsWith('resolveFault'));

beforeEach(() => {
  w = makeWorld();
  native = fakeFor(w, { features: RECOVERY_FEATURES });
});
afterEach(() => w.cleanup());

describe('detach (restart) never fails a held request', () => {
  it('write faults whose redirects are queued when restart begins are left for reissue, not failed', async () => {
    const d = await start();
    const dev = native.devices.at(-1) as FakeDevice;
    // Several single-block write faults on main, as under fio when a bad region is hit: their redirects queue.
    for (let i = 0; i < 8; i++) dev.emit(fault({ op: 'write', tag: i, block: 100 + i * 16, failed: [{ device: 'main', block: 100 + i * 16, blocks: 1, errno: 5 }] }));
    expect(await d.detach('restart requested over the control socket')).toBe(RESTART_EXIT_CODE);
    expect(dev.calls).toContain('detach');
    expect(beforeDetach(dev).filter((c) => c === 'resolveFault fail')).toEqual([]);
  });

  it('a read whose lost-blocks job is queued, and a written lost block whose commit is queued, are not failed', async () => {
    const d = await start();
    const dev = native.devices.at(-1) as FakeDevice;
    // A read that failed on every retry (attempt = readRetries): its blocks' 'lost' job queues.
    dev.emit(fault({ op: 'read', tag: 1, block: 300, attempt: 3, failed: [{ device: 'main', block: 300, blocks: 1, errno: 5 }] }));
    // A write whose data went to a LOST block's slot: its 'slot-write' commit queues.
    dev.emit(fault({ op: 'write', tag: 2, kind: 'lost_written', block: 400, failed: [], written: [{ block: 400, slot: 0, blocks: 1 }] }));
    expect(await d.detach('restart requested over the control socket')).toBe(RESTART_EXIT_CODE);
    expect(beforeDetach(dev).filter((c) => c === 'resolveFault fail')).toEqual([]);
  });

  it('a fault arriving after detach began (auto-remap closed, native not yet detached) is not failed', async () => {
    const d = await start();
    const dev = native.devices.at(-1) as FakeDevice;
    let done = false;
    const p = d.detach('restart requested over the control socket').then(() => (done = true));
    // Faults keep arriving while detach runs (fio does not stop for a restart), until native detach is asked.
    for (let i = 0; !done && !dev.calls.includes('detach') && i < 1000; i++) {
      dev.emit(fault({ op: 'write', tag: 3 + (i % 60), block: 40 + i * 16, failed: [{ device: 'main', block: 40 + i * 16, blocks: 1, errno: 5 }] }));
      await new Promise((r) => setImmediate(r));
    }
    await p;
    expect(beforeDetach(dev)).toEqual([]);
  });

  it('shutdown (no successor) still fails the requests it drops: only a detach leaves them held', async () => {
    const d = await start();
    const dev = native.devices.at(-1) as FakeDevice;
    for (let i = 0; i < 4; i++) dev.emit(fault({ op: 'write', tag: i, block: 100 + i * 16, failed: [{ device: 'main', block: 100 + i * 16, blocks: 1, errno: 5 }] }));
    await d.shutdown('test');
    expect(dev.calls.filter((c) => c === 'resolveFault fail').length).toBeGreaterThan(0);
  });

  it('a relocation in progress finishes before native detach; the queued ones are taken up by the successor', async () => {
    const d = await start({ policy: { ...DEFAULT_POLICY, autoRemap: true, errorThreshold: 1, readRetries: 1, retryBackoffMs: 0 } });
    const dev = native.devices.at(-1) as FakeDevice;
    const engine = d['engine'] as unknown as { relocate: (...a: unknown[]) => Promise<string> };
    const relocate = engine.relocate.bind(engine);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let finished = 0;
    engine.relocate = async (...a: unknown[]) => {
      await gate;
      const r = await relocate(...a);
      finished++;
      return r;
    };
    // Three reads recovered by a retry: at errorThreshold 1 each block is queued for relocation.
    for (const block of [50, 51, 52]) {
      const f = fault({ op: 'read', tag: block, block, blocks: 1, failed: [{ device: 'main', block, blocks: 1, errno: 5 }] });
      dev.emit(f);
      expect(await dev.awaitResolution(f, 3000)).toEqual({ action: 'retry', narrow: true });
      dev.emit({ type: 'fault_cleared', queue: 0, tag: f.tag, seq: f.seq, attempts: 1 });
    }
    await new Promise((r) => setTimeout(r, 30));
    const id = d.info.devId;
    const detaching = d.detach('restart requested over the control socket');
    await new Promise((r) => setTimeout(r, 30));
    expect(dev.calls).not.toContain('detach'); // the relocation running holds the detach
    release();
    expect(await detaching).toBe(RESTART_EXIT_CODE);
    expect(finished).toBe(1);
    // The detached daemon's process exits (here: its entry names a pid that is gone).
    const e = readEntryOf(w.runDir, id) as RegistryEntryV2;
    writeEntry(w.runDir, { ...e, pid: 2 ** 22 + 1, pidStart: null });
    const next = await Daemon.recover(id, deps());
    try {
      await next['auto']?.idle();
      const table = next['engine']?.store.table;
      for (const block of [50, 51, 52]) expect(table?.get(block)).toMatchObject({ state: 'mapped', origin: 'auto' });
    } finally {
      await next.shutdown('test done');
    }
  });
});
