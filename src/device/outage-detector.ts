// Tells a device-wide outage of main (a cable, controller or USB bridge dropping: every request fails for a
// while) from bad sectors, from the failures alone. Pure: no I/O, the clock is passed in. What it says is a
// suspicion; the daemon confirms it with a probe read of main (outage-monitor.ts) before treating failures
// as an outage. The rule (README, "Outages"):
//  - an errno that means the device, not a sector, is gone (ENODEV, ENXIO, ENOLINK, ETIMEDOUT, ESHUTDOWN,
//    ENOTCONN, ECOMM) is a suspicion at once;
//  - otherwise failures on main in `regions` or more distinct regions (the device cut in REGION_COUNT equal
//    parts) within the last `windowMs` are one: bad sectors cluster, a dead link fails everywhere.
import os from 'node:os';

/** Main is cut in this many equal regions for the spread rule. */
export const REGION_COUNT = 64;

const errnoOf = (name: string): number => (os.constants.errno as Record<string, number>)[name] ?? -1;

/** Errnos a disk gives when the device or its link is gone, not when a sector is bad. */
export const DEVICE_GONE_ERRNOS: ReadonlySet<number> = new Set(
  ['ENODEV', 'ENXIO', 'ENOLINK', 'ETIMEDOUT', 'ESHUTDOWN', 'ENOTCONN', 'ECOMM'].map(errnoOf).filter((n) => n > 0),
);

/**
 * Errnos of a medium error: the device answered, the sector is bad. A probe read failing with one of
 * these shows the device is there.
 */
export const MEDIUM_ERRNOS: ReadonlySet<number> = new Set(['ENODATA', 'EILSEQ', 'EBADMSG'].map(errnoOf).filter((n) => n > 0));

export interface OutageRule {
  /** Distinct regions with a failure within windowMs that make an outage likely (1..REGION_COUNT). */
  regions: number;
  windowMs: number;
}

export class OutageDetector {
  /** Region → time of its latest failure, oldest first. */
  private readonly seen = new Map<number, number>();

  constructor(
    private readonly rule: () => OutageRule,
    /** Blocks of the device (the regions cut it in equal parts). */
    private readonly deviceBlocks: number,
    private readonly now: () => number,
  ) {}

  /** The region of `block`. */
  regionOf(block: number): number {
    if (this.deviceBlocks <= 0) return 0;
    return Math.min(REGION_COUNT - 1, Math.floor((block * REGION_COUNT) / this.deviceBlocks));
  }

  /** Records a failure of main at `block` with `errno`; true when an outage is now likely (probe main). */
  failure(block: number, errno: number): boolean {
    const t = this.now();
    const region = this.regionOf(block);
    this.seen.delete(region);
    this.seen.set(region, t);
    this.expire(t);
    return DEVICE_GONE_ERRNOS.has(errno) || this.seen.size >= this.rule().regions;
  }

  /** Regions with a failure within the window now. */
  regionsFailing(): number {
    this.expire(this.now());
    return this.seen.size;
  }

  /** Forgets every failure (main answered a probe: what came before is not evidence of an outage). */
  reset(): void {
    this.seen.clear();
  }

  private expire(t: number): void {
    const oldest = t - this.rule().windowMs;
    for (const [region, at] of this.seen) {
      if (at > oldest) break;
      this.seen.delete(region);
    }
  }
}
