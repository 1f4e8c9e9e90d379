// The `restart` control request against a daemon on the fake addon: the reply comes first (saying whether a
// supervisor will start the successor), then the daemon detaches, leaving the device quiesced, and exits
// RESTART_EXIT_CODE, the code the supervisor's policy treats as a restart. A device created without user
// recovery (a kernel that offered none) is refused by the daemon and by the CLI: its daemon leaving would
// make the kernel stop it (and no successor could recover it).
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { request } from '../../src/control/client.js';
import { readEntryOf, writeEntry, type RegistryEntryV2 } from '../../src/control/registry.js';
import { Daemon, RESTART_EXIT_CODE as DAEMON_RESTART_EXIT_CODE } from '../../src/device/daemon.js';
import { classifyExit, RESTART_EXIT_CODE } from '../../src/supervisor/restart-policy.js';
import { SUPERVISOR_PID_ENV } from '../../src/supervisor/child-process.js';
import type { FakeNative } from '../../src/testing/fake-native.js';
import { captureCtx, deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

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

describe('restart of a device created without user recovery', () => {
  const NO_RECOVERY = '0xc2'; // CMD_IOCTL_ENCODE | USER_COPY | ...: no USER_RECOVERY

  it('the daemon refuses it (E_NO_RECOVERY) and keeps serving', async () => {
    native = fakeFor(w, { features: NO_RECOVERY });
    const d = await start();
    const sock = path.join(w.runDir, `${d.info.devId}.sock`);
    await expect(request(sock, 'restart', {})).rejects.toMatchObject({ code: 'E_NO_RECOVERY' });
    await new Promise((r) => setTimeout(r, 50));
    expect((await native.kernelDeviceInfo(d.info.devId)).state).toBe('live');
    expect(native.devices.at(-1)?.calls).not.toContain('detach');
    expect(await request(sock, 'ping', {})).toBe('pong');
  });

  it('the CLI refuses it from the registry entry, before asking the daemon (one of an older version would detach)', async () => {
    const d = await start(); // a daemon that would detach: its device has recovery ...
    const id = d.info.devId;
    // ... but its entry says the kernel offered none, as for a daemon whose own check is missing.
    const e = readEntryOf(w.runDir, id) as RegistryEntryV2;
    writeEntry(w.runDir, { ...e, recovery: { ...e.recovery, userRecovery: false } });
    const { ctx, stdout, stderr } = captureCtx(w, native);
    expect(await main(['restart', String(id), '--json'], ctx)).toBe(1);
    expect(stderr()).toBe(`dmremap-ublk: ${e.blockPath} was created without ublk user recovery (the kernel offered none): a restart would stop it; nothing was changed\n`);
    expect(JSON.parse(stdout())).toMatchObject({ error: { code: 'E_NO_RECOVERY' } });
    await new Promise((r) => setTimeout(r, 50));
    expect(native.devices.at(-1)?.calls).not.toContain('detach');
    expect((await native.kernelDeviceInfo(id)).state).toBe('live');
  });
});
