// The health model's memory (issue 14): what happened to a device, hour by hour. Counts of events in hourly
// buckets for the last HOURLY_KEEP_DAYS days, merged into daily buckets after that and dropped after
// DAILY_KEEP_DAYS; the last spare usage seen; whether main is in an outage now; and the positions of the
// latest bad blocks (at most MAX_BAD_BLOCK_POSITIONS) for clustering. Only hours with events have a bucket,
// so a quiet disk's series is small, and a busy one is bounded: MAX_HOURLY_BUCKETS + MAX_DAILY_BUCKETS
// buckets whatever the events. Plain data in, plain data out (toData/fromData): persistence is
// series-file.ts, the judgement assess.ts.
import * as z from 'zod';
import { DmrError } from '../errors.js';

export const HOUR_MS = 3_600_000;
export const DAY_MS = 24 * HOUR_MS;
/** Days kept hour by hour (the forecast, recent and cluster windows live here). */
export const HOURLY_KEEP_DAYS = 14;
/** Days kept day by day, counted back from the latest event's day (longer than the longest window a setting allows: a year). */
export const DAILY_KEEP_DAYS = 400;
/** Bad-block positions kept for clustering: the latest ones. */
export const MAX_BAD_BLOCK_POSITIONS = 4096;
/** At most this many buckets of each kind (the current partial day is hourly, hence the + 1 day). */
export const MAX_HOURLY_BUCKETS = (HOURLY_KEEP_DAYS + 1) * 24;
export const MAX_DAILY_BUCKETS = DAILY_KEEP_DAYS;
/**
 * An event this much before the latest time recorded means the clock was ahead and has been set back (a bad
 * RTC, a `date -s` typo, then NTP): the series rewinds to it (HealthSeries.record): what was stamped after it
 * moves back by the step. Smaller steps back (NTP slewing, events of one hour recorded out of order) are kept
 * as they are.
 */
export const CLOCK_BACK_MS = HOUR_MS;
/** Blocks of the table mark's time kept (HealthSeries.markTable); beyond it every entry of that time counts as seen. */
export const MAX_TABLE_MARK_BLOCKS = MAX_BAD_BLOCK_POSITIONS;
/** Positions beyond the cap are trimmed in batches of this many (not one by one). */
const POSITION_SLACK = 1024;

/** What a bucket counts. */
export const COUNT_FIELDS = [
  /** New bad blocks by the origin of their remap (src/remap/table.ts EntryOrigin). */
  'badAuto',
  'badScan',
  'badManual',
  /** Blocks marked pending (unreadable on every try: lost until written). */
  'pending',
  /** Failed reads and writes on main. */
  'readErrors',
  'writeErrors',
  /** Reads that failed and then succeeded on a retry (marginal sectors). */
  'recoveredReads',
  /** Reads slower than slow_io_ms. */
  'slowIos',
  /** The spare's own failed reads and writes. */
  'spareReadErrors',
  'spareWriteErrors',
  /** Outages of main that began, and the seconds of outage (split over the hours they covered). */
  'outages',
  'outageSeconds',
] as const;
export type CountField = (typeof COUNT_FIELDS)[number];
export type Counts = Record<CountField, number>;

/** The spare's usage as last sampled. */
export interface SpareGauge {
  /** Slots in use (mapped or lost). */
  used: number;
  /** Slots in all. */
  slots: number;
  /** Blocks lost now (unreadable on main, not written since). */
  lost: number;
}

export interface Bucket {
  /** Start of the hour (or the UTC day), Unix ms. */
  start: number;
  counts: Counts;
  /** The last spare sample within the bucket, if any. */
  spare: SpareGauge | null;
}

export type BadBlockOrigin = 'auto' | 'scan' | 'manual';

export interface BadBlockPosition {
  block: number;
  /** When it was recorded, Unix ms. */
  at: number;
  origin: BadBlockOrigin;
}

