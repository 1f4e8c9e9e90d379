// Log lines for events that come in bursts (I/O errors, auto-remaps): a disk that fails 2,000 blocks at
// once should leave a readable log, not 4,000 lines. The first event of a kind is logged at once; the ones
// that follow within the window are counted and logged as one summary line when the window ends, with the
// first blocks they touched. A sustained burst thus logs one line per kind per window.
import type { Logger } from '../log.js';

export type BurstLevel = 'info' | 'warn' | 'error';
/** What the numbers a note carries are: device blocks, or 512-byte sectors. */
export type Unit = 'blocks' | 'sectors';

/** Blocks named in one line at most (the count says how many there were). */
const SAMPLE = 16;

/** One line the burst log wrote, as data (DeviceEvents turns the warnings and errors into `burst` events). */
export interface BurstNote {
  kind: string;
  level: BurstLevel;
  message: string;
  /** Notes the line stands for: 1 for the first of a burst, else those counted in the window. */
  events: number;
  count: number;
  unit: Unit;
  blocks: readonly number[];
}

interface Window {
  kind: string;
  level: BurstLevel;
  unit: Unit;
  msg: string;
  fields: Record<string, unknown>;
  events: number;
  blocks: number;
  sample: number[];
  timer: NodeJS.Timeout | null;
}

export class BurstLog {
  private readonly kinds = new Map<string, Window>();
  /** Told of every line logged (must not throw: a throw is caught and ignored). */
  onNote: ((n: BurstNote) => void) | null = null;

  constructor(
    private readonly log: Logger,
    private readonly windowMs = 1000,
  ) {}

  /**
   * One event of `kind`: logged now when the kind is quiet, else counted for the summary. `blocks` are the
   * first blocks (or sectors) it touched, `count` how many it touched in all (default: blocks.length).
   */
  note(kind: string, level: BurstLevel, msg: string, what: { blocks: readonly number[]; count?: number; fields?: Record<string, unknown>; unit?: Unit }): void {
    const fields = what.fields ?? {};
    const unit = what.unit ?? 'blocks';
    const count = what.count ?? what.blocks.length;
    let w = this.kinds.get(kind);
    if (w === undefined || w.timer === null) {
      const sample = what.blocks.slice(0, SAMPLE);
      this.log[level]({ ...fields, count, [unit]: sample }, msg);
      this.tell({ kind, level, message: msg, events: 1, count, unit, blocks: sample });
      w = { kind, level, unit, msg, fields, events: 0, blocks: 0, sample: [], timer: null };
      this.kinds.set(kind, w);
      this.arm(kind, w);
      return;
    }
    w.events++;
    w.blocks += count;
    w.fields = fields;
    for (const b of what.blocks) {
      if (w.sample.length >= SAMPLE) break;
      w.sample.push(b);
    }
  }

  /** Logs what is still counted and stops the timers (on close). */
  flush(): void {
    for (const w of this.kinds.values()) {
      if (w.timer !== null) clearTimeout(w.timer);
      w.timer = null;
      this.summary(w);
    }
    this.kinds.clear();
  }

  private arm(kind: string, w: Window): void {
    w.timer = setTimeout(() => {
      w.timer = null;
      if (w.events === 0) {
        this.kinds.delete(kind); // quiet again: the next event is logged at once
        return;
      }
      this.summary(w);
      this.arm(kind, w); // still busy: keep counting
    }, this.windowMs);
    w.timer.unref();
  }

  private tell(n: BurstNote): void {
    if (this.onNote === null) return;
    try {
      this.onNote(n);
    } catch {
      // An observer's failure is not the log's.
    }
  }

  private summary(w: Window): void {
    if (w.events === 0) return;
    this.log[w.level](
      { ...w.fields, events: w.events, count: w.blocks, [w.unit]: w.sample, windowMs: this.windowMs },
      `${w.msg} (${w.events} more in ${this.windowMs / 1000} s)`,
    );
    this.tell({ kind: w.kind, level: w.level, message: w.msg, events: w.events, count: w.blocks, unit: w.unit, blocks: w.sample });
    w.events = 0;
    w.blocks = 0;
    w.sample = [];
  }
}
