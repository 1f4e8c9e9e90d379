// The background scan's `scan` events: its status is looked at every `pollMs` while someone watches (nothing
// runs otherwise), and an event goes out when its state changed (start, pause, resume, done, stop), and while
// it runs, its progress at most once every `progressMs`. The scanner is not touched: its status() is cheap
// (no I/O). A state held for less than one poll can be missed; the next change then names the state before.
import type { ScanStatus } from '../scan/scanner.js';
import type { DeviceEvents } from './device-events.js';

export const SCAN_POLL_MS = 1000;
export const SCAN_PROGRESS_MS = 5000;

export interface ScanEventsOptions {
  bus: DeviceEvents;
  /** The scan's status now; null while there is no scanner. */
  status: () => ScanStatus | null;
  now?: () => number;
  pollMs?: number;
  progressMs?: number;
}

export class ScanEvents {
  private timer: NodeJS.Timeout | null = null;
  private last: ScanStatus | null = null;
  private lastProgressAt = 0;
  private readonly now: () => number;

  constructor(private readonly o: ScanEventsOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Follows the number of listeners of the bus: polls while there is one. */
  listeners(count: number): void {
    if (count > 0) this.start();
    else this.stop();
  }

  start(): void {
    if (this.timer !== null) return;
    // The first look only notes where the scan is: a watcher is told what changes from now on.
    this.last = this.o.status();
    this.lastProgressAt = this.now();
    this.timer = setInterval(() => this.poll(), this.o.pollMs ?? SCAN_POLL_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.last = null;
  }

  /** One look at the scan (the timer's; tests call it directly). */
  poll(): void {
    const s = this.o.status();
    if (s === null) return;
    const prev = this.last;
    this.last = s;
    const now = this.now();
    const changed = prev === null || prev.state !== s.state || prev.pass !== s.pass;
    if (changed) {
      this.lastProgressAt = now;
      this.send(s, prev?.state ?? null, now);
      return;
    }
    if (s.state === 'running' && s.position !== prev.position && now - this.lastProgressAt >= (this.o.progressMs ?? SCAN_PROGRESS_MS)) {
      this.lastProgressAt = now;
      this.send(s, null, now);
    }
  }

  private send(s: ScanStatus, previous: ScanStatus['state'] | null, at: number): void {
    this.o.bus.emit({
      type: 'scan',
      at,
      state: s.state,
      previous,
      progress: s.progress,
      position: s.position,
      deviceBytes: s.deviceBytes,
      rateBps: s.rateBps,
      pass: s.pass,
      errorsFound: s.errorsFound,
    });
  }
}
