// The `restart` control request against a daemon on the fake addon: the reply comes first (saying whether a
// supervisor will start the successor), then the daemon detaches, leaving the device quiesced, and exits
// RESTART_EXIT_CODE, the code the supervisor's policy treats as a restart.
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { readEntryOf, type RegistryEntryV2 } from '../../src/control/registry.js';
import { Daemon, RESTART_EXIT_CODE as DAEMON_RESTART_EXIT_CODE } from '../../src/device/daemon.js';
import { classifyExit, RESTART_EXIT_CODE } from '../../src/supervisor/restart-policy.js';
import { SUPERVISOR_PID_ENV } from '../../src/supervisor/child-process.js';
import type { FakeNative } from '../../src/testing/fake-native.js';
import { deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemon: Daemon | null;

beforeEach(() => {
  w = makeWorld();
  native = fakeFor(w, { features: '0xd8' }); // offers UBLK_F_USER_RECOVERY | _REISSUE
  daemon = null;
});
afterEach(async () => {
  delete process.env[SUPERVISOR_PID_ENV];
  await daemon?.shutdown('test done');
  w.cleanup();
});

const start = async (): Promise<Daemon> => {
  daemon = await Daemon.start(deviceConfig(w), { native, runDir: w.runDir, log: quietLog(), logFile: null, stateDir: path.join(w.root, 'state') });
  return daemon;
};

describe('restart request', () => {
  it('the daemon and the supervisor agree on the restart exit code', () => {
    expect(RESTART_EXIT_CODE).toBe(DAEMON_RESTART_EXIT_CODE);
    expect(classifyExit({ code: DAEMON_RESTART_EXIT_CODE, signal: null })).toBe('restart');
  });

  it('answers, then detaches: device quiesced, entry marked with the reason, exit code 75', async () => {
    const d = await start();
    const id = d.info.devId;
    const sock = path.join(w.runDir, `${id}.sock`);
    expect(await request(sock, 'restart', {})).toEqual({ restarting: true, supervised: false });
    expect(await d.exited).toBe(RESTART_EXIT_CODE);
    daemon = null;
    expect((await native.kernelDeviceInfo(id)).state).toBe('quiesced');
    expect((readEntryOf(w.runDir, id) as RegistryEntryV2).quiesced).toMatchObject({ reason: 'restart requested over the control socket' });
  });

  it('says supervised when its parent is the supervisor named in the environment', async () => {
    process.env[SUPERVISOR_PID_ENV] = String(process.ppid);
    const d = await start();
    const sock = path.join(w.runDir, `${d.info.devId}.sock`);
    expect(await request(sock, 'restart', {})).toEqual({ restarting: true, supervised: true });
    expect(await d.exited).toBe(RESTART_EXIT_CODE);
    daemon = null;
  });
});
