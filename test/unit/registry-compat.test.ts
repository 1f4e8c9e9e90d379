// Registry entries across versions (review B): `restart` is the upgrade path, so the successor's code reads
// an entry the previous version wrote, and the reverse. A policy key added since takes its default, fields
// this version does not know are dropped, and an entry that still will not parse is never skipped: list
// shows it as invalid with the reason, its main and spare stay taken, del removes it by device id.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { occupied, readEntries, readEntryOf, type RegistryEntryV2 } from '../../src/control/registry.js';
import { Daemon } from '../../src/device/daemon.js';
import { DEFAULT_POLICY } from '../../src/config/policy.js';
import { runList } from '../../src/cli/list.js';
import { runDel } from '../../src/cli/del.js';
import { runStatus } from '../../src/cli/status.js';
import { runRestart } from '../../src/cli/restart.js';
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

/** A device detached (as by `restart`), its entry rewritten by `edit` as another version would have written it. */
async function detachedAs(edit: (e: RegistryEntryV2) => unknown): Promise<{ id: number; file: string }> {
  const d = await Daemon.start(deviceConfig(w), deps());
  const id = d.info.devId;
  await d.detach('upgrade');
  const e = readEntryOf(w.runDir, id) as RegistryEntryV2;
  const file = path.join(w.runDir, `${id}.json`);
  fs.writeFileSync(file, JSON.stringify(edit({ ...e, pid: DEAD_PID, pidStart: null })) ?? '');
  return { id, file };
}

async function list(): Promise<Array<Record<string, unknown>>> {
  const c = captureCtx(w, native);
  expect(await runList(c.ctx, true)).toBe(0);
  return JSON.parse(c.stdout()) as Array<Record<string, unknown>>;
}

