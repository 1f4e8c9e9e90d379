// The auto-remap work queue: one job per (kind, block), foreground jobs (a user's request waits on them)
// before background ones (relocations), run in batches by a single worker, so at most one batch touches
// the remap table at a time and a burst of thousands of bad blocks costs a few journal commits, not
// thousands. Every job added is run exactly once and its waiters are told the outcome.

export type JobLane = 'foreground' | 'background';

/**
 * Runs a batch of jobs of one group (kinds that can share a batch, see groupOf); returns each block's
 * outcome per kind (null or missing: done).
 */
export type BatchRunner<I> = (group: string, jobs: Array<{ kind: string; item: I }>) => Promise<Map<string, Error | null>>;

/**
 * The key of a job (and of its outcome in a BatchRunner's answer): one job per kind and block, or per kind,
 * block and slot for items that name a slot (a write whose data went to that slot).
 */
export const jobKey = (kind: string, block: number, slot?: number): string => (slot === undefined ? `${kind}:${block}` : `${kind}:${block}@${slot}`);

interface Job<I> {
  kind: string;
  lane: JobLane;
  block: number;
  slot: number | undefined;
  item: I;
  waiters: Array<(err: Error | null) => void>;
}

export interface WorkQueueStats {
  /** Jobs waiting to run, foreground + background. */
  queued: number;
  foreground: number;
  background: number;
  /** Jobs in the batch running now. */
  running: number;
  /** Jobs finished since start. */
  handled: number;
  batches: number;
  /** Background jobs refused because `backgroundMax` were queued already (relocations that will wait for the block's next error). */
  droppedBackground: number;
}

export class WorkQueue<I extends { block: number; slot?: number }> {
  private readonly jobs = new Map<string, Job<I>>();
  private readonly fg: string[] = [];
  private readonly bg: string[] = [];
  private runningCount = 0;
  private running: Job<I>[] = [];
  private handled = 0;
  private batches = 0;
  private working = false;
  private closed = false;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly run: BatchRunner<I>,
    /** Kinds with the same group run in one batch (default: each kind alone). */
    private readonly groupOf: (kind: string) => string = (k) => k,
    /** Most jobs in one batch (each batch is one drain and one journal commit). */
    private readonly batchMax = 512,
    /** Most background jobs waiting; further ones are dropped (counted) until the queue shrinks. */
    private readonly backgroundMax = 100_000,
  ) {}

  droppedBackground = 0;

  /**
   * Queues a job, or joins the one queued (not yet running) for the same key (kind, block, slot) (a background job
   * asked for in the foreground moves to the foreground). Resolves with null when it ran, or its error.
   */
  add(lane: JobLane, kind: string, item: I): Promise<Error | null> {
    if (this.closed) return Promise.resolve(new Error('the device is stopping'));
    const key = jobKey(kind, item.block, item.slot);
    return new Promise((resolve) => {
      const have = this.jobs.get(key);
      if (have !== undefined) {
        have.waiters.push(resolve);
        if (lane === 'foreground' && have.lane === 'background') {
          have.lane = 'foreground';
          const i = this.bg.indexOf(key);
          if (i >= 0) {
            this.bg.splice(i, 1);
            this.fg.push(key);
          }
        }
        return;
      }
      if (lane === 'background' && this.bg.length >= this.backgroundMax) {
        this.droppedBackground++;
        resolve(new Error('background queue full'));
        return;
      }
      this.jobs.set(key, { kind, lane, block: item.block, slot: item.slot, item, waiters: [resolve] });
      (lane === 'foreground' ? this.fg : this.bg).push(key);
      this.kick();
    });
  }

  /** Called after each batch with its kind. */
  onSettled: ((kind: string) => void) | null = null;

  /** Items of `kind` queued or running. */
  items(kind: string): I[] {
    const out = this.running.filter((j) => j.kind === kind).map((j) => j.item);
    for (const j of this.jobs.values()) if (j.kind === kind) out.push(j.item);
    return out;
  }

  stats(): WorkQueueStats {
    return {
      queued: this.fg.length + this.bg.length,
      foreground: this.fg.length,
      background: this.bg.length,
      running: this.runningCount,
      handled: this.handled,
      batches: this.batches,
      droppedBackground: this.droppedBackground,
    };
  }

  /** Resolves when nothing is queued or running. */
  idle(): Promise<void> {
    if (!this.working && this.fg.length + this.bg.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Drops every queued job (their waiters get an error) and waits for the running batch. */
  async close(): Promise<void> {
    this.closed = true;
    for (const key of [...this.fg.splice(0), ...this.bg.splice(0)]) {
      const job = this.jobs.get(key);
      this.jobs.delete(key);
      for (const w of job?.waiters ?? []) w(new Error('the device is stopping'));
    }
    await this.idle();
  }

  private kick(): void {
    if (this.working) return;
    this.working = true;
    setImmediate(() => void this.loop());
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        const lane = this.fg.length > 0 ? this.fg : this.bg;
        if (lane.length === 0) break;
        // The oldest job's group, and every queued job of that group in this lane, up to batchMax.
        const group = this.groupOf((this.jobs.get(lane[0] as string) as Job<I>).kind);
        const max = lane === this.fg ? this.batchMax : 1;
        const batch: Job<I>[] = [];
        for (let i = 0; i < lane.length && batch.length < max; ) {
          const job = this.jobs.get(lane[i] as string) as Job<I>;
          if (this.groupOf(job.kind) === group) {
            batch.push(job);
            lane.splice(i, 1);
            // A job added from now on is a new one: work that happens after this batch started (a write
            // landing in a slot after the batch's flush) is never covered by it.
            this.jobs.delete(jobKey(job.kind, job.block, job.slot));
          } else i++;
        }
        this.runningCount = batch.length;
        this.running = batch;
        let outcome: Map<string, Error | null>;
        try {
          outcome = await this.run(group, batch.map((j) => ({ kind: j.kind, item: j.item })));
        } catch (e) {
          const err = e instanceof Error ? e : new Error(String(e));
          outcome = new Map(batch.map((j) => [jobKey(j.kind, j.block, j.slot), err]));
        }
        this.batches++;
        for (const job of batch) {
          const err = outcome.get(jobKey(job.kind, job.block, job.slot)) ?? null;
          for (const w of job.waiters) w(err);
        }
        this.handled += batch.length;
        this.runningCount = 0;
        this.running = [];
        for (const k of new Set(batch.map((j) => j.kind))) this.onSettled?.(k);
      }
    } finally {
      this.working = false;
      const ws = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of ws) w();
    }
  }
}