const count = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional();
const block = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const slotCount = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/**
 * What the daemon tells the series (HealthSeries.record). A new remap-table entry is one `bad_blocks` (auto,
 * scan or manual); an entry made lost by a read that failed every try is also a `pending`. `spare` samples the
 * table's counts (after each change, or at every status: only the last one per hour is kept).
 */
export const healthEventSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('bad_blocks'), origin: z.enum(['auto', 'scan', 'manual']), blocks: z.array(block).min(1) }),
  z.strictObject({ type: z.literal('pending'), blocks: z.array(block).min(1) }),
  z.strictObject({ type: z.literal('read_error'), count }),
  z.strictObject({ type: z.literal('write_error'), count }),
  z.strictObject({ type: z.literal('recovered_read'), count }),
  z.strictObject({ type: z.literal('slow_io'), count }),
  z.strictObject({ type: z.literal('spare_error'), op: z.enum(['read', 'write']), count }),
  z.strictObject({ type: z.literal('outage_began') }),
  z.strictObject({ type: z.literal('outage_ended') }),
  z.strictObject({ type: z.literal('spare'), used: slotCount, slots: slotCount, lost: slotCount }),
]);
export type HealthEvent = z.input<typeof healthEventSchema>;

// The series as plain data (what series-file.ts stores). Buckets hold only their non-zero counts.
const time = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const countsSchema = z.strictObject(
  Object.fromEntries(COUNT_FIELDS.map((f) => [f, z.number().min(0).max(Number.MAX_SAFE_INTEGER).optional()])) as Record<
    CountField,
    z.ZodOptional<z.ZodNumber>
  >,
);
const spareSchema = z.strictObject({ used: slotCount, slots: slotCount, lost: slotCount });
const bucketSchema = z.strictObject({ t: time, c: countsSchema, s: spareSchema.optional() });
export const seriesDataSchema = z.strictObject({
  /** When the series began (the device was added, or its health reset), Unix ms. */
  since: time,
  /** The latest time recorded, Unix ms (retention counts back from it). */
  latest: time,
  outageSince: time.nullable(),
  spare: spareSchema.nullable(),
  hourly: z.array(bucketSchema).max(MAX_HOURLY_BUCKETS),
  daily: z.array(bucketSchema).max(MAX_DAILY_BUCKETS),
  positions: z.array(z.tuple([block, time, z.enum(['auto', 'scan', 'manual'])])).max(MAX_BAD_BLOCK_POSITIONS),
  /** The table mark (markTable): the latest remap-table entry time the series recorded, and its blocks. Absent in older files. */
  table: z.strictObject({ t: time, b: z.array(block).max(MAX_TABLE_MARK_BLOCKS) }).optional(),
});
export type SeriesData = z.output<typeof seriesDataSchema>;

export function zeroCounts(): Counts {
  return Object.fromEntries(COUNT_FIELDS.map((f) => [f, 0])) as Counts;
}

const floorTo = (t: number, unit: number): number => Math.floor(t / unit) * unit;

function checkTime(now: number): void {
  if (!Number.isSafeInteger(now) || now < 0) throw new DmrError('E_INTERNAL', `health series: time ${now} is not a Unix time in ms`);
}

export class HealthSeries {
  private readonly hourly = new Map<number, Bucket>();
  private readonly daily = new Map<number, Bucket>();
  private positionList: BadBlockPosition[] = [];
  private spareNow: SpareGauge | null = null;
  private outageStart: number | null = null;
  private mark: { at: number; blocks: number[] } | null = null;
  private latestAt: number;
  /** The hourly cutoff of the last compaction (NaN: none yet). */
  private compactedAt = Number.NaN;

  private sinceAt: number;

  private constructor(since: number) {
    this.sinceAt = since;
    this.latestAt = since;
  }

  /** When the series began (the device was added, or its health reset), Unix ms. */
  get since(): number {
    return this.sinceAt;
  }

  /** An empty series beginning at `now` (a new device, or `health reset`). */
  static create(now: number): HealthSeries {
    checkTime(now);
    return new HealthSeries(now);
  }

