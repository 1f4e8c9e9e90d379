// The device's event bus (device-events.ts), the scan's events (scan-events.ts), a watcher's bounded stream
// (watch-stream.ts) and the burst log's notes: what `watch` streams, and that a slow watcher costs a bounded
// amount and is told what it missed.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BurstLog } from '../../src/device/burst-log.js';
import { CommitEvents, DeviceEvents, deviceEventSchema, type DeviceEvent } from '../../src/device/device-events.js';
import { HealthEvents } from '../../src/device/health-events.js';
import { ScanEvents } from '../../src/device/scan-events.js';
import { WatchStream, type WatchSocket } from '../../src/control/watch-stream.js';
import type { ResolvedOp } from '../../src/remap/state.js';
import type { RemapEntry } from '../../src/remap/table.js';
import type { ScanStatus } from '../../src/scan/scanner.js';
import { quietLog } from './helpers.js';

const op = (o: Partial<ResolvedOp> & Pick<ResolvedOp, 'op' | 'block'>): ResolvedOp => ({
  slot: 0, lost: false, auto: false, scan: false, dataOnMain: false, time: 0, errorCount: 0, ...o,
});

function bus(now = 1_000): { events: DeviceEvents; got: DeviceEvent[] } {
  const events = new DeviceEvents({ device: () => '/dev/ublkb3', now: () => now });
  const got: DeviceEvent[] = [];
  events.on((e) => got.push(e));
  return { events, got };
}

describe('DeviceEvents', () => {
  it('stamps each event with the time and the device; every event it makes fits the schema', () => {
    const { events, got } = bus(5_000);
    events.outage('read', true);
    events.outage('write', false);
    expect(got).toEqual([
      { type: 'outage', at: 5_000, device: '/dev/ublkb3', phase: 'begin', kind: 'read' },
      { type: 'outage', at: 5_000, device: '/dev/ublkb3', phase: 'end', kind: 'write' },
    ]);
    for (const e of got) expect(deviceEventSchema.parse(e)).toEqual(e);
  });

  it('a listener that throws does not stop the others; a removed one hears nothing', () => {
    const events = new DeviceEvents({ device: () => 'd' });
    const a: string[] = [];
    events.on(() => {
      throw new Error('boom');
    });
    const off = events.on((e) => a.push(e.type));
    events.outage('read', true);
    off();
    events.outage('read', false);
    expect(a).toEqual(['outage']);
  });

  it('tells how many listen (the scan is polled only then)', () => {
    const events = new DeviceEvents({ device: () => 'd' });
    const counts: number[] = [];
    events.onListeners = (n) => counts.push(n);
    const off1 = events.on(() => {});
    const off2 = events.on(() => {});
    off1();
    off1();
    off2();
    expect(counts).toEqual([1, 2, 1, 0]);
  });

  it('forwards the health model\'s state changes and alarms, not its recorded events', () => {
    const { events, got } = bus();
    const h = new HealthEvents();
    events.forwardHealth(h);
    h.emit({ type: 'recorded', at: 1, event: { type: 'slow_io' } });
    h.emit({ type: 'state', at: 2, previous: 'healthy', state: 'watch', score: 84, reason: '3 new bad blocks' });
    h.emit({ type: 'alarm', at: 3, alarm: 'acceleration', state: 'watch', score: 80, reason: 'accelerating' });
    h.emit({ type: 'reset', at: 4 });
    expect(got).toEqual([
      { type: 'health', at: 2, device: '/dev/ublkb3', previous: 'healthy', state: 'watch', score: 84, reason: '3 new bad blocks' },
      { type: 'alarm', at: 3, device: '/dev/ublkb3', alarm: 'acceleration', state: 'watch', score: 80, reason: 'accelerating' },
    ]);
  });
});

