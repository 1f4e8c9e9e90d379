// Tells a main that refuses writes while it still reads (a drive gone read-only, a write-protected device,
// dm-flakey's error_writes) from bad sectors, from write failures and the data path's count of writes main
// took. Pure: no I/O, the clock and the count are passed in. The rule (README, "Outages of main"):
//  - write failures on main in `regions` or more distinct regions (the device cut in REGION_COUNT equal
//    parts) within the last `windowMs`,
//  - and no write to main done whole since the oldest of them (native's mainWritesOk has not moved).
// Bad sectors fail the writes that touch them while writes elsewhere go through; a main that refuses writes
// fails them all. Any write main takes clears the evidence, so a burst of real bad sectors amid a working
// workload never makes one. The caller records per-block failures only (a multi-block write that failed
// whole is narrowed first: its good blocks' writes are the evidence either way).
import { REGION_COUNT } from './outage-detector.js';

export interface WriteOutageRule {
  /** Distinct regions with a write failure, with no write to main done since, that make a write outage (1..REGION_COUNT). */
  regions: number;
  windowMs: number;
}

export class WriteOutageDetector {
  /** Region → time of its latest write failure, oldest first. */
  private readonly seen = new Map<number, number>();
  /** mainWritesOk as of the latest failure recorded (null: none yet). */
  private lastOk: number | null = null;

  constructor(
    private readonly rule: () => WriteOutageRule,
    /** Blocks of the device (the regions cut it in equal parts). */
    private readonly deviceBlocks: number,
    private readonly now: () => number,
  ) {}

  regionOf(block: number): number {
    if (this.deviceBlocks <= 0) return 0;
    return Math.min(REGION_COUNT - 1, Math.floor((block * REGION_COUNT) / this.deviceBlocks));
  }

  /**
   * Records a write to main that failed at `block`; `mainWritesOk` is the count of writes main has done
   * whole so far (read when the failure is handled: a write counted that ended after the failure only
   * delays the verdict). True when main refuses writes.
   */
  failure(block: number, mainWritesOk: number): boolean {
    if (this.lastOk !== mainWritesOk) {
      // Main took a write since the failures seen so far (or this is the first): they are no evidence.
      this.seen.clear();
      this.lastOk = mainWritesOk;
    }
    const t = this.now();
    const region = this.regionOf(block);
    this.seen.delete(region);
    this.seen.set(region, t);
    const oldest = t - this.rule().windowMs;
    for (const [r, at] of this.seen) {
      if (at > oldest) break;
      this.seen.delete(r);
    }
    return this.seen.size >= this.rule().regions;
  }

  /** Regions counted now (failures within the window, with no write done since). */
  regionsFailing(): number {
    return this.seen.size;
  }

  /** Forgets the evidence (main took a write again, or the outage it made ended). */
  reset(): void {
    this.seen.clear();
    this.lastOk = null;
  }
}
