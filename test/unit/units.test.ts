// Small pure pieces: error mapping, target resolution, staleness, the pretty log formatter, counters.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isAlive, processStartTime, resolveTarget, type RegistryEntry } from '../../src/control/registry.js';
import { latencyQuantileUs } from '../../src/device/counters.js';
import { featureNames } from '../../src/device/features.js';
import { backingDeviceError, DmrError, kernelError, toDmrError } from '../../src/errors.js';
import { formatPretty } from '../../src/log.js';
import { nativeError } from '../../src/testing/fake-native.js';
import { makeWorld, type World } from './helpers.js';

describe('errors', () => {
  it('maps errno of a backing device to stable codes', () => {
    const cases: [string, string, string][] = [
      ['ENOENT', 'E_DEVICE_MISSING', 'main device /x does not exist'],
      ['ENXIO', 'E_DEVICE_MISSING', 'main device /x does not exist'],
      ['EACCES', 'E_DEVICE_ACCESS', 'main device /x cannot be opened for reading and writing (EACCES)'],
      ['EROFS', 'E_DEVICE_ACCESS', 'main device /x cannot be opened for reading and writing (EROFS)'],
      ['EBUSY', 'E_DEVICE_BUSY', 'main device /x is in use (mounted, or held by another program)'],
      ['EIO', 'E_KERNEL', 'cannot open main device /x: open /x: i/o error (EIO)'],
    ];
    for (const [errno, code, message] of cases) {
      const e = backingDeviceError(nativeError(errno, 'open', '/x'), 'main device /x');
      expect([e.code, e.message, e.exitCode]).toEqual([code, message, 1]);
    }
  });

  it('names the command and errno of a kernel failure', () => {
    const e = kernelError(nativeError('EOPNOTSUPP', 'SET_PARAMS'), 'cannot start the ublk device');
    expect(e.message).toBe('cannot start the ublk device: SET_PARAMS: operation not supported on socket (EOPNOTSUPP)');
  });

  it('keeps DmrErrors and wraps anything else as E_INTERNAL', () => {
    const d = new DmrError('E_USAGE', 'x');
    expect(toDmrError(d)).toBe(d);
    expect(d.exitCode).toBe(2);
    expect(toDmrError(new Error('boom'))).toMatchObject({ code: 'E_INTERNAL', message: 'boom', exitCode: 1 });
  });
});

describe('registry', () => {
  let w: World;
  beforeEach(() => {
    w = makeWorld();
  });
  afterEach(() => w.cleanup());

  const entry = (devId: number, name: string | null, dir: string): RegistryEntry => ({
    version: 1,
    devId,
    name,
    pid: process.pid,
    pidStart: processStartTime(process.pid),
    blockPath: path.join(dir, `ublkb${devId}`),
    charPath: path.join(dir, `ublkc${devId}`),
    socket: '',
    logFile: null,
    startedAt: '',
    main: { path: 'm', identity: 'a' },
    spare: { path: 's', identity: 'b' },
  });

  it('resolves a path, a symlink to it, an id, ublkbN and a name', () => {
    const es = [entry(0, 'alpha', w.devDir), entry(3, 'beta', w.devDir)];
    fs.writeFileSync(path.join(w.devDir, 'ublkb3'), '');
    fs.symlinkSync(path.join(w.devDir, 'ublkb3'), path.join(w.root, 'link'));
    for (const t of [path.join(w.devDir, 'ublkb3'), path.join(w.devDir, 'ublkc3'), path.join(w.root, 'link'), '3', 'ublkb3', 'ublk3', 'beta']) {
      expect(resolveTarget(es, t).devId).toBe(3);
    }
    expect(() => resolveTarget(es, 'gamma')).toThrow(expect.objectContaining({ code: 'E_NOT_FOUND' }));
    expect(() => resolveTarget(es, '7')).toThrow(expect.objectContaining({ code: 'E_NOT_FOUND' }));
  });

  it('refuses a name two devices share', () => {
    const es = [entry(0, 'dup', w.devDir), entry(1, 'dup', w.devDir)];
    expect(() => resolveTarget(es, 'dup')).toThrow(expect.objectContaining({ code: 'E_AMBIGUOUS' }));
  });

  it('tells a live daemon from a dead one and from a reused pid', () => {
    expect(isAlive({ pid: process.pid, pidStart: processStartTime(process.pid) })).toBe(true);
    expect(isAlive({ pid: 2 ** 22 + 99, pidStart: null })).toBe(false);
    expect(isAlive({ pid: process.pid, pidStart: '1' })).toBe(false);
  });
});

describe('log formatter', () => {
  it('formats a pino line readably', () => {
    const line = JSON.stringify({ level: 40, time: Date.UTC(2025, 0, 1, 12, 0, 1, 234), pid: 1, msg: 'backing I/O error', errno: 5, device: 'main' });
    expect(formatPretty(line)).toBe('12:00:01.234 WARN  backing I/O error  errno=5 device=main\n');
  });
  it('passes through what is not JSON', () => {
    expect(formatPretty('plain')).toBe('plain\n');
  });
});

describe('counters and features', () => {
  it('finds the log2 bucket of a quantile', () => {
    expect(latencyQuantileUs([], 0.5)).toBeNull();
    expect(latencyQuantileUs([0, 0, 100], 0.99)).toBe(8);
    expect(latencyQuantileUs([50, 49, 1], 0.99)).toBe(4);
    expect(latencyQuantileUs([50, 49, 1], 0.999)).toBe(8);
  });
  it('names feature bits, unknown ones by number', () => {
    expect(featureNames(0x41n | (1n << 40n))).toEqual(['SUPPORT_ZERO_COPY', 'CMD_IOCTL_ENCODE', 'bit40']);
  });
});

describe('native selection', () => {
  it('honours DMREMAP_FAKE_NATIVE only under vitest', async () => {
    const { selectNative } = await import('../../src/native-select.js');
    const { FakeNative } = await import('../../src/testing/fake-native.js');
    const fake = JSON.stringify({ devDir: '/nonexistent' });
    expect(await selectNative({ DMREMAP_FAKE_NATIVE: fake, VITEST: 'true' })).toBeInstanceOf(FakeNative);
    // Outside vitest the variable is ignored: the real addon is loaded (or its absence reported).
    const real = await selectNative({ DMREMAP_FAKE_NATIVE: fake }).catch((e: unknown) => e);
    expect(real).not.toBeInstanceOf(FakeNative);
    if (real instanceof DmrError) expect(real.code).toBe('E_NATIVE_MISSING');
  });
});