/** The next turn of the event loop: CommitEvents announces a commit there. */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('CommitEvents', () => {
  it('a committed remap is a remap event with its origin, sector and slot; a lost one also a pending block (on the next turn, not inside the commit)', async () => {
    const { events, got } = bus();
    const c = new CommitEvents(events, 8, []);
    c.committed([
      { op: op({ op: 'remap', block: 10, slot: 2, auto: true, time: 777 }), origin: 'auto' },
      { op: op({ op: 'remap', block: 11, slot: 3, auto: true, scan: true, lost: true, time: 778 }), origin: null },
      { op: op({ op: 'remap', block: 12, slot: 4 }), origin: 'manual' },
      { op: op({ op: 'errors', block: 12, errorCount: 3 }), origin: null },
    ]);
    expect(got).toEqual([]);
    await turn();
    expect(got).toEqual([
      { type: 'remap', at: 777, device: '/dev/ublkb3', block: 10, sector: 80, slot: 2, origin: 'auto', state: 'mapped' },
      { type: 'remap', at: 778, device: '/dev/ublkb3', block: 11, sector: 88, slot: 3, origin: 'scan', state: 'lost' },
      { type: 'remap', at: 1_000, device: '/dev/ublkb3', block: 12, sector: 96, slot: 4, origin: 'manual', state: 'mapped' },
      { type: 'pending', at: 1_000, device: '/dev/ublkb3', change: 'added', blocks: [11], count: 1 },
    ]);
  });

  it('pending blocks are cleared when written (mapped) or unremapped, also those lost before it started', async () => {
    const { events, got } = bus();
    const lostEntry = { state: 'lost' } as RemapEntry;
    const mappedEntry = { state: 'mapped' } as RemapEntry;
    const c = new CommitEvents(events, 1, [[5, lostEntry], [6, lostEntry], [7, mappedEntry]]);
    c.committed([{ op: op({ op: 'lost', block: 7 }), origin: null }]);
    c.committed([
      { op: op({ op: 'mapped', block: 5 }), origin: null },
      { op: op({ op: 'unremap', block: 6 }), origin: null },
      { op: op({ op: 'unremap', block: 9 }), origin: null },
    ]);
    await turn();
    expect(got.map((e) => (e.type === 'pending' ? [e.change, e.blocks, e.count] : e.type))).toEqual([
      ['added', [7], 1],
      ['cleared', [5, 6], 2],
    ]);
  });

  it('a big commit names the first 64 pending blocks and counts them all', async () => {
    const { events, got } = bus();
    const c = new CommitEvents(events, 1, []);
    c.committed(Array.from({ length: 100 }, (_, i) => ({ op: op({ op: 'lost', block: i }), origin: null })));
    await turn();
    expect(got).toHaveLength(1);
    const e = got[0] as Extract<DeviceEvent, { type: 'pending' }>;
    expect(e.count).toBe(100);
    expect(e.blocks).toHaveLength(64);
    expect(deviceEventSchema.safeParse(e).success).toBe(true);
  });
});

describe('burst events', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('the burst log\'s warnings and errors become burst events as they are logged: the first at once, then one per window', () => {
    const { events, got } = bus();
    const b = new BurstLog(quietLog(), 1000);
    b.onNote = (n) => events.burst(n);
    b.note('write:main', 'warn', 'write errors on main', { blocks: [7] });
    for (let i = 0; i < 30; i++) b.note('write:main', 'warn', 'write errors on main', { blocks: [100 + i] });
    b.note('committed', 'info', 'writes committed', { blocks: [1] });
    expect(got).toEqual([
      { type: 'burst', at: 1_000, device: '/dev/ublkb3', kind: 'write:main', level: 'warn', message: 'write errors on main', events: 1, count: 1, unit: 'blocks', blocks: [7] },
    ]);
    vi.advanceTimersByTime(1000);
    expect(got).toHaveLength(2);
    expect(got[1]).toMatchObject({ type: 'burst', kind: 'write:main', events: 30, count: 30, blocks: Array.from({ length: 16 }, (_, i) => 100 + i) });
    for (const e of got) expect(deviceEventSchema.safeParse(e).success).toBe(true);
  });
});

describe('ScanEvents', () => {
  const status = (s: Partial<ScanStatus>): ScanStatus => ({
    state: 'idle', progress: 0, position: 0, deviceBytes: 1 << 30, rateBps: 0, startedAt: null, finishedAt: null,
    errorsFound: 0, slowFound: 0, etaSeconds: null, pass: 1, ...s,
  });

  it('a change of state at once, progress while running at most once per progressMs, nothing while idle', () => {
    const { events, got } = bus();
    let now = 0;
    let s = status({});
    const se = new ScanEvents({ bus: events, status: () => s, now: () => now, pollMs: 60_000, progressMs: 5000 });
    se.start();
    se.poll();
    expect(got).toEqual([]);
    s = status({ state: 'running', position: 1 << 20, rateBps: 1 << 20 });
    now = 1000;
    se.poll();
    expect(got.map((e) => (e.type === 'scan' ? [e.previous, e.state, e.position] : e.type))).toEqual([['idle', 'running', 1 << 20]]);
    for (const t of [2000, 3000, 4000, 5000]) {
      now = t;
      s = status({ state: 'running', position: t << 20 });
      se.poll();
    }
    expect(got).toHaveLength(1);
    now = 6000;
    s = status({ state: 'running', position: 6 << 20, progress: 1 });
    se.poll();
    expect(got).toHaveLength(2);
    expect(got[1]).toMatchObject({ type: 'scan', previous: null, state: 'running', position: 6 << 20, progress: 1 });
    s = status({ state: 'paused', position: 6 << 20 });
    now = 6500;
    se.poll();
    expect(got[2]).toMatchObject({ type: 'scan', previous: 'running', state: 'paused' });
    se.stop();
    for (const e of got) expect(deviceEventSchema.safeParse(e).success).toBe(true);
  });

  it('polls only while the bus has listeners', () => {
    vi.useFakeTimers();
    try {
      const events = new DeviceEvents({ device: () => 'd' });
      let calls = 0;
      const se = new ScanEvents({ bus: events, status: () => (calls++, status({})), pollMs: 1000 });
      events.onListeners = (n) => se.listeners(n);
      vi.advanceTimersByTime(5000);
      expect(calls).toBe(0);
      const off = events.on(() => {});
      vi.advanceTimersByTime(3000);
      expect(calls).toBe(4); // the first look at start, then one per second
      off();
      vi.advanceTimersByTime(5000);
      expect(calls).toBe(4);
    } finally {
      vi.useRealTimers();
    }
  });
});

