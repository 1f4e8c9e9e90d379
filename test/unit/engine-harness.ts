// An engine-level fixture: a RemapEngine on the world's spare file, attached to a started fake device
// (src/testing/fake-native.ts) whose writes can be held in flight (startWrite) and whose drain waits for them.
import fs from 'node:fs';
import { afterEach, beforeEach } from 'vitest';
import { RemapEngine } from '../../src/device/remap-engine.js';
import { FileSpareIo } from '../../src/remap/index.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { fakeFor, makeWorld, quietLog, type World } from './helpers.js';

export const BS = 512;

export interface EngineRig {
  engine: RemapEngine;
  native: FakeNative;
  dev: FakeDevice;
  io: FileSpareIo;
  /** The block size's worth of `fill` bytes. */
  block(fill: number): Buffer;
  /** What the spare holds in slot `slot`. */
  slotData(slot: number): Buffer;
  close(): Promise<void>;
}

/** Opens (formatting on first use) an engine on `w`'s spare for `w`'s main and attaches a started fake device. */
export async function openEngine(w: World, native: FakeNative = fakeFor(w)): Promise<EngineRig> {
  const io = await FileSpareIo.open(w.spare);
  const deviceBytes = BigInt(fs.statSync(w.main).size);
  const engine = await RemapEngine.open({
    spare: io,
    main: { size: deviceBytes, fingerprint: new Uint8Array(32).fill(7) },
    blockSize: BS,
    deviceBytes,
    forceFormat: false,
    log: quietLog(),
  });
  const dev = new native.Device({
    mainPath: w.main, sparePath: w.spare, queues: 1, depth: 64, blockSize: BS, sizeBytes: deviceBytes,
    maxIoBytes: 256 << 10, discard: false, devId: -1, spareDataOffset: engine.spareDataOffset, onEvent: () => undefined,
  } as ConstructorParameters<FakeNative['Device']>[0]) as unknown as FakeDevice;
  await dev.start();
  engine.attach(dev);
  const slotData = (slot: number): Buffer => {
    const b = Buffer.alloc(BS);
    const fd = fs.openSync(w.spare, 'r');
    try {
      fs.readSync(fd, b, 0, BS, Number(engine.spareDataOffset) + slot * BS);
    } finally {
      fs.closeSync(fd);
    }
    return b;
  };
  return {
    engine, native, dev, io,
    block: (fill) => Buffer.alloc(BS, fill),
    slotData,
    close: async () => {
      await engine.quiesce();
      await dev.stop();
      await engine.close();
      await io.close();
    },
  };
}

/** Registers per-test hooks: a fresh world and an engine on it (handed to `take`), closed and removed after each test. */
export function enginePerTest(take: (rig: EngineRig) => void): void {
  let w: World | null = null;
  let rig: EngineRig | null = null;
  beforeEach(async () => {
    w = makeWorld();
    rig = await openEngine(w);
    take(rig);
  });
  afterEach(async () => {
    await rig?.close();
    w?.cleanup();
  });
}
