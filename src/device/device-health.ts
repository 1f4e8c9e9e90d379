// A device's health inside the daemon (issue 14): the one HealthSeries of its main/spare pair, loaded from
// <state dir>/<pairId>.health at start (a new one when there is none), the events recorded where the daemon
// decides them (device-health's callers: the store's commits, auto-remap, the outage monitors, the scanner),
// saved every SAVE_INTERVAL_MS when changed and at close, and judged by one function (assessHealth) for the
// status line, `status --json`, `stats` and `health`.
//
// A file that cannot be used is never replaced behind the user's back: the error is logged and reported
// (`recordError`), the device runs with a series of this run only that is never saved, and the file stays
// as it was until `health <dev> reset` replaces it.
//
// Every change of state and every forecast alarm that begins is one log line and one HealthNotice (events),
// and runs the alert command (health-alert.ts) at most once per change, and not twice within
// ALERT_INTERVAL_MS for the same state or alarm; the commands run one at a time, in order.
import { DmrError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  assessHealth,
  CLOCK_BACK_MS,
  HEALTH_STATES,
  HealthSeries,
  loadHealth,
  saveHealth,
  type HealthAssessment,
  type HealthEvent,
  type HealthSettings,
  type HealthState,
  type SpareGauge,
} from '../health/index.js';
import type { CommittedOp } from '../remap/index.js';
import { entryOrigin, type RemapEntry } from '../remap/table.js';
import { runAlert, type AlertOutcome } from './health-alert.js';
import { HealthEvents, type HealthAlarm } from './health-events.js';

/** A changed series is saved at most this often (and at close). */
export const SAVE_INTERVAL_MS = 5 * 60_000;
/** The state is judged again at least this often without events (errors decay, an outage grows long). */
export const CHECK_INTERVAL_MS = 60_000;
/** After an event, the state is judged at once, then at most once per this (an error storm records thousands). */
export const CHECK_MIN_GAP_MS = 1000;
/** The alert command runs at most once per this for the same state (or the same alarm). */
export const ALERT_INTERVAL_MS = 10 * 60_000;

/** What `health` and `status --json` show: the assessment, and what the series is. */
export interface HealthView extends HealthAssessment {
  /** The health file could not be used (it is left as it was); null when it could, or there was none. */
  recordError: string | null;
  /** When the series began (the device was first added, or its health reset), Unix ms. */
  since: number;
}

export interface DeviceHealthOptions {
  dir: string;
  pairId: string;
  log: Logger;
  /** The device as the alert and the action sentence name it (/dev/ublkbN once it is live), and its name. */
  device: () => string;
  name: string | null;
  settings: HealthSettings;
  /** The spare's usage now (the store's counts). */
  gauge: () => SpareGauge;
  /** The alert command now (the config file is read when an alert is due), null for none. */
  alertCommand: () => string | null;
  /**
   * The durable remap table (block, entry), read once at open: its entries after the series' table mark
   * (committed after the last save: a daemon killed before it saved) are added to the series (reconcile).
   */
  table?: () => Iterable<[number, RemapEntry]>;
  now?: () => number;
  saveIntervalMs?: number;
  checkIntervalMs?: number;
  alertIntervalMs?: number;
  alertTimeoutMs?: number;
}

interface Seen {
  state: HealthState;
  acceleration: boolean;
  forecastCritical: boolean;
}

const rank = (s: HealthState): number => HEALTH_STATES.indexOf(s);
const QUIET = 'no new bad block and no error in the watch window';

export class DeviceHealth {
  readonly events = new HealthEvents();
  private series: HealthSeries;
  private recordError: string | null;
  private dirty = false;
  private seen: Seen | null = null;
  private lastCheckAt = Number.NEGATIVE_INFINITY;
  private checkTimer: NodeJS.Timeout | null = null;
  private saveTimer: NodeJS.Timeout | null = null;
  private tickTimer: NodeJS.Timeout | null = null;
  private readonly lastAlertAt = new Map<string, number>();
  /** Alert commands run one at a time, in the order of their changes (close does not wait: each has its own timeout). */
  private alertChain: Promise<AlertOutcome | null> = Promise.resolve(null);
  private closed = false;
  private readonly now: () => number;