  /**
   * Records `event` at `now` (Unix ms), the clock's time now. E_INTERNAL when the event does not fit its
   * schema. A `now` more than CLOCK_BACK_MS before the latest time recorded means the clock was ahead: the
   * series rewinds to `now` first (rewind), so that what was stamped ahead counts in the windows that end
   * now, and the retention, which counts back from the latest time, does not drop events until the clock
   * catches up.
   */
  record(event: HealthEvent, now: number): void {
    checkTime(now);
    const ev = this.parse(event);
    if (now < this.latestAt - CLOCK_BACK_MS) this.rewind(now);
    this.apply(ev, now);
  }

  /**
   * Records `event` at `at`, a time in the past it is known to have happened (a remap-table entry's time),
   * without taking it for the clock: no rewind. Dropped, like any event, when older than the series keeps.
   */
  backfill(event: HealthEvent, at: number): void {
    checkTime(at);
    this.apply(this.parse(event), at);
  }

  /**
   * The remap-table entries of time `at` (their remap's time, RemapEntry.time) are in the series: the mark
   * moves to the latest such time (an older one leaves it), with the blocks of that time. At the next start,
   * the entries after the mark (DeviceHealth's reconcile) are the ones committed after the last save. A
   * rewind leaves the mark (the table's entries keep the stamps of the clock that was ahead), so it can be
   * later than the latest time: entries stamped up to it are known until the clock passes it.
   */
  markTable(at: number, blocks: readonly number[]): void {
    checkTime(at);
    if (this.mark === null || at > this.mark.at) this.mark = { at, blocks: blocks.slice(0, MAX_TABLE_MARK_BLOCKS) };
    else if (at === this.mark.at) {
      const room = MAX_TABLE_MARK_BLOCKS - this.mark.blocks.length;
      if (room > 0) this.mark.blocks.push(...blocks.slice(0, room));
    }
  }

  /** The table mark (markTable), or null when the series has none (new, or from an older file). */
  get tableMark(): { at: number; blocks: readonly number[]; full: boolean } | null {
    return this.mark === null ? null : { at: this.mark.at, blocks: [...this.mark.blocks], full: this.mark.blocks.length >= MAX_TABLE_MARK_BLOCKS };
  }

  /**
   * The clock was ahead and is back at `now`: what was stamped after `now` is moved back by the step
   * (latest - now), so that the latest time recorded is `now` and the events keep their spacing (a block a
   * day stays a block a day, now ending at `now`): its buckets (each to the hour of its start minus the step),
   * its positions, a later outage start, a later beginning of the series. Days kept as days that are now
   * within the hourly range become the first hour of their day. Nothing the series still keeps is dropped
   * (only a part ahead longer than DAILY_KEEP_DAYS loses what would now be older than that). The table mark
   * keeps the remap-table time it recorded (the table's entries keep their stamps: see markTable).
   */
  rewind(now: number): void {
    checkTime(now);
    if (now >= this.latestAt) return;
    const step = this.latestAt - now;
    const back = (t: number): number => (t > now ? Math.max(0, t - step) : t);
    this.latestAt = now;
    this.sinceAt = back(this.sinceAt);
    if (this.outageStart !== null) this.outageStart = back(this.outageStart);
    let shifted = false;
    for (const p of this.positionList) {
      if (p.at > now) {
        p.at = back(p.at);
        shifted = true;
      }
    }
    if (shifted) this.positionList.sort((a, b) => a.at - b.at);
    this.compactedAt = Number.NaN;
    const moved: Bucket[] = [];
    for (const map of [this.hourly, this.daily]) {
      for (const [start, b] of [...map]) {
        if (start > now) {
          map.delete(start);
          moved.push(b);
        }
      }
    }
    const hourCut = this.hourlyCutoff();
    for (const [start, b] of [...this.daily]) {
      if (start >= hourCut) {
        this.daily.delete(start);
        this.merge(this.bucketAt(start), b);
      }
    }
    moved.sort((a, b) => a.start - b.start);
    for (const b of moved) {
      const at = back(b.start);
      if (at >= this.dailyCutoff()) this.merge(this.bucketAt(at), b);
    }
    this.compact();
  }

