// One device's event bus (issue 14, `watch`): what happens to the device as it happens, as typed events that
// the control socket streams to its watchers. The sources are the ones that decide: the remap store's commits
// (remaps with their origin, pending blocks added and cleared), the burst logs (error bursts, as logged), the
// health model's announcements (forwarded from HealthEvents: state changes and forecast alarms), the outage
// monitors and the scanner (scan-events.ts). Emitting costs nothing without a listener; a listener that throws
// does not stop the others, nor the daemon.
import * as z from 'zod';
import type { CommittedOp } from '../remap/store.js';
import { entryOrigin, type RemapEntry } from '../remap/table.js';
import type { BurstNote } from './burst-log.js';
import type { HealthEvents } from './health-events.js';

const HEALTH_STATES = ['healthy', 'watch', 'degraded', 'critical', 'failed'] as const;
const uint = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
/** Blocks a pending or burst event names at most (its count says how many there were). */
export const EVENT_BLOCK_SAMPLE = 64;

const base = {
  /** When it happened, ms since the epoch. */
  at: uint,
  /** The exported device (/dev/ublkbN). */
  device: z.string(),
};

export const remapEventSchema = z.strictObject({
  type: z.literal('remap'),
  ...base,
  block: uint,
  /** The block's first 512-byte sector. */
  sector: uint,
  slot: uint,
  origin: z.enum(['manual', 'auto', 'scan']),
  /** lost: the block's data could not be read; reads fail until it is written (a pending block). */
  state: z.enum(['mapped', 'lost']),
});
export const pendingEventSchema = z.strictObject({
  type: z.literal('pending'),
  ...base,
  /** added: blocks became pending (unreadable, lost until written); cleared: pending blocks were written or read again. */
  change: z.enum(['added', 'cleared']),
  blocks: z.array(uint).max(EVENT_BLOCK_SAMPLE),
  count: uint,
});
export const burstEventSchema = z.strictObject({
  type: z.literal('burst'),
  ...base,
  /** The burst log's kind ("write:main", "read:spare", "pending", "scan:main", ...). */
  kind: z.string(),
  level: z.enum(['warn', 'error']),
  message: z.string(),
  /** Log notes this event stands for (1 for the first of a burst, then the ones counted in each window). */
  events: uint,
  /** Blocks (or sectors: `unit`) they touched, and the first of them. */
  count: uint,
  unit: z.enum(['blocks', 'sectors']),
  blocks: z.array(uint).max(EVENT_BLOCK_SAMPLE),
});
export const healthEventSchema = z.strictObject({
  type: z.literal('health'),
  ...base,
  previous: z.enum(HEALTH_STATES),
  state: z.enum(HEALTH_STATES),
  score: z.number(),
  /** The worst reason's sentence. */
  reason: z.string(),
});
export const alarmEventSchema = z.strictObject({
  type: z.literal('alarm'),
  ...base,
  alarm: z.enum(['acceleration', 'spare_forecast']),
  state: z.enum(HEALTH_STATES),
  score: z.number(),
  reason: z.string(),
});
export const scanEventSchema = z.strictObject({
  type: z.literal('scan'),
  ...base,
  state: z.enum(['idle', 'running', 'paused', 'done']),
  /** The state before, when this event is a change of state; null for progress while running. */
  previous: z.enum(['idle', 'running', 'paused', 'done']).nullable(),
  progress: z.number(),
  position: uint,
  deviceBytes: uint,
  rateBps: uint,
  pass: uint,
  errorsFound: uint,
});
export const outageEventSchema = z.strictObject({
  type: z.literal('outage'),
  ...base,
  phase: z.enum(['begin', 'end']),
  /** read: main answers nothing; write: main reads but refuses writes. */
  kind: z.enum(['read', 'write']),
});
export const missedEventSchema = z.strictObject({
  type: z.literal('missed'),
  ...base,
  /** Events this watcher did not get (it read too slowly), just before this one. */
  count: uint,
});

export const deviceEventSchema = z.discriminatedUnion('type', [
  remapEventSchema,
  pendingEventSchema,
  burstEventSchema,
  healthEventSchema,
  alarmEventSchema,
  scanEventSchema,
  outageEventSchema,
  missedEventSchema,
]);
export type DeviceEvent = z.infer<typeof deviceEventSchema>;
export type DeviceEventType = DeviceEvent['type'];
export const DEVICE_EVENT_TYPES: readonly DeviceEventType[] = deviceEventSchema.options.map((o) => o.shape.type.value);

/** An event as a source gives it: the bus adds `at` (unless given) and `device`. */
export type EventBody = DeviceEvent extends infer E ? (E extends DeviceEvent ? Omit<E, 'at' | 'device'> & { at?: number } : never) : never;