  private constructor(private readonly o: DeviceHealthOptions) {
    this.now = o.now ?? Date.now;
    let series: HealthSeries | null = null;
    let recordError: string | null = null;
    try {
      series = loadHealth(o.dir, o.pairId);
    } catch (e) {
      recordError = e instanceof Error ? e.message : String(e);
      o.log.error({ err: recordError, code: e instanceof DmrError ? e.code : undefined }, 'the health history cannot be used: it is left as it is and not saved; `health <device> reset` starts a new one');
    }
    this.recordError = recordError;
    const fresh = series === null;
    // A series of this run only (the file could not be used) starts empty, as before; otherwise the table's
    // entries the series does not have yet are added (all of them to a new series).
    const missed = recordError === null ? this.missedEntries(series) : [];
    if (series === null) series = HealthSeries.create(Math.min(this.now(), missed[0]?.entry.time ?? Number.POSITIVE_INFINITY));
    if (missed.length > 0) {
      this.reconcile(series, missed);
      this.dirty = true;
      o.log.warn(
        { entries: missed.length, from: new Date(missed[0]!.entry.time).toISOString(), to: new Date(missed.at(-1)!.entry.time).toISOString(), newSeries: fresh },
        fresh
          ? 'health: a new history begins with the remap table\'s entries (their origin and time)'
          : 'health: remap-table entries committed after the last save (the daemon stopped without saving) added to the history',
      );
    }
    if (series.outageSince !== null) {
      // An outage was under way when the last daemon stopped (SIGTERM, del, restart, or a kill after a
      // save). Nothing will ever say it ended: it is closed at the last time the series knew of (what came
      // after is unknown, the daemon's downtime included), and the outage monitors of this run start a new
      // one if main is still out. Left open, a main that answers would read "critical", then "failed".
      const began = series.outageSince;
      series.record({ type: 'outage_ended' }, series.latest);
      this.dirty = true;
      o.log.warn({ outageBegan: new Date(began).toISOString(), closedAt: new Date(series.latest).toISOString() }, 'health: an outage was under way when the last daemon stopped; closed at the last time recorded');
    }
    this.series = series;
    // A new series is saved at the next save, the first spare sample with it.
    if (fresh && recordError === null) this.dirty = true;
    this.sample();
  }

  /**
   * The table's entries the series has not recorded, oldest first: those after its table mark (or, without
   * a mark in an older file, after its latest time; every entry for a new series), none stamped after now
   * (a clock that was ahead: they cannot be placed).
   */
  private missedEntries(series: HealthSeries | null): { block: number; entry: RemapEntry }[] {
    const table = this.o.table?.();
    if (table === undefined) return [];
    const now = this.now();
    const mark = series === null ? null : (series.tableMark ?? { at: series.latest, blocks: [], full: false });
    const seen = new Set(mark?.blocks ?? []);
    const out: { block: number; entry: RemapEntry }[] = [];
    for (const [block, entry] of table) {
      if (entry.time > now) continue;
      if (mark !== null && (entry.time < mark.at || (entry.time === mark.at && (mark.full || seen.has(block))))) continue;
      out.push({ block, entry });
    }
    return out.sort((a, b) => a.entry.time - b.entry.time || a.block - b.block);
  }

  /**
   * Adds `missed` (missedEntries) to `series` at their times, as tableCommitted would have: a new bad block of
   * the entry's origin, and a pending block for a lost entry of origin auto or scan. Approximate where the
   * table keeps less than the commit said: an entry's state is today's (a block lost then and written since
   * is not pending), a version-1/2 spare's scan entries are auto, and entries removed since (unremap,
   * recheck) are not there to add.
   */
  private reconcile(series: HealthSeries, missed: readonly { block: number; entry: RemapEntry }[]): void {
    let i = 0;
    while (i < missed.length) {
      const at = missed[i]!.entry.time;
      const by: Record<'auto' | 'scan' | 'manual', number[]> = { auto: [], scan: [], manual: [] };
      const pending: number[] = [];
      const blocks: number[] = [];
      for (; i < missed.length && missed[i]!.entry.time === at; i++) {
        const { block, entry } = missed[i]!;
        by[entry.origin].push(block);
        if (entry.state === 'lost' && entry.origin !== 'manual') pending.push(block);
        blocks.push(block);
      }
      for (const origin of ['auto', 'scan', 'manual'] as const) if (by[origin].length > 0) series.backfill({ type: 'bad_blocks', origin, blocks: by[origin] }, at);
      if (pending.length > 0) series.backfill({ type: 'pending', blocks: pending }, at);
      series.markTable(at, blocks);
    }
  }

