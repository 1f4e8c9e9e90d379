// One watcher of the control socket: device events written to its connection, one JSON line each, never
// holding the daemon back. The socket's own write buffer is the queue, bounded: while it holds more than
// `maxBytes` (or `maxEvents` lines were written since it last reported room), events are dropped and counted; once it has drained,
// the watcher gets {"type":"missed","count":N,...} before the next event. A watcher that reads nothing costs
// at most that bound.
import type { DeviceEvent } from '../device/device-events.js';

export const WATCH_MAX_BYTES = 1 << 20;
export const WATCH_MAX_EVENTS = 1024;

/** What a watcher's stream needs of its socket (net.Socket has it; tests give a fake). */
export interface WatchSocket {
  write(line: string): boolean;
  readonly writableLength: number;
  readonly writableEnded: boolean;
  readonly destroyed: boolean;
  on(event: 'drain', fn: () => void): unknown;
  off(event: 'drain', fn: () => void): unknown;
}

export interface WatchLimits {
  maxBytes?: number;
  maxEvents?: number;
}

export class WatchStream {
  private missed = 0;
  /** Lines written since the socket last drained. */
  private waiting = 0;
  private readonly maxBytes: number;
  private readonly maxEvents: number;
  private readonly onDrain = (): void => this.drained();

  constructor(
    private readonly sock: WatchSocket,
    /** The exported device, for the `missed` event. */
    private readonly device: () => string,
    limits: WatchLimits = {},
    private readonly now: () => number = Date.now,
  ) {
    this.maxBytes = limits.maxBytes ?? WATCH_MAX_BYTES;
    this.maxEvents = limits.maxEvents ?? WATCH_MAX_EVENTS;
    sock.on('drain', this.onDrain);
  }

  /** Events dropped since the watcher last caught up (tests). */
  get missedNow(): number {
    return this.missed;
  }

  send(ev: DeviceEvent): void {
    if (this.sock.destroyed || this.sock.writableEnded) return;
    if (this.missed > 0 || this.full()) {
      this.missed++;
      return;
    }
    this.put(`${JSON.stringify(ev)}\n`);
  }

  /** Any other line for this connection (an error reply), under the same bound; dropped silently when full. */
  sendLine(line: string): void {
    if (this.sock.destroyed || this.sock.writableEnded || this.full()) return;
    this.put(line);
  }

  close(): void {
    this.sock.off('drain', this.onDrain);
  }

  private full(): boolean {
    return this.sock.writableLength >= this.maxBytes || this.waiting >= this.maxEvents;
  }

  private put(line: string): void {
    if (this.sock.write(line)) this.waiting = 0;
    else this.waiting++;
  }

  private drained(): void {
    this.waiting = 0;
    if (this.missed === 0 || this.sock.destroyed || this.sock.writableEnded) return;
    const count = this.missed;
    this.missed = 0;
    this.put(`${JSON.stringify({ type: 'missed', at: this.now(), device: this.device(), count } satisfies DeviceEvent)}\n`);
  }
}