  private merge(into: Bucket, from: Bucket): void {
    for (const f of COUNT_FIELDS) into.counts[f] += from.counts[f];
    if (from.spare !== null) into.spare = { ...from.spare };
  }

  private parse(event: HealthEvent): z.output<typeof healthEventSchema> {
    const parsed = healthEventSchema.safeParse(event);
    if (!parsed.success) {
      throw new DmrError('E_INTERNAL', `health series: invalid event ${JSON.stringify(event)}: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
    }
    return parsed.data;
  }

  private apply(ev: z.output<typeof healthEventSchema>, now: number): void {
    if (now > this.latestAt) this.latestAt = now;
    switch (ev.type) {
      case 'bad_blocks': {
        const field: CountField = ev.origin === 'auto' ? 'badAuto' : ev.origin === 'scan' ? 'badScan' : 'badManual';
        this.add(field, now, ev.blocks.length);
        for (const b of ev.blocks.slice(-MAX_BAD_BLOCK_POSITIONS)) this.positionList.push({ block: b, at: now, origin: ev.origin });
        break;
      }
      case 'pending':
        this.add('pending', now, ev.blocks.length);
        break;
      case 'read_error':
        this.add('readErrors', now, ev.count ?? 1);
        break;
      case 'write_error':
        this.add('writeErrors', now, ev.count ?? 1);
        break;
      case 'recovered_read':
        this.add('recoveredReads', now, ev.count ?? 1);
        break;
      case 'slow_io':
        this.add('slowIos', now, ev.count ?? 1);
        break;
      case 'spare_error':
        this.add(ev.op === 'read' ? 'spareReadErrors' : 'spareWriteErrors', now, ev.count ?? 1);
        break;
      case 'outage_began':
        if (this.outageStart === null) {
          this.outageStart = now;
          this.add('outages', now, 1);
        }
        break;
      case 'outage_ended':
        if (this.outageStart !== null) {
          this.addOutageSeconds(this.outageStart, now);
          this.outageStart = null;
        }
        break;
      case 'spare': {
        const g = { used: ev.used, slots: ev.slots, lost: ev.lost };
        this.spareNow = g;
        if (now >= this.dailyCutoff()) this.bucketAt(now).spare = { ...g };
        break;
      }
    }
    this.compact();
  }

  /** The outage's seconds, hour by hour from `from` to `to`. */
  private addOutageSeconds(from: number, to: number): void {
    let t = Math.max(from, this.dailyCutoff());
    while (t < to) {
      const end = Math.min(to, floorTo(t, HOUR_MS) + HOUR_MS);
      this.add('outageSeconds', t, (end - t) / 1000);
      t = end;
    }
  }

  /** Adds `n` to `field` in the bucket of `at`; nothing when `at` is older than the series keeps. */
  private add(field: CountField, at: number, n: number): void {
    if (at < this.dailyCutoff()) return;
    this.bucketAt(at).counts[field] += n;
  }

  /** The day before which buckets are daily. */
  private hourlyCutoff(): number {
    return floorTo(this.latestAt, DAY_MS) - HOURLY_KEEP_DAYS * DAY_MS;
  }

  private dailyCutoff(): number {
    return floorTo(this.latestAt, DAY_MS) - DAILY_KEEP_DAYS * DAY_MS + DAY_MS;
  }

  private bucketAt(at: number): Bucket {
    const hourly = at >= this.hourlyCutoff();
    const start = hourly ? floorTo(at, HOUR_MS) : floorTo(at, DAY_MS);
    const map = hourly ? this.hourly : this.daily;
    let b = map.get(start);
    if (b === undefined) {
      b = { start, counts: zeroCounts(), spare: null };
      map.set(start, b);
    }
    return b;
  }

  /**
   * Merges hours older than HOURLY_KEEP_DAYS into their day and drops days older than DAILY_KEEP_DAYS (once
   * a day: the cutoffs move by days), and trims the positions (in batches: `positions` shows the cap).
   */
  private compact(): void {
    if (this.positionList.length > MAX_BAD_BLOCK_POSITIONS + POSITION_SLACK) this.positionList = this.positionList.slice(-MAX_BAD_BLOCK_POSITIONS);
    const hourCut = this.hourlyCutoff();
    if (hourCut === this.compactedAt) return;
    this.compactedAt = hourCut;
    const old = [...this.hourly.values()].filter((b) => b.start < hourCut).sort((a, b) => a.start - b.start);
    for (const h of old) {
      this.hourly.delete(h.start);
      const day = floorTo(h.start, DAY_MS);
      let d = this.daily.get(day);
      if (d === undefined) {
        d = { start: day, counts: zeroCounts(), spare: null };
        this.daily.set(day, d);
      }
      for (const f of COUNT_FIELDS) d.counts[f] += h.counts[f];
      if (h.spare !== null) d.spare = h.spare;
    }
    const dayCut = this.dailyCutoff();
    for (const start of [...this.daily.keys()]) if (start < dayCut) this.daily.delete(start);
    if (this.positionList.length > 0 && this.positionList[0]!.at < dayCut) this.positionList = this.positionList.filter((p) => p.at >= dayCut);
  }

  /** The latest time recorded. */
  get latest(): number {
    return this.latestAt;
  }

  /** When the current outage began, or null when main is not in one. */
  get outageSince(): number | null {
    return this.outageStart;
  }

  /** The last spare sample, or null before the first. */
  get spare(): SpareGauge | null {
    return this.spareNow === null ? null : { ...this.spareNow };
  }

  /** The latest bad-block positions (at most MAX_BAD_BLOCK_POSITIONS), oldest first. */
  get positions(): readonly BadBlockPosition[] {
    return this.positionList.length > MAX_BAD_BLOCK_POSITIONS ? this.positionList.slice(-MAX_BAD_BLOCK_POSITIONS) : this.positionList;
  }

  /** Every bucket, daily ones then hourly ones, oldest first, with its length in ms. */
  buckets(): { start: number; ms: number; counts: Readonly<Counts>; spare: SpareGauge | null }[] {
    const byStart = (a: Bucket, b: Bucket): number => a.start - b.start;
    return [
      ...[...this.daily.values()].sort(byStart).map((b) => ({ start: b.start, ms: DAY_MS, counts: b.counts, spare: b.spare })),
      ...[...this.hourly.values()].sort(byStart).map((b) => ({ start: b.start, ms: HOUR_MS, counts: b.counts, spare: b.spare })),
    ];
  }

  /** Day by day (UTC), oldest first, the hours folded into their day: what `health --history` shows. */
  history(): { day: number; counts: Counts; spare: SpareGauge | null }[] {
    const days = new Map<number, { day: number; counts: Counts; spare: SpareGauge | null }>();
    for (const b of this.buckets()) {
      const day = floorTo(b.start, DAY_MS);
      let d = days.get(day);
      if (d === undefined) {
        d = { day, counts: zeroCounts(), spare: null };
        days.set(day, d);
      }
      for (const f of COUNT_FIELDS) d.counts[f] += b.counts[f];
      if (b.spare !== null) d.spare = { ...b.spare };
    }
    return [...days.values()];
  }

  /** The sum of `fields` over the buckets overlapping [from, to) (a daily bucket counts whole). */
  sum(fields: readonly CountField[], from: number, to: number): number {
    let n = 0;
    for (const b of this.buckets()) {
      if (b.start < to && b.start + b.ms > from) for (const f of fields) n += b.counts[f];
    }
    return n;
  }

  /** The start of the latest bucket before `to` with any of `fields`, or null. */
  lastSeen(fields: readonly CountField[], to: number): number | null {
    let last: number | null = null;
    for (const b of this.buckets()) {
      if (b.start < to && fields.some((f) => b.counts[f] > 0)) last = b.start;
    }
    return last;
  }

  /**
   * The sum of `fields`, each bucket's count weighted by 2^(-age / halfLifeMs), its age measured from its
   * middle to `now` (errors decay).
   */
  decayed(fields: readonly CountField[], now: number, halfLifeMs: number): number {
    let n = 0;
    for (const b of this.buckets()) {
      if (b.start >= now) continue;
      const age = Math.max(0, now - (b.start + b.ms / 2));
      let c = 0;
      for (const f of fields) c += b.counts[f];
      if (c > 0) n += c * 2 ** (-age / halfLifeMs);
    }
    return n;
  }

  /** The series as plain data (series-file.ts stores it); fromData(toData()) is an equal series. */
  toData(): SeriesData {
    const out = (b: { start: number; counts: Readonly<Counts>; spare: SpareGauge | null }): SeriesData['hourly'][number] => {
      const c: Partial<Counts> = {};
      for (const f of COUNT_FIELDS) if (b.counts[f] !== 0) c[f] = b.counts[f];
      return b.spare === null ? { t: b.start, c } : { t: b.start, c, s: { ...b.spare } };
    };
    const all = this.buckets();
    return {
      since: this.sinceAt,
      latest: this.latestAt,
      outageSince: this.outageStart,
      spare: this.spare,
      hourly: all.filter((b) => b.ms === HOUR_MS).map(out),
      daily: all.filter((b) => b.ms === DAY_MS).map(out),
      positions: this.positions.map((p) => [p.block, p.at, p.origin]),
      ...(this.mark === null ? {} : { table: { t: this.mark.at, b: [...this.mark.blocks] } }),
    };
  }

  /**
   * The series `data` describes. Throws a plain Error naming the first problem when it is not one this
   * class could have written (series-file.ts turns it into a DmrError naming the file).
   */
  static fromData(data: unknown): HealthSeries {
    const r = seriesDataSchema.safeParse(data);
    if (!r.success) {
      const i = r.error.issues[0];
      throw new Error(i === undefined ? 'invalid series' : `${i.path.join('.') || 'series'}: ${i.message}`);
    }
    const d = r.data;
    if (d.latest < d.since) throw new Error(`latest (${d.latest}) is before since (${d.since})`);
    if (d.outageSince !== null && d.outageSince > d.latest) throw new Error(`outageSince (${d.outageSince}) is after latest (${d.latest})`);
    const s = new HealthSeries(d.since);
    s.latestAt = d.latest;
    s.outageStart = d.outageSince;
    s.spareNow = d.spare === null ? null : { ...d.spare };
    const load = (list: SeriesData['hourly'], unit: number, map: Map<number, Bucket>, what: string, ok: (t: number) => boolean): void => {
      let prev = -1;
      for (const b of list) {
        if (b.t % unit !== 0) throw new Error(`${what} bucket ${b.t} does not start on its ${what === 'hourly' ? 'hour' : 'day'}`);
        if (b.t <= prev) throw new Error(`${what} buckets are not in order at ${b.t}`);
        if (!ok(b.t)) throw new Error(`${what} bucket ${b.t} is outside the ${what} range`);
        prev = b.t;
        const counts = zeroCounts();
        for (const f of COUNT_FIELDS) counts[f] = b.c[f] ?? 0;
        map.set(b.t, { start: b.t, counts, spare: b.s === undefined ? null : { ...b.s } });
      }
    };
    const hourCut = s.hourlyCutoff();
    load(d.hourly, HOUR_MS, s.hourly, 'hourly', (t) => t >= hourCut);
    load(d.daily, DAY_MS, s.daily, 'daily', (t) => t < hourCut && t >= s.dailyCutoff());
    s.positionList = d.positions.map(([block, at, origin]) => ({ block, at, origin }));
    s.mark = d.table === undefined ? null : { at: d.table.t, blocks: [...d.table.b] };
    return s;
  }
}
