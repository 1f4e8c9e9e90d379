// A device-wide outage of main, as the daemon lives it (DESIGN.md invariant 9: an outage marks no block
// lost and uses no slot). OutageDetector (outage-detector.ts) raises a suspicion; a probe read of main
// confirms it; from then on the requests that fail are held (parked in native) instead of retried,
// remapped or marked lost, and main is probed with backoff. When main answers, the held requests are
// released to be retried; a request held longer than outageHoldMs is released to fail with its errno.
// Runs on the JS thread.
import type { Logger } from '../log.js';
import type { NativeDevice } from '../native.js';
import { isNativeError } from '../native.js';
import { MEDIUM_ERRNOS } from './outage-detector.js';

/** Probe backoff: the first wait, and the longest. */
const PROBE_FIRST_MS = 50;
const PROBE_MAX_MS = 1000;

/** A request held during an outage: released with true (main answers: retry it) or false (held too long: fail it). */
export interface Held {
  release(mainAnswers: boolean): void;
}

export interface OutageStats {
  /** An outage is going on now. */
  active: boolean;
  /** When it began (ms since the epoch), null when none is going on. */
  since: number | null;
  /** Outages since start or the last clear_stats. */
  outages: number;
  /** Requests held now. */
  held: number;
  /** Requests held since start or the last clear_stats. */
  heldTotal: number;
  /** Held requests that failed with their errno because main did not answer within outageHoldMs. */
  failedAfterHold: number;
}

/**
 * Reads a few blocks of main spread over the device (the first, the middle, the last): true when main
 * answers, that is when one read succeeds or fails with a medium error (the device is there, that sector
 * is bad); false when every read fails otherwise (EIO from everywhere, ENODEV...).
 */
export async function probeMain(device: NativeDevice, blockSize: number, deviceBlocks: number): Promise<boolean> {
  const blocks = [...new Set([0, Math.floor(deviceBlocks / 2), Math.max(0, deviceBlocks - 1)])];
  const answers = await Promise.all(
    blocks.map((b) =>
      device.readRange('main', BigInt(b) * BigInt(blockSize), blockSize).then(
        () => true,
        (e: unknown) => isNativeError(e) && MEDIUM_ERRNOS.has(e.errno),
      ),
    ),
  );
  return answers.some((a) => a);
}

export class OutageMonitor {
  private activeSince: number | null = null;
  private probing: Promise<boolean> | null = null;
  private held: Array<{ at: number; h: Held }> = [];
  private timer: NodeJS.Timeout | null = null;
  private backoff = PROBE_FIRST_MS;
  private closed = false;
  private counts = { outages: 0, heldTotal: 0, failedAfterHold: 0 };

  constructor(
    /** True when main answers (probeMain). */
    private readonly probe: () => Promise<boolean>,
    private readonly holdMs: () => number,
    private readonly log: Logger,
    /** Called once an outage is over and its held requests were released (to recheck blocks). */
    private readonly onEnded: () => void,
    /** Called after a probe that main answered (the detector forgets its evidence). */
    private readonly onAnswered: () => void,
    private readonly now: () => number = Date.now,
  ) {}

  get active(): boolean {
    return this.activeSince !== null;
  }

  stats(): OutageStats {
    return { active: this.active, since: this.activeSince, outages: this.counts.outages, held: this.held.length, ...this.countsOut() };
  }

  private countsOut(): { heldTotal: number; failedAfterHold: number } {
    return { heldTotal: this.counts.heldTotal, failedAfterHold: this.counts.failedAfterHold };
  }

  clearStats(): void {
    this.counts = { outages: this.active ? 1 : 0, heldTotal: this.held.length, failedAfterHold: 0 };
  }

  /**
   * Whether main is in an outage: true at once during one; otherwise probes main (one probe at a time:
   * callers meanwhile share it) and begins an outage when it does not answer.
   */
  async confirm(): Promise<boolean> {
    if (this.active) return true;
    if (this.closed) return false;
    if (this.probing === null) {
      this.probing = this.probe()
        .catch(() => false)
        .then((answered) => {
          this.probing = null;
          if (answered) this.onAnswered();
          else this.begin();
          return !answered;
        });
    }
    return this.probing;
  }

  /** Holds a request until main answers or it has waited outageHoldMs. Only during an outage. */
  hold(h: Held): void {
    this.held.push({ at: this.now(), h });
    this.counts.heldTotal++;
  }

  /** Stops probing; held requests stay parked (native fails them when the device stops). */
  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private begin(): void {
    if (this.active || this.closed) return;
    this.activeSince = this.now();
    this.counts.outages++;
    this.backoff = PROBE_FIRST_MS;
    this.log.warn({ holdMs: this.holdMs() }, 'main device outage began: failed requests are held, nothing is remapped or marked lost');
    this.schedule();
  }

  private schedule(): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.tick();
    }, this.backoff);
    this.backoff = Math.min(PROBE_MAX_MS, this.backoff * 2);
  }

  private async tick(): Promise<void> {
    if (this.closed) return;
    const answered = await this.probe().catch(() => false);
    if (this.closed) return;
    if (answered) {
      this.end();
      return;
    }
    const limit = this.now() - this.holdMs();
    const expired = this.held.filter((x) => x.at <= limit);
    if (expired.length > 0) {
      this.held = this.held.filter((x) => x.at > limit);
      this.counts.failedAfterHold += expired.length;
      this.log.error({ requests: expired.length, holdMs: this.holdMs() }, 'main still not answering: held requests fail with their errno (nothing marked lost)');
      for (const x of expired) x.h.release(false);
    }
    this.schedule();
  }

  private end(): void {
    const since = this.activeSince ?? this.now();
    this.activeSince = null;
    const held = this.held;
    this.held = [];
    this.onAnswered();
    this.log.warn({ durationMs: this.now() - since, released: held.length }, 'main device outage ended: held requests are retried');
    for (const x of held) x.h.release(true);
    this.onEnded();
  }
}