export type DeviceEventListener = (ev: DeviceEvent) => void;

export interface DeviceEventsOptions {
  /** The exported device's path, read at each event (it is known once the device is live). */
  device: () => string;
  now?: () => number;
}

export class DeviceEvents {
  private readonly listeners = new Set<DeviceEventListener>();
  private readonly now: () => number;
  /** Told when the number of listeners changes (the scan's progress is polled only while someone listens). */
  onListeners: ((count: number) => void) | null = null;

  constructor(private readonly o: DeviceEventsOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Adds a listener; returns the function that removes it. */
  on(fn: DeviceEventListener): () => void {
    this.listeners.add(fn);
    this.onListeners?.(this.listeners.size);
    return () => {
      if (this.listeners.delete(fn)) this.onListeners?.(this.listeners.size);
    };
  }

  get listenerCount(): number {
    return this.listeners.size;
  }

  emit(body: EventBody): void {
    if (this.listeners.size === 0) return;
    const { at, type, ...rest } = body;
    const ev = { type, at: at ?? this.now(), device: this.o.device(), ...rest } as DeviceEvent;
    for (const fn of [...this.listeners]) {
      try {
        fn(ev);
      } catch {
        // One listener's failure is its own.
      }
    }
  }

  /** Forwards the health model's changes of state and forecast alarms (its other notices are not events here). */
  forwardHealth(h: HealthEvents): () => void {
    return h.on((n) => {
      if (n.type === 'state') this.emit({ type: 'health', at: n.at, previous: n.previous, state: n.state, score: n.score, reason: n.reason });
      else if (n.type === 'alarm') this.emit({ type: 'alarm', at: n.at, alarm: n.alarm, state: n.state, score: n.score, reason: n.reason });
    });
  }

  /** A burst log's line: warnings and errors are events (the info kinds, commits and refused discards, are not). */
  burst(b: BurstNote): void {
    if (b.level === 'info') return;
    this.emit({ type: 'burst', kind: b.kind, level: b.level, message: b.message, events: b.events, count: b.count, unit: b.unit, blocks: b.blocks.slice(0, EVENT_BLOCK_SAMPLE) });
  }

  /** Main's outage (read) or write outage began or ended. */
  outage(kind: 'read' | 'write', active: boolean): void {
    this.emit({ type: 'outage', phase: active ? 'begin' : 'end', kind });
  }
}

/**
 * Turns the remap store's commits into events: each new entry a `remap` (with its origin), and the pending
 * blocks (lost entries) added and cleared. It keeps the set of lost blocks (seeded from the table: costs
 * scale with the bad blocks) because an unremap's op does not say what the entry was.
 */
export class CommitEvents {
  private readonly lost = new Set<number>();

  constructor(
    private readonly bus: DeviceEvents,
    /** 512-byte sectors per block. */
    private readonly sectorsPerBlock: number,
    entries: Iterable<[number, RemapEntry]>,
  ) {
    for (const [block, e] of entries) if (e.state === 'lost') this.lost.add(block);
  }

  /**
   * Called inside RemapStore.onCommitted, which the commit's caller (a user request whose block was just
   * remapped) waits for: the events are made and sent to the watchers on a later turn of the event loop, in
   * commit order.
   */
  committed(ops: readonly CommittedOp[]): void {
    const copy = [...ops];
    setImmediate(() => this.announce(copy));
  }

  private announce(ops: readonly CommittedOp[]): void {
    const added: number[] = [];
    const cleared: number[] = [];
    for (const { op, origin } of ops) {
      switch (op.op) {
        case 'remap': {
          const o = origin ?? entryOrigin(op.auto, op.scan);
          this.bus.emit({ type: 'remap', at: op.time > 0 ? op.time : undefined, block: op.block, sector: op.block * this.sectorsPerBlock, slot: op.slot, origin: o, state: op.lost ? 'lost' : 'mapped' });
          if (op.lost && !this.lost.has(op.block)) {
            this.lost.add(op.block);
            added.push(op.block);
          }
          break;
        }
        case 'lost':
          if (!this.lost.has(op.block)) {
            this.lost.add(op.block);
            added.push(op.block);
          }
          break;
        case 'mapped':
        case 'unremap':
          if (this.lost.delete(op.block)) cleared.push(op.block);
          break;
        default:
          break;
      }
    }
    if (added.length > 0) this.bus.emit({ type: 'pending', change: 'added', blocks: added.slice(0, EVENT_BLOCK_SAMPLE), count: added.length });
    if (cleared.length > 0) this.bus.emit({ type: 'pending', change: 'cleared', blocks: cleared.slice(0, EVENT_BLOCK_SAMPLE), count: cleared.length });
  }
}