describe('a registry entry written by another version', () => {
  it('without a policy key added since: listed as quiesced, recovered with that key at its default', async () => {
    const { id } = await detachedAs((e) => {
      // As the version before write_outage_regions existed wrote it.
      const { writeOutageRegions: _dropped, ...oldPolicy } = e.recovery.policy;
      return { ...e, recovery: { ...e.recovery, policy: oldPolicy } };
    });
    expect(readEntries(w.runDir).quiesced.map((x) => x.devId)).toEqual([id]);
    expect((readEntryOf(w.runDir, id) as RegistryEntryV2).recovery.policy.writeOutageRegions).toBe(DEFAULT_POLICY.writeOutageRegions);
    const r = await Daemon.recover(id, deps());
    daemons.push(r);
    expect(r.info.devId).toBe(id);
  });

  it('with fields and policy keys this version does not know: accepted and dropped', async () => {
    const { id } = await detachedAs((e) => ({
      ...e,
      addedLater: { x: 1 },
      main: { ...e.main, serial: 'ABC' },
      quiesced: { since: 'now', reason: 'upgrade', by: 'restart' },
      recovery: { ...e.recovery, ioPriority: 3, policy: { ...e.recovery.policy, futureKnob: true } },
    }));
    const e = readEntryOf(w.runDir, id) as RegistryEntryV2;
    expect(e).not.toHaveProperty('addedLater');
    expect(e.main).not.toHaveProperty('serial');
    expect(e.recovery).not.toHaveProperty('ioPriority');
    expect(e.recovery.policy).not.toHaveProperty('futureKnob');
    expect(readEntries(w.runDir).quiesced.map((x) => x.devId)).toEqual([id]);
    daemons.push(await Daemon.recover(id, deps()));
  });

  it('that does not parse: listed as invalid with why, its main and spare stay taken, recover says why, del removes it', async () => {
    const { id, file } = await detachedAs((e) => ({ ...e, recovery: { ...e.recovery, blockSize: 8192 } }));
    const entries = readEntries(w.runDir);
    expect(entries.invalid).toMatchObject([{ devId: id, file, main: { path: w.main }, spare: { path: w.spare }, pid: DEAD_PID }]);
    expect(entries.invalid[0]?.reason).toMatch(/^recovery\.blockSize: /);
    expect(occupied(entries).map((o) => o.main.path)).toEqual([w.main]);
    expect(await list()).toMatchObject([{ devId: id, state: 'invalid', main: w.main, spare: w.spare, reason: expect.stringMatching(/recovery\.blockSize/) }]);
    // A second device over the same main is refused.
    await expect(Daemon.start(deviceConfig(w, { name: 'again' }), deps())).rejects.toMatchObject({ code: 'E_DEVICE_BUSY' });
    await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_STATE', message: expect.stringMatching(/is not valid \(recovery\.blockSize: /) });
    const c = captureCtx(w, native);
    expect(await runDel(c.ctx, String(id), { json: false, force: false })).toBe(0);
    expect(c.stdout()).toBe(`removed ${path.join(w.devDir, `ublkb${id}`)}\n`);
    expect(fs.existsSync(file)).toBe(false);
    expect(w.devNodes()).toEqual([]);
    expect(await list()).toEqual([]);
    daemons.push(await Daemon.start(deviceConfig(w), deps()));
  });

  it('that is not even JSON: listed as invalid; add refuses (its main and spare are unknown) until del removes it', async () => {
    const { id, file } = await detachedAs(() => undefined);
    fs.writeFileSync(file, '{"version": 2, "main": ');
    expect(await list()).toMatchObject([{ devId: id, state: 'invalid', main: null, spare: null, pid: null, reason: `${file}: not JSON` }]);
    const m2 = w.file('m2.img', 8 << 20);
    const s2 = w.file('s2.img', 1 << 20);
    await expect(Daemon.start(deviceConfig(w, { mainPath: m2, sparePath: s2 }), deps())).rejects.toMatchObject({
      code: 'E_STATE',
      message: `the state file ${file} of device ${id} cannot be read (not JSON), so its main and spare are unknown; remove it with: dmremap-ublk del ${id}`,
    });
    const c = captureCtx(w, native);
    expect(await runDel(c.ctx, `ublkb${id}`, { json: true, force: false })).toBe(0);
    expect(JSON.parse(c.stdout())).toMatchObject({ devId: id, removed: true });
    expect(w.devNodes()).toEqual([]);
    daemons.push(await Daemon.start(deviceConfig(w, { mainPath: m2, sparePath: s2 }), deps()));
  });

  it('status and restart of a device whose entry does not parse: E_STATE naming the file, why, and what to do (not "not found")', async () => {
    const { id, file } = await detachedAs((e) => ({ ...e, name: 'data', recovery: { ...e.recovery, blockSize: 8192 } }));
    const c = captureCtx(w, native);
    const msg = new RegExp(`^the state file ${file} of device ${id} is not valid \\(recovery\\.blockSize: .*\\); "dmremap-ublk del ${id}" removes the device`);
    for (const target of [String(id), `ublkb${id}`, path.join(w.devDir, `ublkb${id}`), 'data']) {
      await expect(runStatus(c.ctx, target, false)).rejects.toMatchObject({ code: 'E_STATE', message: expect.stringMatching(msg) });
      await expect(runRestart(c.ctx, target, false)).rejects.toMatchObject({ code: 'E_STATE', message: expect.stringMatching(msg) });
    }
    // An unknown device is still not found.
    await expect(runStatus(c.ctx, '7', false)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    // Its daemon still running (another version's): no del advice.
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), pid: process.pid, pidStart: null }));
    await expect(runStatus(c.ctx, String(id), false)).rejects.toMatchObject({
      code: 'E_STATE',
      message: expect.stringContaining(`its daemon (pid ${process.pid}) runs another version: use that version's dmremap-ublk`),
    });
    expect(fs.existsSync(file)).toBe(true);
  });

  it('del refuses an invalid entry whose daemon still runs', async () => {
    const { id, file } = await detachedAs((e) => ({ ...e, pid: process.pid, pidStart: null, version: 3 }));
    const c = captureCtx(w, native);
    await expect(runDel(c.ctx, String(id), { json: false, force: false })).rejects.toMatchObject({ code: 'E_DEVICE_LIVE' });
    expect(fs.existsSync(file)).toBe(true);
    expect(w.devNodes()).toEqual([`ublkb${id}`, `ublkc${id}`]);
  });
});
