// Surface models for the map's tests, built through the real region record and surfaceModel.
import type { SurfaceModel } from '../../src/control/protocol.js';
import { surfaceModel, type SurfaceEntry } from '../../src/map/surface.js';
import { MIB, RegionRecord } from '../../src/scan/regions.js';

/** A read latency (ms) that falls in each bin below the error bin: <5, <20, <50, <150, <500, >=500. */
export const LATENCY_IN_BIN = [1, 10, 30, 100, 300, 700] as const;
export const BLOCK = 4096;

/**
 * A device of `regions` MiB (1 MiB regions). Region i < 7 has a fast read and a read in bin i (bin 6: a
 * failed read); the others are not read. `entries`: [block, entry] of the remap table.
 */
export function binsModel(regions = 16, entries: Array<[number, SurfaceEntry]> = [], name: string | null = 'data'): SurfaceModel {
  const deviceBytes = regions * MIB;
  const record = RegionRecord.forDevice(deviceBytes);
  for (let i = 0; i < Math.min(7, regions); i++) {
    record.addRead({ offset: i * MIB, length: MIB / 2, latencyMs: 1, failed: false });
    record.addRead({ offset: i * MIB + MIB / 2, length: MIB / 2, latencyMs: i < 6 ? (LATENCY_IN_BIN[i] as number) : 5, failed: i === 6 });
  }
  return surfaceModel({ device: '/dev/ublkb7', name, deviceBytes, blockSize: BLOCK, regions: record, scan: null, entries, now: Date.UTC(2026, 11, 2, 3, 0, 0) });
}

/** The block numbers of region `g` (1 MiB regions of BLOCK-byte blocks), k-th. */
export const blockOf = (g: number, k = 0): number => (g * MIB) / BLOCK + k;
