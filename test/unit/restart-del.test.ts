// `restart` racing `del`: del wins (src/control/deleting.ts), and restart says so at once (E_DELETING)
// instead of waiting out its timeout for a successor that will never come (E_TIMEOUT).
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { markDeleting } from '../../src/control/deleting.js';
import { readEntryOf, removeEntry, writeEntry, type RegistryEntry, type RegistryEntryV2 } from '../../src/control/registry.js';
import { Daemon } from '../../src/device/daemon.js';
import { runRestart, takeOver } from '../../src/cli/restart.js';
import { runStatus } from '../../src/cli/status.js';
import type { FakeNative } from '../../src/testing/fake-native.js';
import { captureCtx, deviceConfig, fakeFor, makeWorld, quietLog, DEAD_PID, RECOVERY_FEATURES, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemons: Daemon[];
const deps = () => ({ native, runDir: w.runDir, log: quietLog(), logFile: null, stateDir: path.join(w.root, 'state') });

beforeEach(() => {
  w = makeWorld();
  native = fakeFor(w, { features: RECOVERY_FEATURES });
  daemons = [];
});
afterEach(async () => {
  for (const d of daemons) await d.shutdown('test done');
  w.cleanup();
});

describe('restart while a del removes the device', () => {
  it('refused at once with E_DELETING naming the del; the daemon is left serving', async () => {
    const d = await Daemon.start(deviceConfig(w), deps());
    daemons.push(d);
    const id = d.info.devId;
    const unmark = markDeleting(w.runDir, id);
    try {
      const c = captureCtx(w, native);
      const began = Date.now();
      await expect(runRestart(c.ctx, String(id), false, 5000)).rejects.toMatchObject({
        code: 'E_DELETING',
        message: `${d.info.blockPath} is being deleted (dmremap-ublk del, pid ${process.pid}): not restarted`,
      });
      expect(Date.now() - began).toBeLessThan(2000);
    } finally {
      unmark();
    }
    const s = captureCtx(w, native);
    expect(await runStatus(s.ctx, String(id), true)).toBe(0);
    expect(JSON.parse(s.stdout())).toMatchObject({ pid: process.pid });
  });

  /** A device whose daemon detached for a restart and is gone (its entry quiesced, its pid dead): what takeOver waits on. */
  async function detachedEntry(): Promise<RegistryEntry> {
    const d = await Daemon.start(deviceConfig(w), deps());
    await d.detach('upgrade');
    const e = readEntryOf(w.runDir, d.info.devId) as RegistryEntryV2;
    writeEntry(w.runDir, { ...e, pid: DEAD_PID, pidStart: null });
    return { ...e, pid: DEAD_PID, pidStart: null };
  }

  it('a del that starts while restart waits for the successor ends the wait at once with E_DELETING', async () => {
    const old = await detachedEntry();
    const c = captureCtx(w, native);
    const unmark = markDeleting(w.runDir, old.devId);
    try {
      const began = Date.now();
      for (const supervised of [true, false]) {
        await expect(takeOver(c.ctx, old, supervised, 5000)).rejects.toMatchObject({
          code: 'E_DELETING',
          message: `${old.blockPath} is being deleted (dmremap-ublk del, pid ${process.pid}): not restarted`,
        });
      }
      expect(Date.now() - began).toBeLessThan(2000);
    } finally {
      unmark();
    }
  });

  it('a del that finished (no entry left) ends the wait with E_DELETING; a quiesced entry alone is waited on (E_TIMEOUT)', async () => {
    const old = await detachedEntry();
    const c = captureCtx(w, native);
    // The entry of a device waiting for its successor (quiesced, its daemon gone) is not a deleted device.
    await expect(takeOver(c.ctx, old, true, 300)).rejects.toMatchObject({ code: 'E_TIMEOUT' });
    removeEntry(w.runDir, old.devId, DEAD_PID);
    await expect(takeOver(c.ctx, old, true, 5000)).rejects.toMatchObject({ code: 'E_DELETING', message: `${old.blockPath} was deleted during the restart` });
  });
});
