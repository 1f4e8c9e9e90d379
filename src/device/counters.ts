// What the daemon remembers of the events the data path reports: I/O error counts by device and errno,
// the last error, and per-queue latency/throughput summaries computed from the native counters.
import { errnoName } from '../errors.js';
import type { NativeEvent, QueueStats } from '../native.js';
import type { DeviceStatus } from '../control/protocol.js';

type IoErrorEvent = Extract<NativeEvent, { type: 'io_error' }>;

export class IoErrorCounters {
  total = 0;
  main = 0;
  spare = 0;
  readonly byErrno: Record<string, number> = {};
  last: DeviceStatus['ioErrors']['last'] = null;
  /** Discard pieces main refused or failed: the requests succeeded (a discard is a hint), so not errors above. */
  discardsRefused = 0;

  /** A discard piece main refused or failed (its request succeeded). */
  recordDiscardRefused(): void {
    this.discardsRefused++;
  }

  record(ev: IoErrorEvent, at: Date = new Date()): void {
    this.total++;
    this[ev.device]++;
    const name = errnoName(ev.errno);
    this.byErrno[name] = (this.byErrno[name] ?? 0) + 1;
    this.last = {
      at: at.toISOString(),
      queue: ev.queue,
      op: ev.op,
      device: ev.device,
      sector: ev.sector.toString(),
      sectors: ev.sectors,
      errno: name,
    };
  }

  snapshot(): DeviceStatus['ioErrors'] {
    return {
      total: this.total,
      main: this.main,
      spare: this.spare,
      byErrno: { ...this.byErrno },
      last: this.last,
      discardsRefused: this.discardsRefused,
    };
  }
}

/** Upper bound (µs) of the log2 bucket holding quantile `q` of the merged histogram, or null if empty. */
export function latencyQuantileUs(hist: number[], q: number): number | null {
  const total = hist.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = Math.ceil(q * total);
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i] ?? 0;
    if (seen >= rank) return 2 ** (i + 1);
  }
  return 2 ** hist.length;
}

export function summarizeQueues(stats: QueueStats[]): Pick<DeviceStatus, 'io' | 'perQueue'> {
  const hist: number[] = [];
  const io = {
    reads: 0,
    writes: 0,
    flushes: 0,
    discards: 0,
    readBytes: 0,
    writeBytes: 0,
    errors: 0,
    inflight: 0,
    latencyP50Us: null as number | null,
    latencyP99Us: null as number | null,
    latencyLog2Us: [] as number[],
  };
  for (const s of stats) {
    io.reads += s.reads;
    io.writes += s.writes;
    io.flushes += s.flushes;
    io.discards += s.discards;
    io.readBytes += s.readBytes;
    io.writeBytes += s.writeBytes;
    io.errors += s.errors;
    io.inflight += s.inflight;
    s.latencyLog2Us.forEach((n, i) => (hist[i] = (hist[i] ?? 0) + n));
  }
  io.latencyP50Us = latencyQuantileUs(hist, 0.5);
  io.latencyP99Us = latencyQuantileUs(hist, 0.99);
  io.latencyLog2Us = hist;
  const perQueue = stats.map((s) => ({
    queue: s.queue,
    reads: s.reads,
    writes: s.writes,
    errors: s.errors,
    inflight: s.inflight,
  }));
  return { io, perQueue };
}
