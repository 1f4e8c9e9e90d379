// A synthetic surface for the README's example picture (scripts/surface-map-example.mjs) and the map's
// tests: a 1 TiB disk (4096 regions of 256 MiB) whose scan is 70% through its pass, mostly fast, with a
// band of slow regions, a few regions with read errors, and pending, relocated and remapped blocks. It is
// built through the real region record and surfaceModel (reads counted, the "table" walked), with a
// seeded generator: the same picture every time. Not data of any real disk.
import type { SurfaceModel } from '../control/protocol.js';
import type { EntryOrigin, EntryState } from '../remap/table.js';
import { MIB, RegionRecord } from '../scan/regions.js';
import { seededRandom } from '../testing/seeded-random.js';
import { surfaceModel } from './surface.js';

const TIB = 1024 * 1024 * MIB;
const BLOCK = 4096;
/** 2026-12-01T12:00:00Z */
const MADE_AT = Date.UTC(2026, 11, 1, 12, 0, 0);
/** slow_io_ms's default: the example counts its reads slower than this as the scan's slowFound. */
const SLOW_IO_MS = 500;

/** The regions the example gives read errors, and those whose reads are slow (>= 500 ms, < 500, < 150). */
export const EXAMPLE_ERROR_REGIONS = [1210, 1211, 1275, 2301] as const;
const BAND = { first: 1200, last: 1340 };

export function exampleModel(): SurfaceModel {
  const rnd = seededRandom(13);
  const deviceBytes = TIB;
  const record = RegionRecord.forDevice(deviceBytes);
  const readUpTo = Math.floor(deviceBytes * 0.7);
  const reads = record.regionBytes / MIB;
  const errorRegions = new Set<number>(EXAMPLE_ERROR_REGIONS);
  let slow = 0;
  for (let g = 0; g * record.regionBytes < readUpTo; g++) {
    const start = g * record.regionBytes;
    const n = Math.min(reads, Math.floor((readUpTo - start) / MIB));
    // Most regions read fast throughout; some have one slower read; in the band, one read of each region is
    // slow, more so towards the band's middle.
    let worst: number | null = null;
    const r = rnd();
    if (r < 0.03) worst = 21 + rnd() * 25;
    else if (r < 0.1) worst = 6 + rnd() * 12;
    if (g >= BAND.first && g <= BAND.last) {
      const mid = (BAND.first + BAND.last) / 2;
      const closeness = 1 - Math.abs(g - mid) / ((BAND.last - BAND.first) / 2);
      const s = rnd() * (0.4 + closeness);
      worst = s > 1.05 ? 520 + rnd() * 400 : s > 0.75 ? 160 + rnd() * 300 : s > 0.45 ? 55 + rnd() * 90 : s > 0.25 ? 21 + rnd() * 25 : worst;
    }
    for (let i = 0; i < n; i++) {
      const ms = i === 7 && worst !== null ? worst : 1 + rnd() * 3;
      if (ms > SLOW_IO_MS) slow++;
      record.addRead({ offset: start + i * MIB, length: MIB, latencyMs: ms, failed: false });
    }
    if (errorRegions.has(g)) record.addRead({ offset: start + 17 * MIB, length: MIB, latencyMs: 30, failed: true });
  }
  const entries: Array<[number, { state: EntryState; origin: EntryOrigin }]> = [];
  const blockIn = (g: number, k: number): number => (g * record.regionBytes) / BLOCK + 4099 * k;
  for (const g of EXAMPLE_ERROR_REGIONS) {
    entries.push([blockIn(g, 1), { state: 'lost', origin: 'scan' }]);
    entries.push([blockIn(g, 2), { state: 'mapped', origin: 'scan' }]);
  }
  for (const g of [1222, 1260, 1301, 1333]) entries.push([blockIn(g, 3), { state: 'mapped', origin: 'scan' }]);
  for (const g of [87, 88, 3050]) entries.push([blockIn(g, 1), { state: 'mapped', origin: 'manual' }]);
  entries.push([blockIn(3900, 5), { state: 'lost', origin: 'auto' }]);
  entries.push([blockIn(512, 5), { state: 'mapped', origin: 'auto' }]);
  return surfaceModel({
    device: '/dev/ublkb0',
    name: 'archive',
    deviceBytes,
    blockSize: BLOCK,
    regions: record,
    scan: {
      state: 'running',
      progress: 70,
      position: readUpTo,
      deviceBytes,
      rateBps: 64 * MIB,
      startedAt: MADE_AT - 3 * 3600_000 - 7 * 60_000,
      finishedAt: MADE_AT - 31 * 86_400_000,
      errorsFound: EXAMPLE_ERROR_REGIONS.length,
      slowFound: slow,
      etaSeconds: Math.round((deviceBytes - readUpTo) / (64 * MIB)),
      pass: 4,
    },
    entries,
    now: MADE_AT,
  });
}
