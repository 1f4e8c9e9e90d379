// The scan_read debug command over the real control socket, against the fake addon: one native scanRead of
// the range, remapped blocks read from their slots, injected main failures in the result, the user counters
// untouched, and bad input refused with a typed error.
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { Daemon } from '../../src/device/daemon.js';
import { DmrError } from '../../src/errors.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemon: Daemon | null;
let sock: string;

beforeEach(async () => {
  w = makeWorld();
  native = fakeFor(w);
  daemon = await Daemon.start(deviceConfig(w), { native, runDir: w.runDir, log: quietLog(), logFile: null });
  sock = path.join(w.runDir, `${daemon.info.devId}.sock`);
});
afterEach(async () => {
  await daemon?.shutdown('test');
  daemon = null;
  w.cleanup();
});

async function rejected(p: Promise<unknown>): Promise<DmrError> {
  const e = await p.then(() => null, (x: unknown) => x);
  expect(e).toBeInstanceOf(DmrError);
  return e as DmrError;
}

describe('scan_read over the control socket', () => {
  it('reports the remapped block from the spare, a failing main range with its errno, and changes no user counter', async () => {
    await request(sock, 'remap', { sector: 5 });
    native.cfg.failReads.push({ device: 'main', offset: 8 * 512, bytes: 2 * 512, code: 'EIO' });
    const before = (await request(sock, 'status', {})).io;
    const r = await request(sock, 'scan_read', { offset: 0, bytes: 16 * 512, narrow: true });
    expect(r.offset).toBe(0);
    expect(r.bytes).toBe(16 * 512);
    expect(r).toMatchObject({ coveredBytes: 16 * 512, stopped: null });
    // The remap of sector 5 published one table after the first.
    expect(r.generation).toBe((native.devices.at(-1) as FakeDevice).tableGeneration());
    expect(r.segments).toHaveLength(16);
    expect(r.segments.map((s) => `${s.block}:${s.device}:${s.errno}`)).toEqual(
      Array.from({ length: 16 }, (_, b) => `${b}:${b === 5 ? 'spare' : 'main'}:${b === 8 || b === 9 ? 5 : 0}`),
    );
    expect((await request(sock, 'status', {})).io).toEqual(before);
    expect((native.devices.at(-1) as FakeDevice).calls.filter((c) => c === 'scanRead')).toHaveLength(1);
  });

  it('refuses a range that is not whole blocks inside the device (E_OUT_OF_RANGE) and a malformed request (E_PROTOCOL), reading nothing', async () => {
    const size = (await request(sock, 'status', {})).sizeBytes;
    expect((await rejected(request(sock, 'scan_read', { offset: 100, bytes: 512 }))).code).toBe('E_OUT_OF_RANGE');
    expect((await rejected(request(sock, 'scan_read', { offset: 0, bytes: 700 }))).code).toBe('E_OUT_OF_RANGE');
    expect((await rejected(request(sock, 'scan_read', { offset: size - 512, bytes: 1024 }))).code).toBe('E_OUT_OF_RANGE');
    expect((await rejected(request(sock, 'scan_read', { offset: 0, bytes: (16 << 20) + 512 }))).code).toBe('E_PROTOCOL');
    expect((await rejected(request(sock, 'scan_read', { offset: -512, bytes: 512 }))).code).toBe('E_PROTOCOL');
    expect((native.devices.at(-1) as FakeDevice).calls).not.toContain('scanRead');
  });
});