  /** Loads (or creates) the series and starts the save and check timers. */
  static open(o: DeviceHealthOptions): DeviceHealth {
    const h = new DeviceHealth(o);
    const a = h.assess();
    // debug: a foreground daemon whose start fails must leave only its error line (the daemon logs the state once live).
    o.log.debug({ state: a.state, score: a.score, since: new Date(h.series.since).toISOString() }, `health ${a.state} (score ${a.score})`);
    h.tickTimer = setInterval(() => h.assess(), o.checkIntervalMs ?? CHECK_INTERVAL_MS);
    h.tickTimer.unref();
    h.saveTimer = setInterval(() => h.save(), o.saveIntervalMs ?? SAVE_INTERVAL_MS);
    h.saveTimer.unref();
    return h;
  }

  /** Records `event` now; the state is judged at once (at most once per CHECK_MIN_GAP_MS). Never throws. */
  record(event: HealthEvent): void {
    if (this.closed) return;
    const at = this.now();
    try {
      if (at < this.series.latest - CLOCK_BACK_MS) {
        this.o.log.warn(
          { now: new Date(at).toISOString(), latest: new Date(this.series.latest).toISOString() },
          'health: the clock is behind the latest time recorded (it was ahead): what was stamped later is moved back by the step',
        );
      }
      this.series.record(event, at);
    } catch (e) {
      this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'health event not recorded');
      return;
    }
    this.dirty = true;
    this.events.emit({ type: 'recorded', at, event });
    this.checkSoon();
  }

  /**
   * A commit of the remap store (RemapStore.onCommitted): each new entry is a new bad block of its origin
   * (recorded once: the store tells each commit once), a new lost entry of origin auto or scan is also a
   * pending block (a read that failed every try), and the spare is sampled after the change.
   */
  tableCommitted(ops: readonly CommittedOp[]): void {
    const by: Record<'auto' | 'scan' | 'manual', number[]> = { auto: [], scan: [], manual: [] };
    const pending: number[] = [];
    for (const { op, origin } of ops) {
      if (op.op !== 'remap') continue;
      const o = origin ?? entryOrigin(op.auto, op.scan);
      by[o].push(op.block);
      if (op.lost && o !== 'manual') pending.push(op.block);
      if (!this.closed) this.series.markTable(op.time, [op.block]);
    }
    for (const origin of ['auto', 'scan', 'manual'] as const) if (by[origin].length > 0) this.record({ type: 'bad_blocks', origin, blocks: by[origin] });
    if (pending.length > 0) this.record({ type: 'pending', blocks: pending });
    if (ops.length > 0) this.sample();
  }

  /** Main's outage (read or write) began or ended (the daemon combines the two monitors). */
  outage(active: boolean): void {
    this.record({ type: active ? 'outage_began' : 'outage_ended' });
  }

  /** The spare's usage now, into the series. */
  sample(): void {
    const g = this.o.gauge();
    this.record({ type: 'spare', used: g.used, slots: g.slots, lost: g.lost });
  }

  /**
   * The health now (and, as every assessment does, a change of state noticed: logged, announced, alerted).
   * The spare is sampled first when its usage changed without a commit (slots reserved for redirects, or given back).
   */
  assess(): HealthView {
    const g = this.o.gauge();
    const last = this.series.spare;
    if (!this.closed && (last === null || last.used !== g.used || last.slots !== g.slots || last.lost !== g.lost)) {
      this.record({ type: 'spare', used: g.used, slots: g.slots, lost: g.lost });
    }
    const a = assessHealth(this.series, this.o.settings, this.now(), { device: this.o.name ?? this.o.device() });
    this.lastCheckAt = this.now();
    this.observe(a);
    return { ...a, recordError: this.recordError, since: this.series.since };
  }

  /** The series day by day (health --history). */
  history(): ReturnType<HealthSeries['history']> {
    return this.series.history();
  }

  get settings(): HealthSettings {
    return { ...this.o.settings };
  }

  /**
   * `health <dev> reset`: a new series from now (the spare sampled), saved at once over whatever the file
   * held (a file that could not be used included). E_STATE when it cannot be saved (the new series is kept
   * in memory and saved again later).
   */
  reset(): HealthView {
    const at = this.now();
    this.series = HealthSeries.create(at);
    this.recordError = null;
    this.seen = null;
    this.lastAlertAt.clear();
    this.sample();
    this.events.emit({ type: 'reset', at });
    this.o.log.warn({}, 'health history reset: a new series begins');
    this.dirty = true;
    this.saveOrThrow();
    return this.assess();
  }

  /** Saves the series if it changed (never over a file that could not be used). Failures are logged. */
  save(): void {
    try {
      this.saveOrThrow();
    } catch (e) {
      this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'cannot save the health history');
    }
  }

  private saveOrThrow(): void {
    if (!this.dirty || this.recordError !== null) return;
    saveHealth(this.o.dir, this.o.pairId, this.series);
    this.dirty = false;
  }

  /** Stops the timers and saves (shutdown, del, detach). Alert commands still running end on their own timeouts. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of [this.checkTimer, this.saveTimer, this.tickTimer]) if (t !== null) clearTimeout(t);
    this.checkTimer = this.saveTimer = this.tickTimer = null;
    this.save();
  }

  /** Stops the timers without saving (a start that failed: it leaves no file behind). */
  discard(): void {
    this.closed = true;
    for (const t of [this.checkTimer, this.saveTimer, this.tickTimer]) if (t !== null) clearTimeout(t);
    this.checkTimer = this.saveTimer = this.tickTimer = null;
  }

  /** Alert commands running now (tests wait for them). */
  alertsSettled(): Promise<void> {
    return this.alertChain.then(() => undefined);
  }

  /**
   * Judges the state after an event: never inside the caller (a remap commit waits for its onCommitted, and a
   * judgement may read the config file for the alert command), but on a later turn of the event loop, at
   * once or CHECK_MIN_GAP_MS after the last judgement.
   */
  private checkSoon(): void {
    if (this.checkTimer !== null || this.closed) return;
    const wait = Math.max(0, this.lastCheckAt + CHECK_MIN_GAP_MS - this.now());
    this.checkTimer = setTimeout(() => {
      this.checkTimer = null;
      if (!this.closed) this.assess();
    }, wait);
    this.checkTimer.unref();
  }

  /** Compares `a` with the last assessment: a new state or a new alarm is logged, announced and alerted. */
  private observe(a: HealthAssessment): void {
    const now: Seen = {
      state: a.state,
      acceleration: a.forecast.acceleration,
      forecastCritical: a.reasons.some((r) => r.signal === 'spare_forecast' && r.state === 'critical'),
    };
    const prev = this.seen;
    this.seen = now;
    if (prev === null) return; // the first judgement of this run (or after a reset) is the baseline
    const changed = prev.state !== now.state;
    const alarm: HealthAlarm | null =
      now.acceleration && !prev.acceleration ? 'acceleration' : now.forecastCritical && !prev.forecastCritical ? 'spare_forecast' : null;
    if (!changed && alarm === null) return;
    const at = this.now();
    const reason = a.reasons[0]?.sentence ?? QUIET;
    const fields = { previous: prev.state, state: now.state, score: a.score, reason };
    if (changed) {
      const worse = rank(now.state) > rank(prev.state);
      if (worse) this.o.log.warn(fields, `health ${prev.state} -> ${now.state}: ${reason}`);
      else this.o.log.info(fields, `health ${prev.state} -> ${now.state}: ${reason}`);
      this.events.emit({ type: 'state', at, previous: prev.state, state: now.state, score: a.score, reason });
    } else if (alarm !== null) {
      const alarmReason = a.reasons.find((r) => r.signal === alarm)?.sentence ?? reason;
      this.o.log.warn({ ...fields, alarm, reason: alarmReason }, `health alarm (${alarm}): ${alarmReason}`);
      this.events.emit({ type: 'alarm', at, alarm, state: now.state, score: a.score, reason: alarmReason });
    }
    // An alarm without a change of state tells the command the alarm's own sentence (the worst reason may be
    // another, older one); with a change, the worst reason. DMREMAP_ALARM names the alarm that began, if any.
    const alarmSentence = alarm === null ? null : a.reasons.find((r) => r.signal === alarm)?.sentence ?? null;
    const alertReason = !changed && alarmSentence !== null ? alarmSentence : reason;
    this.alert(changed ? `state:${now.state}` : `alarm:${alarm}`, { previous: prev.state, state: now.state, score: a.score, reason: alertReason, alarm }, at);
  }

  private alert(key: string, a: { previous: HealthState; state: HealthState; score: number; reason: string; alarm: HealthAlarm | null }, at: number): void {
    let command: string | null;
    try {
      command = this.o.alertCommand();
    } catch (e) {
      this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'the alert command cannot be read from the config: no alert');
      return;
    }
    if (command === null || command === '') return;
    const last = this.lastAlertAt.get(key);
    const interval = this.o.alertIntervalMs ?? ALERT_INTERVAL_MS;
    if (last !== undefined && at - last < interval) {
      this.o.log.info({ state: a.state, previous: a.previous, lastAlertAgoMs: at - last }, 'alert command not run: it ran for this state less than the alert interval ago');
      return;
    }
    this.lastAlertAt.set(key, at);
    const env = { device: this.o.device(), name: this.o.name, ...a };
    this.alertChain = this.alertChain.then(() => runAlert(command, env, this.o.log, this.o.alertTimeoutMs));
  }
}
