// ublk user recovery against the fake addon: the registry's version 2 entry (the state a successor needs),
// live / quiesced / gone, reaping that keeps quiesced devices, Daemon.detach and Daemon.recover.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { entryState, readEntries, readEntryOf, writeEntry, type RegistryEntry, type RegistryEntryV2 } from '../../src/control/registry.js';
import { Daemon, RESTART_EXIT_CODE } from '../../src/device/daemon.js';
import { request } from '../../src/control/client.js';
import { DEFAULT_POLICY } from '../../src/config/policy.js';
import { PREDECESSOR_BUSY_EXIT_CODE } from '../../src/errors.js';
import { FakeDevice, type FakeNative } from '../../src/testing/fake-native.js';
import { runDel } from '../../src/cli/del.js';
import { deletingPath, markDeleting } from '../../src/control/deleting.js';
import { relocationQueuePath } from '../../src/paths.js';
import { captureCtx, deviceConfig, fakeFor, makeWorld, quietLog, DEAD_PID, RECOVERY_FEATURES, type World } from './helpers.js';


let w: World;
let native: FakeNative;
let daemons: Daemon[];

const deps = () => ({ native, runDir: w.runDir, log: quietLog(), logFile: '/tmp/x.log', stateDir: path.join(w.root, 'state') });
const start = async (over = {}): Promise<Daemon> => {
  const d = await Daemon.start(deviceConfig(w, over), deps());
  daemons.push(d);
  return d;
};
const device = (): FakeDevice => native.devices.at(-1) as FakeDevice;

/** The registry entry as a daemon that was killed -9 leaves it: its pid is gone. */
function killEntry(devId: number): RegistryEntryV2 {
  const e = readEntryOf(w.runDir, devId);
  if (e === null || e.version !== 2) throw new Error('no version 2 entry');
  const dead = { ...e, pid: DEAD_PID, pidStart: null };
  writeEntry(w.runDir, dead);
  return dead;
}

/** As if the daemon serving `d` was killed -9: the kernel quiesces its device, its claims close, its pid is gone. */
function crash(d: Daemon): RegistryEntryV2 {
  const id = d.info.devId;
  (native.devices.find((x) => x.info().devId === id) as FakeDevice).simulateCrash();
  for (const fd of [...native.claims.keys()]) native.releaseBacking(fd);
  daemons = daemons.filter((x) => x !== d);
  return killEntry(id);
}

beforeEach(() => {
  w = makeWorld();
  native = fakeFor(w, { features: RECOVERY_FEATURES });
  daemons = [];
});
afterEach(async () => {
  for (const d of daemons) await d.shutdown('test done');
  w.cleanup();
});

const v1 = (devId: number, pid: number): RegistryEntry => ({
  version: 1,
  devId,
  name: null,
  pid,
  pidStart: null,
  blockPath: path.join(w.devDir, `ublkb${devId}`),
  charPath: path.join(w.devDir, `ublkc${devId}`),
  socket: path.join(w.runDir, `${devId}.sock`),
  logFile: null,
  startedAt: '',
  main: { path: 'm', identity: 'x' },
  spare: { path: 's', identity: 'y' },
});