/** A socket whose peer reads nothing until told: write() buffers, drain() empties it. */
class SlowSocket implements WatchSocket {
  lines: string[] = [];
  private pending: string[] = [];
  writableLength = 0;
  writableEnded = false;
  destroyed = false;
  private drainers = new Set<() => void>();
  constructor(private readonly highWaterMark = 100) {}
  write(line: string): boolean {
    this.pending.push(line);
    this.writableLength += Buffer.byteLength(line);
    return this.writableLength < this.highWaterMark;
  }
  on(_e: 'drain', fn: () => void): this {
    this.drainers.add(fn);
    return this;
  }
  off(_e: 'drain', fn: () => void): this {
    this.drainers.delete(fn);
    return this;
  }
  /** The peer reads everything buffered. */
  drain(): void {
    this.lines.push(...this.pending);
    this.pending = [];
    this.writableLength = 0;
    for (const fn of [...this.drainers]) fn();
  }
  parsed(): DeviceEvent[] {
    return this.lines.map((l) => deviceEventSchema.parse(JSON.parse(l)));
  }
}

describe('WatchStream', () => {
  const ev = (i: number): DeviceEvent => ({ type: 'remap', at: i, device: '/dev/ublkb0', block: i, sector: i * 8, slot: i, origin: 'auto', state: 'mapped' });

  it('a watcher that does not read holds at most maxBytes; what it missed is told first once it drains', () => {
    const sock = new SlowSocket(100);
    const w = new WatchStream(sock, () => '/dev/ublkb0', { maxBytes: 1000, maxEvents: 1_000_000 }, () => 42);
    for (let i = 0; i < 10_000; i++) w.send(ev(i));
    expect(sock.writableLength).toBeLessThan(1000 + 200);
    const kept = 10_000 - w.missedNow;
    expect(kept).toBeGreaterThan(0);
    expect(w.missedNow).toBeGreaterThan(9000);
    sock.drain();
    w.send(ev(20_000));
    sock.drain();
    const got = sock.parsed();
    expect(got.slice(0, kept).map((e) => e.at)).toEqual(Array.from({ length: kept }, (_, i) => i));
    expect(got[kept]).toEqual({ type: 'missed', at: 42, device: '/dev/ublkb0', count: 10_000 - kept });
    expect(got[kept + 1]).toEqual(ev(20_000));
    expect(got).toHaveLength(kept + 2);
  });

  it('bounds the number of waiting events too', () => {
    const sock = new SlowSocket(0);
    const w = new WatchStream(sock, () => 'd', { maxBytes: 1 << 30, maxEvents: 10 });
    for (let i = 0; i < 50; i++) w.send(ev(i));
    expect(w.missedNow).toBe(40);
    sock.drain(); // the peer reads the 10; the missed notice is written then
    sock.drain();
    expect(sock.parsed().map((e) => e.type)).toEqual([...Array<string>(10).fill('remap'), 'missed']);
  });

  it('a watcher that keeps up misses nothing and gets no missed event', () => {
    const sock = new SlowSocket(1 << 20);
    const w = new WatchStream(sock, () => 'd', { maxBytes: 1000 });
    for (let i = 0; i < 100; i++) {
      w.send(ev(i));
      sock.drain();
    }
    expect(sock.parsed().map((e) => e.at)).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });

  it('writes nothing to an ended or destroyed socket', () => {
    const sock = new SlowSocket();
    const w = new WatchStream(sock, () => 'd');
    sock.writableEnded = true;
    w.send(ev(1));
    w.sendLine('x\n');
    sock.drain();
    expect(sock.lines).toEqual([]);
  });
});
