// `restart` racing `del`: del wins (src/control/deleting.ts), and restart says so at once (E_DELETING)
// instead of waiting out its timeout for a successor that will never come (E_TIMEOUT).
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { markDeleting } from '../../src/control/deleting.js';
import { removeEntry } from '../../src/control/registry.js';
import { Daemon } from '../../src/device/daemon.js';
import { checkNotDeleted, runRestart } from '../../src/cli/restart.js';
import { runStatus } from '../../src/cli/status.js';
import type { FakeNative } from '../../src/testing/fake-native.js';
import { captureCtx, deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

const RECOVERY_FEATURES = '0xd8';
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

  it('a device detached for its successor is still there; one whose entry a del removed is reported deleted', async () => {
    const d = await Daemon.start(deviceConfig(w), deps());
    const id = d.info.devId;
    await d.detach('upgrade');
    expect(() => checkNotDeleted(w.runDir, id, d.info.blockPath)).not.toThrow();
    removeEntry(w.runDir, id, process.pid);
    expect(() => checkNotDeleted(w.runDir, id, d.info.blockPath)).toThrow(`${d.info.blockPath} was deleted during the restart`);
  });
});