describe('registry version 2', () => {
  it('add writes every parameter a successor needs', async () => {
    const d = await start({ blockSize: 4096, queues: 2, depth: 32, spareOffset: 4096, buffers: 'copy', policy: { ...DEFAULT_POLICY, readRetries: 5 } });
    const e = readEntryOf(w.runDir, d.info.devId);
    expect(e).toMatchObject({
      version: 2,
      name: 'data',
      logFile: '/tmp/x.log',
      main: { path: w.main },
      spare: { path: w.spare },
      quiesced: null,
      recovery: {
        userRecovery: true,
        blockSize: 4096,
        queues: 2,
        depth: 32,
        maxIoBytes: 256 << 10,
        buffers: 'copy',
        zeroCopy: false,
        sizeBytes: String(fs.statSync(w.main).size),
        spareOffset: 4096,
        spareSize: null,
        policy: { ...DEFAULT_POLICY, readRetries: 5 },
      },
    });
  });

  it('records a kernel without user recovery, whose device cannot outlive its daemon', async () => {
    native = fakeFor(w);
    const d = await start();
    const e = crash(d);
    expect(e.recovery.userRecovery).toBe(false);
    expect(entryState(e)).toBe('gone');
  });

  it('still reads version 1 entries, which are never quiesced', () => {
    fs.mkdirSync(w.runDir, { mode: 0o700 });
    writeEntry(w.runDir, v1(0, DEAD_PID));
    writeEntry(w.runDir, v1(1, process.pid));
    fs.writeFileSync(path.join(w.devDir, 'ublkc0'), '-1');
    const r = readEntries(w.runDir);
    expect(r.live.map((e) => [e.devId, e.version])).toEqual([[1, 1]]);
    expect(r.gone.map((e) => e.devId)).toEqual([0]);
    expect(r.stale.map((e) => e.devId)).toEqual([0]);
    expect(r.quiesced).toEqual([]);
  });

  it('reports an entry that is not valid as invalid, never skips it', () => {
    fs.mkdirSync(w.runDir, { mode: 0o700 });
    const file = path.join(w.runDir, '0.json');
    fs.writeFileSync(file, JSON.stringify({ ...v1(0, DEAD_PID), version: 2 }));
    const r = readEntries(w.runDir);
    expect({ ...r, invalid: [] }).toEqual({ live: [], stale: [], quiesced: [], gone: [], invalid: [] });
    expect(r.invalid).toMatchObject([{ devId: 0, file, pid: DEAD_PID, reason: expect.stringMatching(/^recovery: /) }]);
  });

  it('tells live, quiesced (daemon dead, kernel device there) and gone (kernel device gone)', async () => {
    const d = await start();
    const id = d.info.devId;
    expect(entryState(readEntryOf(w.runDir, id) as RegistryEntry)).toBe('live');
    const dead = crash(d);
    expect(entryState(dead)).toBe('quiesced');
    expect(readEntries(w.runDir).quiesced.map((e) => e.devId)).toEqual([id]);
    await native.deleteKernelDevice(id);
    expect(entryState(dead)).toBe('gone');
    expect(readEntries(w.runDir).gone.map((e) => e.devId)).toEqual([id]);
  });
});

describe('reaping', () => {
  it('another add keeps a quiesced device and its entry, and refuses its main and spare', async () => {
    const d = await start();
    const id = d.info.devId;
    crash(d);
    await expect(start({ name: 'other' })).rejects.toMatchObject({
      code: 'E_DEVICE_BUSY',
      message: `main device ${w.main} is already the main of dmremap-ublk device ${path.join(w.devDir, `ublkb${id}`)} (data)`,
    });
    const m2 = w.file('m2.img', 8 << 20);
    const s2 = w.file('s2.img', 1 << 20);
    const other = await start({ name: 'other', mainPath: m2, sparePath: s2 });
    expect(other.info.devId).toBe(id + 1);
    expect(fs.existsSync(path.join(w.devDir, `ublkc${id}`))).toBe(true);
    expect(readEntries(w.runDir).quiesced.map((e) => e.devId)).toEqual([id]);
  });

  it('another add still reaps a dead daemon whose device was created without recovery', async () => {
    native = fakeFor(w);
    const d = await start();
    crash(d);
    const again = await start();
    expect(again.info.devId).toBe(0);
    expect(readEntries(w.runDir).stale).toEqual([]);
  });
});

