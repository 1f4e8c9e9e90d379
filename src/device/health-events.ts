// Where a device's health changes are announced inside the daemon: every event recorded into its series,
// every change of state, every forecast alarm, a reset. The log line and the alert command listen here
// already (device-health.ts); `watch` (a later task) subscribes the same way. A listener that throws does
// not stop the others, nor the daemon.
import type { HealthEvent, HealthState } from '../health/index.js';

export type HealthAlarm = 'acceleration' | 'spare_forecast';

export type HealthNotice =
  /** An event went into the series (HealthSeries.record). */
  | { type: 'recorded'; at: number; event: HealthEvent }
  /** The assessed state changed; `reason` is the worst reason's sentence. */
  | { type: 'state'; at: number; previous: HealthState; state: HealthState; score: number; reason: string }
  /** A forecast alarm began without a change of state: new bad blocks accelerating, or the spare forecast to run out soon. */
  | { type: 'alarm'; at: number; alarm: HealthAlarm; state: HealthState; score: number; reason: string }
  /** `health <dev> reset`: a new series began. */
  | { type: 'reset'; at: number };

export type HealthListener = (n: HealthNotice) => void;

export class HealthEvents {
  private readonly listeners = new Set<HealthListener>();

  /** Adds a listener; returns the function that removes it. */
  on(fn: HealthListener): () => void {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
    };
  }

  get listenerCount(): number {
    return this.listeners.size;
  }

  emit(n: HealthNotice): void {
    for (const fn of [...this.listeners]) {
      try {
        fn(n);
      } catch {
        // One listener's failure is its own.
      }
    }
  }
}
