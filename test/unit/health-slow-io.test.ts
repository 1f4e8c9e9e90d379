// The scanner tells the health model of each slow read it judges (ScannerOptions.onSlowIo, what the daemon
// records as `slow_io`), and not of one read while users did I/O (a user queue makes every read slow).
import { describe, expect, it } from 'vitest';
import type { NativeScanReadResult, ScanSegment } from '../../src/native.js';
import type { QueueCounters } from '../../src/scan/rate-control.js';
import { Scanner, type ScanDevice, type ScanTimer } from '../../src/scan/scanner.js';
import { DEFAULT_SCAN_SETTINGS } from '../../src/scan/settings.js';
import { quietLog } from './helpers.js';
import { scanPieces } from '../../src/testing/scan-pieces.js';

const BS = 4096;
const MIB = 1 << 20;

/** A main whose block 7 reads in 800 ms (slow_io_ms is 500), every other in 100 µs; users do I/O when `busy`. */
class SlowDevice implements ScanDevice {
  busy = false;
  private userReads = 0;
  tableGeneration(): number {
    return 1;
  }
  stats(): QueueCounters[] {
    if (this.busy) this.userReads += 100;
    return [{ queue: 0, reads: this.userReads, writes: 0, flushes: 0, discards: 0, readBytes: this.userReads * BS, writeBytes: 0, inflight: this.busy ? 4 : 0 }];
  }
  async scanRead(offset: bigint, bytes: number, narrow = false): Promise<NativeScanReadResult> {
    const first = Number(offset) / BS;
    const end = first + bytes / BS;
    const segments: ScanSegment[] = [];
    const slow = (b: number): number => (b === 7 ? 800_000 : 100);
    if (narrow) for (let b = first; b < end; b++) segments.push({ device: 'main', block: b, blocks: 1, skipped: null, latencyUs: slow(b), errno: 0 });
    else {
      for (const p of scanPieces(first, end, BS)) {
        let worst = 0;
        for (let b = p.block; b < p.block + p.blocks; b++) worst = Math.max(worst, slow(b));
        segments.push({ device: 'main', block: p.block, blocks: p.blocks, skipped: null, latencyUs: worst, errno: 0 });
      }
    }
    return { offset, bytes, segments, coveredBytes: bytes, stopped: null, generation: 1 };
  }
}

async function pass(busy: boolean): Promise<{ slowIos: number; told: number }> {
  let t = 1_000_000;
  const pending = new Map<number, { at: number; fn: () => void }>();
  let id = 0;
  const timer: ScanTimer = {
    set: (fn, ms) => (pending.set(++id, { at: t + ms, fn }), id),
    clear: (h) => void pending.delete(h as number),
  };
  const dev = new SlowDevice();
  dev.busy = busy;
  let told = 0;
  const scanner = new Scanner({
    device: dev,
    blockSize: BS,
    deviceBytes: 2 * MIB,
    settings: { ...DEFAULT_SCAN_SETTINGS, slowIoMs: 500 },
    log: quietLog(),
    clock: { now: () => t },
    timer,
    sink: { readFailed: async () => 'handled', slowBlock: () => undefined },
    onSlowIo: () => void told++,
    saved: null,
    save: null,
  });
  await scanner.start();
  for (let i = 0; i < 100_000 && scanner.status().state === 'running'; i++) {
    let next: [number, { at: number; fn: () => void }] | null = null;
    for (const e of pending) if (next === null || e[1].at < next[1].at) next = e;
    if (next === null) break;
    pending.delete(next[0]);
    t = Math.max(t, next[1].at);
    next[1].fn();
    await scanner.idle();
    await new Promise((r) => setImmediate(r));
  }
  expect(scanner.status().state).toBe('done');
  const slowIos = scanner.stats().slowIos;
  await scanner.close();
  return { slowIos, told };
}

describe('slow reads reach the health model', () => {
  it('each slow read judged is told once', async () => {
    expect(await pass(false)).toEqual({ slowIos: 1, told: 1 });
  });

  it('a slow read while users do I/O is counted by the scan but not told (not judged)', async () => {
    const r = await pass(true);
    expect(r.slowIos).toBe(1);
    expect(r.told).toBe(0);
  });
});