describe('detach and recover', () => {
  const sockOf = (id: number): string => path.join(w.runDir, `${id}.sock`);
  const kernelState = async (id: number): Promise<string> => (await native.kernelDeviceInfo(id)).state;

  it('detach leaves the device quiesced, keeps the entry marked, releases everything, exits 75', async () => {
    const d = await start();
    const id = d.info.devId;
    expect(await d.detach('upgrade')).toBe(RESTART_EXIT_CODE);
    expect(await d.exited).toBe(75);
    daemons = [];
    expect(await kernelState(id)).toBe('quiesced');
    expect(fs.existsSync(path.join(w.devDir, `ublkb${id}`))).toBe(true);
    expect(fs.existsSync(sockOf(id))).toBe(false);
    expect(native.claims.size).toBe(0);
    const e = readEntryOf(w.runDir, id) as RegistryEntryV2;
    expect(e.quiesced).toMatchObject({ reason: 'upgrade' });
    expect(device().calls).toContain('detach');
  });

  it('recover takes over a detached device: same id, table published before the kernel recovery, new pid, socket answers', async () => {
    const d = await start();
    const id = d.info.devId;
    const before = await request(sockOf(id), 'remap', { sector: 21 });
    expect(before).toMatchObject({ block: 21 });
    await d.detach('upgrade');
    daemons = [];
    killEntry(id); // the detached daemon's process exits
    const r = await Daemon.recover(id, deps());
    daemons.push(r);
    expect(r.info.devId).toBe(id);
    expect(native.recoveries).toBe(1);
    const calls = device().calls;
    expect(calls.indexOf('setRemapTable')).toBeGreaterThanOrEqual(0);
    expect(calls.indexOf('setRemapTable')).toBeLessThan(calls.indexOf('recover'));
    expect(device().remapTable.blocks).toContain(21n);
    expect(readEntryOf(w.runDir, id)).toMatchObject({ pid: process.pid, quiesced: null, version: 2 });
    const st = await request(sockOf(id), 'status', {});
    expect(st.remap.line).toContain('1'); // one remapped block, found on the spare again
    expect(await kernelState(id)).toBe('live');
  });

  it('recover takes over a device whose daemon was killed even when the configured controlGroup does not resolve now (NSS down, group removed): the device comes back, root-only', async () => {
    const d = await start();
    const id = d.info.devId;
    crash(d);
    const cfgFile = path.join(w.root, 'config.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ controlGroup: 'dmremap-no-such-group-4711' }));
    const saved = process.env.DMREMAP_CONFIG;
    process.env.DMREMAP_CONFIG = cfgFile;
    try {
      const r = await Daemon.recover(id, deps());
      daemons.push(r);
      expect(await kernelState(id)).toBe('live');
    } finally {
      if (saved === undefined) delete process.env.DMREMAP_CONFIG;
      else process.env.DMREMAP_CONFIG = saved;
    }
  });

  it('recover takes over a device whose daemon was killed', async () => {
    const d = await start();
    const id = d.info.devId;
    crash(d);
    const r = await Daemon.recover(id, deps());
    daemons.push(r);
    expect(r.info.devId).toBe(id);
    expect(await kernelState(id)).toBe('live');
    // del of the recovered device deletes it like any other.
    expect(await r.shutdown('done')).toBe(0);
    daemons = [];
    expect(fs.existsSync(path.join(w.devDir, `ublkb${id}`))).toBe(false);
    expect(readEntryOf(w.runDir, id)).toBeNull();
  });

  it('refuses a live device, an unknown one, and invalid or old state, changing nothing', async () => {
    const d = await start();
    const id = d.info.devId;
    await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_DEVICE_LIVE', message: `${d.info.blockPath} is live (daemon pid ${process.pid}): nothing to recover` });
    await expect(Daemon.recover(7, deps())).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    crash(d);
    const file = path.join(w.runDir, `${id}.json`);
    const saved = fs.readFileSync(file, 'utf8');
    fs.writeFileSync(file, '{"version": 2}');
    await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_STATE', message: expect.stringMatching(`^the state file ${file} of device ${id} is not valid \\(`) });
    const e = JSON.parse(saved) as RegistryEntryV2;
    const { recovery: _r, quiesced: _q, ...old } = e;
    fs.writeFileSync(file, JSON.stringify({ ...old, version: 1 }));
    await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_STATE' });
    fs.writeFileSync(file, saved);
    expect(await kernelState(id)).toBe('quiesced');
    expect(native.recoveries).toBe(0);
    expect(native.claims.size).toBe(0);
    const r = await Daemon.recover(id, deps());
    daemons.push(r);
  });

  it('a main still held by the dead daemon\'s process after the claim retries: E_PREDECESSOR_BUSY, its own exit code', async () => {
    const d = await start();
    const id = d.info.devId;
    // kill -9 with a backing I/O still in flight: the device is quiesced but the claims stay held.
    (native.devices.find((x) => x.info().devId === id) as FakeDevice).simulateCrash();
    daemons = daemons.filter((x) => x !== d);
    killEntry(id);
    const t0 = Date.now();
    const err = await Daemon.recover(id, deps()).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(5000);
    expect(err).toMatchObject({ code: 'E_PREDECESSOR_BUSY', exitCode: PREDECESSOR_BUSY_EXIT_CODE, message: `main device ${w.main} is still held after 5 s (by the dead daemon's process, while a backing I/O it started ends?); try again later` });
    expect(PREDECESSOR_BUSY_EXIT_CODE).not.toBe(1);
    expect(native.recoveries).toBe(0);
    // Once the old process lets go, the next try succeeds.
    for (const fd of [...native.claims.keys()]) native.releaseBacking(fd);
    daemons.push(await Daemon.recover(id, deps()));
  }, 15_000);

  it('a kernel device still held by the dead daemon (START_USER_RECOVERY busy): E_PREDECESSOR_BUSY', async () => {
    const d = await start();
    const id = d.info.devId;
    // The kernel still sees the old server on /dev/ublkcN (its pid), though that process is gone as far as
    // the registry can tell (another process start time), and its claims are closed.
    for (const fd of [...native.claims.keys()]) native.releaseBacking(fd);
    const e = readEntryOf(w.runDir, id) as RegistryEntryV2;
    writeEntry(w.runDir, { ...e, pidStart: 'not-this-process' });
    await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_PREDECESSOR_BUSY', exitCode: PREDECESSOR_BUSY_EXIT_CODE });
    expect(native.recoveries).toBe(0);
    writeEntry(w.runDir, e);
  });

  it('refuses a device created without recovery, and one whose kernel device is gone', async () => {
    native = fakeFor(w);
    const d = await start();
    const id = d.info.devId;
    crash(d);
    await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_NOT_QUIESCED' });
    native = fakeFor(w, { features: RECOVERY_FEATURES });
    await native.deleteKernelDevice(id);
    const e = readEntryOf(w.runDir, id) as RegistryEntryV2;
    writeEntry(w.runDir, { ...e, recovery: { ...e.recovery, userRecovery: true } });
    await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_NOT_QUIESCED', message: `${e.blockPath} is gone: its kernel device no longer exists` });
  });

  it('refuses a main path that now names another device, and parameters the kernel device does not have', async () => {
    const d = await start();
    const id = d.info.devId;
    crash(d);
    const file = path.join(w.runDir, `${id}.json`);
    const e = readEntryOf(w.runDir, id) as RegistryEntryV2;
    writeEntry(w.runDir, { ...e, main: { ...e.main, identity: 'f:1:1' } });
    await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_STATE' });
    writeEntry(w.runDir, { ...e, recovery: { ...e.recovery, depth: e.recovery.depth * 2 } });
    await expect(Daemon.recover(id, deps())).rejects.toMatchObject({
      code: 'E_STATE',
      message: expect.stringContaining(`has depth ${e.recovery.depth}, this daemon wants ${e.recovery.depth * 2}`),
    });
    expect(await kernelState(id)).toBe('quiesced');
    expect(native.claims.size).toBe(0);
    expect(fs.existsSync(file)).toBe(true);
  });

  it('a queue setup that fails in recover comes before START_USER_RECOVERY: the device stays quiesced and recoverable', async () => {
    const d = await start();
    const id = d.info.devId;
    crash(d);
    native.cfg.failRecoverSetup = 'ENOMEM';
    await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_KERNEL', message: expect.stringContaining('io_uring_queue_init') });
    expect(device().calls).not.toContain('recover');
    expect(native.recoveries).toBe(0);
    expect(await kernelState(id)).toBe('quiesced');
    expect(native.claims.size).toBe(0);
    native.cfg.failRecoverSetup = null;
    const r = await Daemon.recover(id, deps());
    daemons.push(r);
    expect(await kernelState(id)).toBe('live');
  });

  it('a device whose earlier recovery was cut short after START_USER_RECOVERY (EINVAL): E_RECOVERY_STUCK, says to del it', async () => {
    const d = await start();
    const id = d.info.devId;
    crash(d);
    native.simulateRecoveryCutShort(id);
    const err = await Daemon.recover(id, deps()).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'E_RECOVERY_STUCK',
      message: expect.stringMatching(new RegExp(`^ublk device ${id} cannot be recovered: the kernel refuses START_USER_RECOVERY \\(EINVAL\\).*dmremap-ublk del ${id}`)),
    });
    expect(native.claims.size).toBe(0);
    expect(readEntryOf(w.runDir, id)).not.toBeNull();
  });

  it('a recover refused by the kernel leaves the relocations its predecessor queued in their file for the next daemon', async () => {
    const d = await start();
    const id = d.info.devId;
    const pairId = (d['engine'] as unknown as { store: { pairId: string } }).store.pairId;
    await d.detach('upgrade');
    daemons = [];
    killEntry(id);
    const file = relocationQueuePath(path.join(w.root, 'state'), pairId);
    const queued = JSON.stringify({ version: 1, pairId, relocate: [{ block: 77, slotFailed: false, errorCount: 3 }] });
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, queued);
    native.simulateRecoveryCutShort(id);
    await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_RECOVERY_STUCK' });
    expect(fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null).toBe(queued);
  });

  it('refuses a spare without metadata instead of formatting it', async () => {
    const d = await start();
    const id = d.info.devId;
    crash(d);
    const blank = Buffer.alloc(1 << 20);
    fs.writeFileSync(w.spare, blank);
    await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_SPARE_METADATA' });
    expect(fs.readFileSync(w.spare).equals(blank)).toBe(true);
    expect(await kernelState(id)).toBe('quiesced');
  });
});

