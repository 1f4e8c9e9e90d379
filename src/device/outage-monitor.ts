// A device-wide outage of main, as the daemon lives it (DESIGN.md invariant 9: an outage marks no block
// lost and uses no slot). OutageDetector (outage-detector.ts) raises a suspicion; a probe read of main
// confirms it; from then on the requests that fail are held (parked in native) instead of retried,
// remapped or marked lost, and main is probed with backoff. When main answers, the held requests are
// released to be retried; a request held longer than outageHoldMs in all (counted from its first hold,
// not reset when it is held again) is released to fail with its errno, by a timer of its own: a main that
// hangs instead of failing cannot keep it. A probe that has not answered within probeTimeoutMs counts as
// main not answering; one probe is in flight at a time (confirm and the backoff ticks share it), so a
// hung main never holds more than one probe's reads. Runs on the JS thread.
import type { Logger } from '../log.js';

/** Probe backoff: the first wait, and the longest. */
const PROBE_FIRST_MS = 50;
export const PROBE_MAX_MS = 1000;
/**
 * A probe not answered within this counts as main not answering (its reads stay in flight and are shared
 * by the next probes). A disk coming out of standby takes a few seconds to spin up; a probe waiting longer
 * than that only delays the outage's beginning.
 */
export const PROBE_TIMEOUT_MS = 5000;

/** A request held during an outage: released with true (main answers: retry it) or false (held too long: fail it). */
export interface Held {
  release(mainAnswers: boolean): void;
  /** A write-outage probe: retries the request and resolves with whether the retry went through. */
  probe?: () => Promise<boolean>;
}

/** What the log says when an outage begins, ends, and when held requests fail after the hold. */
export interface OutageWords {
  began: string;
  ended: string;
  expired: string;
}

const DEVICE_OUTAGE_WORDS: OutageWords = {
  began: 'main device outage began: failed requests are held, nothing is remapped or marked lost',
  ended: 'main device outage ended: held requests are retried',
  expired: 'main still not answering: held requests fail with their errno (nothing marked lost)',
};

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
  /** Held requests released at the end of outageHoldMs: failed with their errno (a write outage: redirected to the spare). */
  failedAfterHold: number;
}

export class OutageMonitor {
  private activeSince: number | null = null;
  private probing: Promise<boolean> | null = null;
  /** The probe whose reads are in flight (maybe past its timeout): the next probe waits for it, not new reads. */
  private inFlight: Promise<boolean> | null = null;
  /** Held requests, each with when it was first held (its hold ends at since + holdMs). */
  private held: Array<{ since: number; h: Held }> = [];
  private timer: NodeJS.Timeout | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;
  private backoff = PROBE_FIRST_MS;
  private closed = false;
  private counts = { outages: 0, heldTotal: 0, failedAfterHold: 0 };
  /** The log's words for this kind of outage (a write outage has its own). */
  words: OutageWords = DEVICE_OUTAGE_WORDS;
  /** Told when an outage begins (true) and ends (false), with the time (the health model's outages). */
  onChange: ((active: boolean, at: number) => void) | null = null;

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
    private readonly probeTimeoutMs: number = PROBE_TIMEOUT_MS,
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
      this.probing = this.probeOnce().then((answered) => {
        this.probing = null;
        if (answered) this.onAnswered();
        else this.begin();
        return !answered;
      });
    }
    return this.probing;
  }

  /**
   * Holds a request until main answers, or until outageHoldMs after `since` (when the request was first
   * held: a request held again keeps its first time). Decided now: with no outage going on (it ended while
   * the request was on its way here) the request is released at once to be retried; past its time it is
   * released to fail.
   */
  hold(h: Held, since: number, again = false): void {
    if (this.closed) return;
    if (this.now() - since >= this.holdMs()) {
      this.expire([{ since, h }]);
      return;
    }
    if (!this.active) {
      h.release(true);
      return;
    }
    this.held.push({ since, h });
    if (!again) this.counts.heldTotal++;
    this.armExpiry();
  }

  /**
   * Begins an outage without a probe of its own (the caller has the evidence: a write outage), and probes
   * main with backoff until it answers.
   */
  enter(): void {
    this.begin();
  }

  /**
   * Takes the request held longest out of the hold (a write-outage probe retries it; if it fails again it
   * is held again with its first time, `again` set: counted once). Null when none is held.
   */
  takeOldest(): Held | null {
    if (this.held.length === 0) return null;
    let at = 0;
    for (let i = 1; i < this.held.length; i++) if ((this.held[i]?.since ?? 0) < (this.held[at]?.since ?? 0)) at = i;
    const [x] = this.held.splice(at, 1);
    this.armExpiry();
    return x?.h ?? null;
  }

  /** Stops probing; held requests stay parked (native fails them when the device stops). */
  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    this.timer = null;
    this.expiryTimer = null;
  }

  /** One probe of main: true when it answers within probeTimeoutMs. Reads still in flight are shared, not issued again. */
  private probeOnce(): Promise<boolean> {
    if (this.inFlight === null) {
      const p = this.probe().catch(() => false);
      this.inFlight = p;
      void p.then((answered) => {
        if (this.inFlight === p) this.inFlight = null;
        // Reads that outlived their probe's timeout still tell: main answers now.
        if (answered && this.active && !this.closed) this.end();
      });
    }
    const reads = this.inFlight;
    return new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), this.probeTimeoutMs);
      void reads.then((answered) => {
        clearTimeout(t);
        resolve(answered);
      });
    });
  }

  /** Arms the timer of the earliest held request's end. */
  private armExpiry(): void {
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    if (this.closed || this.held.length === 0) return;
    const first = Math.min(...this.held.map((x) => x.since));
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = null;
      const limit = this.now() - this.holdMs();
      const expired = this.held.filter((x) => x.since <= limit);
      this.held = this.held.filter((x) => x.since > limit);
      this.expire(expired);
      this.armExpiry();
    }, Math.max(0, first + this.holdMs() - this.now()));
  }

  private expire(expired: Array<{ since: number; h: Held }>): void {
    if (expired.length === 0) return;
    this.counts.failedAfterHold += expired.length;
    this.log.error({ requests: expired.length, holdMs: this.holdMs() }, this.words.expired);
    for (const x of expired) x.h.release(false);
  }

  private begin(): void {
    if (this.active || this.closed) return;
    this.activeSince = this.now();
    this.counts.outages++;
    this.backoff = PROBE_FIRST_MS;
    this.log.warn({ holdMs: this.holdMs() }, this.words.began);
    this.onChange?.(true, this.activeSince);
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
    const answered = await this.probeOnce();
    if (this.closed || !this.active) return;
    if (answered) {
      this.end();
      return;
    }
    this.schedule();
  }

  private end(): void {
    if (!this.active) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const since = this.activeSince ?? this.now();
    this.activeSince = null;
    const held = this.held;
    this.held = [];
    this.armExpiry();
    this.onAnswered();
    this.log.warn({ durationMs: this.now() - since, released: held.length }, this.words.ended);
    this.onChange?.(false, this.now());
    for (const x of held) x.h.release(true);
    this.onEnded();
  }
}