describe('del during a restart: del wins', () => {
  it('a successor started while del runs (the supervisor after exit 75, restart\'s recover) refuses the device: E_DELETING, nothing taken', async () => {
    const d = await start();
    const id = d.info.devId;
    await d.detach('upgrade');
    daemons = [];
    killEntry(id);
    const unmark = markDeleting(w.runDir, id); // as del holds it while it deletes
    await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_DELETING', message: expect.stringContaining(`is being deleted (dmremap-ublk del, pid ${process.pid})`) });
    expect(native.recoveries).toBe(0);
    expect(native.claims.size).toBe(0);
    unmark();
    expect(fs.existsSync(deletingPath(w.runDir, id))).toBe(false);
    // A mark whose del is gone (killed) is ignored.
    fs.writeFileSync(deletingPath(w.runDir, id), JSON.stringify({ pid: DEAD_PID, pidStart: null }));
    daemons.push(await Daemon.recover(id, deps()));
  });

  it('del begun while a successor is in its kernel recovery: the successor does not publish its entry, del removes everything', async () => {
    const d = await start();
    const id = d.info.devId;
    const blockPath = d.info.blockPath;
    await d.detach('upgrade'); // restart: the old daemon detached and exited 75
    daemons = [];
    killEntry(id);
    // The supervisor's successor: del begins right after its START/END_USER_RECOVERY, before it rewrites
    // the entry (which still names the dead pid while the kernel already names the successor).
    const c = captureCtx(w, native);
    let del: Promise<number> | null = null;
    const recover = FakeDevice.prototype.recover;
    const spy = vi.spyOn(FakeDevice.prototype, 'recover').mockImplementation(async function (this: FakeDevice) {
      const info = await recover.call(this);
      del = runDel(c.ctx, String(id), { json: false, force: false }, 10_000);
      return info;
    });
    try {
      await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_DELETING' });
    } finally {
      spy.mockRestore();
    }
    expect(del).not.toBeNull();
    expect(await del).toBe(0);
    expect(c.stdout()).toBe(`removed ${blockPath}\n`);
    expect(readEntryOf(w.runDir, id)).toBeNull();
    expect(w.devNodes()).toEqual([]);
    expect(fs.existsSync(deletingPath(w.runDir, id))).toBe(false);
    expect(native.claims.size).toBe(0);
  });

  it('a successor that gives the device up after its kernel recovery fails none of the requests reissued to it (left to the next daemon, as a detach does)', async () => {
    const d = await start();
    const id = d.info.devId;
    await d.detach('upgrade');
    daemons = [];
    killEntry(id);
    // Right after START/END_USER_RECOVERY the kernel reissues what the dead daemon held: here write faults on
    // main, parked for auto-remap (their redirects queue); then del begins, and the successor gives up.
    let seq = 0;
    let dev: FakeDevice | null = null;
    let del: Promise<number> | null = null;
    const c = captureCtx(w, native);
    const recover = FakeDevice.prototype.recover;
    const spy = vi.spyOn(FakeDevice.prototype, 'recover').mockImplementation(async function (this: FakeDevice) {
      const info = await recover.call(this);
      dev = this;
      for (let i = 0; i < 8; i++) {
        const block = 100 + i * 16;
        this.emit({ type: 'io_fault', queue: 0, tag: i, seq: ++seq, kind: 'error', op: 'write', block, blocks: 1, attempt: 0, latencyUs: 100, written: [], failed: [{ device: 'main', block, blocks: 1, errno: 5 }] });
      }
      del = runDel(c.ctx, String(id), { json: false, force: false }, 10_000);
      return info;
    });
    try {
      await expect(Daemon.recover(id, deps())).rejects.toMatchObject({ code: 'E_DELETING' });
    } finally {
      spy.mockRestore();
    }
    expect(await del).toBe(0);
    const calls = (dev as FakeDevice | null)?.calls ?? [];
    expect(calls).toContain('detach');
    expect(calls.filter((x) => x === 'resolveFault fail')).toEqual([]);
  });
});
