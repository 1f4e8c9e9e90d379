// The scraped devices as Prometheus metrics: a fresh prom-client Registry per scrape (a device that is gone
// is gone from the next scrape), every name under one `dmremap_` prefix, in base units (seconds, bytes,
// ratios), `_total` for counters and `_info` for metadata, labelled `device` (/dev/ublkbN) and `name`.
//
// The daemons count, the exporter only copies: a counter is set once per scrape to the daemon's cumulative
// value (never incremented by deltas). Counters run since the daemon started (a restart starts them over)
// or, for the error totals, since the last `clear_stats`; Prometheus reads a counter that went down as a
// reset, which is what both are.
import { Counter, Gauge, Histogram, Registry, type LabelValues, type MetricType } from 'prom-client';
import type { Stats } from '../control/protocol.js';
import type { DeviceSnapshot } from './collect.js';

const DEVICE_LABELS = ['device', 'name'] as const;
type DeviceLabel = (typeof DEVICE_LABELS)[number];

const HEALTH_STATES = ['healthy', 'watch', 'degraded', 'critical', 'failed'] as const;
const SCAN_STATES = ['idle', 'running', 'paused', 'done'] as const;

/** Sets one sample of a metric: its labels (device and name included) and value. */
type Setter = (labels: Record<string, string>, value: number) => void;

/** The metric builders of one scrape, each registered in `reg`. */
class Metrics {
  constructor(readonly reg: Registry) {}

  gauge(name: string, help: string, extra: readonly string[] = []): Setter {
    const g = new Gauge({ name, help, labelNames: [...DEVICE_LABELS, ...extra], registers: [this.reg] });
    return (labels, value) => g.set(labels, value);
  }

  counter(name: string, help: string, extra: readonly string[] = []): Setter {
    const c = new Counter({ name, help, labelNames: [...DEVICE_LABELS, ...extra], registers: [this.reg] });
    // Set, not incremented: the counter is new in this scrape's registry, so this is the daemon's value.
    return (labels, value) => c.inc(labels, value);
  }
}

/**
 * A histogram whose buckets were counted elsewhere (native's log2 latency buckets in `status`): prom-client's
 * Histogram only counts its own observations, so this one reports the given counts. Native keeps no sum of
 * latencies, so there is no `_sum` series (Prometheus does not need one for histogram_quantile).
 */
class CountedHistogram extends Histogram<DeviceLabel> {
  private readonly rows: { labels: Record<DeviceLabel, string>; log2Us: number[] }[] = [];
  private readonly metricName: string;
  private readonly metricHelp: string;

  constructor(config: ConstructorParameters<typeof Histogram<DeviceLabel>>[0]) {
    super(config);
    this.metricName = config.name;
    this.metricHelp = config.help;
  }

  add(labels: Record<DeviceLabel, string>, log2Us: number[]): void {
    this.rows.push({ labels, log2Us });
  }

  override async get(): Promise<Awaited<ReturnType<Histogram<DeviceLabel>['get']>>> {
    const values: { labels: LabelValues<DeviceLabel>; value: number; metricName: string }[] = [];
    for (const { labels, log2Us } of this.rows) {
      for (const b of latencyBuckets(log2Us)) {
        const withLe: LabelValues<DeviceLabel> = { ...labels, le: b.le } as LabelValues<DeviceLabel>;
        values.push({ labels: withLe, value: b.count, metricName: `${this.metricName}_bucket` });
      }
      values.push({ labels, value: log2Us.reduce((a, n) => a + n, 0), metricName: `${this.metricName}_count` });
    }
    // prom-client's types call `type` an enum; at run time it is the string the registry prints after # TYPE.
    const type = 'histogram' as unknown as MetricType;
    return { name: this.metricName, help: this.metricHelp, type, aggregator: 'sum', collect: () => undefined, values };
  }

  /** What the registry prints (prom-client's Registry prefers this over get()). */
  async getForPromString(): Promise<Awaited<ReturnType<Histogram<DeviceLabel>['get']>>> {
    return this.get();
  }
}

/**
 * Cumulative Prometheus buckets from native's log2 counts (element i: [2^i, 2^(i+1)) µs, the last element
 * also everything slower): le = 2^(i+1) µs in seconds for every element but the last, then +Inf.
 */
export function latencyBuckets(log2Us: number[]): { le: string; count: number }[] {
  const out: { le: string; count: number }[] = [];
  let seen = 0;
  log2Us.forEach((n, i) => {
    seen += n;
    if (i < log2Us.length - 1) out.push({ le: String(2 ** (i + 1) / 1e6), count: seen });
  });
  out.push({ le: '+Inf', count: seen });
  return out;
}

/**
 * The remap counters of a daemon's `stats` as exported: dmremap_remaps_total{origin} is the persisted
 * autoRemaps and manualRemaps (auto counts the scan's too), dmremap_scan_remaps_total the persisted scanRemaps
 * (those of auto the background scan found), only where the daemon reports it (a format-version-3 spare, a
 * daemon new enough). Each is exported as persisted, never computed from another: a difference of two
 * counters goes backwards when one of them is reset (a program older than scanRemaps writes it back as 0),
 * and Prometheus would read that as a reset of the difference.
 */
export function remapCounters(x: Pick<Stats, 'autoRemaps' | 'manualRemaps' | 'scanRemaps'>): {
  byOrigin: Array<['auto' | 'manual', number]>;
  scan: number | undefined;
} {
  return { byOrigin: [['auto', x.autoRemaps], ['manual', x.manualRemaps]], scan: x.scanRemaps };
}

/** The registry of one scrape: `snaps` (collectAll's answer) and how long collecting took. */
export function buildRegistry(snaps: DeviceSnapshot[], collectSeconds: number): Registry {
  const reg = new Registry();
  const m = new Metrics(reg);

  new Gauge({ name: 'dmremap_exporter_devices', help: 'Devices in the registry (running or not).', registers: [reg] }).set(snaps.length);
  new Gauge({ name: 'dmremap_exporter_collect_seconds', help: 'How long asking every device took in this scrape.', registers: [reg] }).set(collectSeconds);

  const up = m.gauge('dmremap_up', '1 if the device\'s daemon answered this scrape, 0 if not (no daemon, or no answer within the timeout).');
  const duration = m.gauge('dmremap_scrape_duration_seconds', 'How long the device\'s daemon took to answer this scrape.');
  const info = m.gauge('dmremap_info', 'The device\'s main and spare (always 1).', ['dev_id', 'main', 'spare']);
  const started = m.gauge('dmremap_daemon_start_time_seconds', 'When the device\'s daemon started, seconds since the epoch (changes() counts daemon restarts).');
  const size = m.gauge('dmremap_size_bytes', 'Size of /dev/ublkbN.');
  const requests = m.counter('dmremap_io_requests_total', 'Requests to /dev/ublkbN since the daemon started, by operation.', ['op']);
  const bytes = m.counter('dmremap_io_bytes_total', 'Bytes read and written through /dev/ublkbN since the daemon started, by operation.', ['op']);
  const failed = m.counter('dmremap_io_failed_requests_total', 'Requests completed with an error since the daemon started.');
  const inflight = m.gauge('dmremap_io_inflight_requests', 'Requests in flight now.');
  const latency = new CountedHistogram({
    name: 'dmremap_io_latency_seconds',
    help: 'Request latency since the daemon started, every operation together (native keeps one histogram), log2 buckets.',
    labelNames: [...DEVICE_LABELS],
    buckets: [1], // unused: get() reports native's buckets
    registers: [reg],
  });
  const backingErrors = m.counter('dmremap_backing_errors_total', 'Read and write errors of the backing devices (each failed range once; zeroed by clear_stats).', ['op']);
  const spareErrors = m.counter('dmremap_spare_io_errors_total', 'Failed I/O ranges on the spare.');
  const retries = m.counter('dmremap_retries_total', 'Retries issued after errors.');
  const recovered = m.counter('dmremap_recovered_reads_total', 'Failed reads a retry recovered.');
  const unrecovered = m.counter('dmremap_unrecovered_reads_total', 'Failed reads that failed every retry.');
  const remaps = m.counter(
    'dmremap_remaps_total',
    'Blocks remapped, ever, by origin: auto (the error handling of users\' I/O and the background scan), manual (the remap command).',
    ['origin'],
  );
  const scanRemaps = m.counter(
    'dmremap_scan_remaps_total',
    'Of the auto remaps, those the background scan found, ever (absent for a spare formatted before format version 3).',
  );
  const unremaps = m.counter('dmremap_unremaps_total', 'Remaps undone by unremap, ever.');
  const relocations = m.counter('dmremap_relocations_total', 'Background moves of recovered blocks to the spare.');
  const relocationFailures = m.counter('dmremap_relocation_failures_total', 'Background moves given up (the block did not read).');
  const remapped = m.gauge('dmremap_remapped_blocks', 'Entries in the remap table by state (mapped: served from the spare; lost: reads fail until written).', ['state']);
  const lost = m.gauge('dmremap_lost_blocks', 'Blocks whose data is lost (reads fail until written), any origin.');
  const pending = m.gauge('dmremap_pending_blocks', 'Lost blocks of origin auto or scan (unreadable on main, not written since).');
  const slots = m.gauge('dmremap_spare_slots', 'Slots in the spare region.');
  const slotsUsed = m.gauge('dmremap_spare_slots_used', 'Spare slots not free (held by an entry, retired, or being filled).');
  const slotsFree = m.gauge('dmremap_spare_slots_free', 'Free spare slots.');
  const slotsRetired = m.gauge('dmremap_spare_slots_retired', 'Spare slots retired for good.');
  const spareFull = m.gauge('dmremap_spare_full', '1 if a remap found no free slot and none is free yet.');
  const autoRemap = m.gauge('dmremap_auto_remap_enabled', '1 if errors are remapped automatically.');
  const parked = m.gauge('dmremap_parked_requests', 'Requests waiting for a decision now.');
  const score = m.gauge('dmremap_health_score', 'The health model\'s score, 0 (failed) to 100 (healthy).');
  const healthState = m.gauge('dmremap_health_state', 'The health model\'s state: 1 for the current one, 0 for the others.', ['state']);
  const forecast = m.gauge('dmremap_spare_exhaustion_forecast_seconds', 'Seconds until the spare runs out at the current rate (absent without enough data).');
  const scanState = m.gauge('dmremap_scan_state', 'The background scan\'s state: 1 for the current one, 0 for the others.', ['state']);
  const scanProgress = m.gauge('dmremap_scan_progress_ratio', 'Progress of the scan\'s current pass, 0 to 1 (1 after a finished pass until the next).');
  const scanPosition = m.gauge('dmremap_scan_position_bytes', 'Bytes of the device the scan\'s current pass has read.');
  const scanRate = m.gauge('dmremap_scan_rate_bytes_per_second', 'The scan\'s read rate now (0 unless running).');
  const scanPass = m.gauge('dmremap_scan_pass', 'Number of the scan\'s current (or last) pass.');
  const scanErrors = m.gauge('dmremap_scan_pass_errors', 'Unreadable blocks the scan\'s current pass found.');
  const scanSlow = m.gauge('dmremap_scan_pass_slow_reads', 'Slow reads the scan\'s current pass found.');
  const queueDepth = m.gauge('dmremap_work_queue_depth', 'Blocks waiting in the auto-remap work queue, by class.', ['class']);
  const queueRunning = m.gauge('dmremap_work_queue_running', 'Work queue items being handled now.');
  const queueHandled = m.counter('dmremap_work_queue_handled_total', 'Work queue items handled.');
  const queueDropped = m.counter('dmremap_work_queue_dropped_total', 'Background relocations not queued because the queue was full.');
  const outageActive = m.gauge('dmremap_outage_active', '1 while main is in an outage (kind device: it answers nothing; write: it refuses writes).', ['kind']);
  const outages = m.counter('dmremap_outages_total', 'Outages of main, by kind.', ['kind']);
  const outageHeld = m.gauge('dmremap_outage_held_requests', 'Requests held now by an outage, by kind.', ['kind']);
  const outageFailed = m.counter('dmremap_outage_failed_after_hold_total', 'Held requests failed (device) or redirected to the spare (write) after outage_hold_ms.', ['kind']);
  const slowReads = m.counter('dmremap_slow_reads_total', 'Reads slower than slow_io_ms (the scan\'s and users\').');
  const slowBlocks = m.counter('dmremap_slow_blocks_total', 'Blocks a block-by-block re-read of a slow read found slow.');

  for (const s of snaps) {
    const l = { device: s.device, name: s.name };
    up(l, s.up ? 1 : 0);
    duration(l, s.seconds);
    info({ ...l, dev_id: String(s.devId), main: s.main ?? '', spare: s.spare ?? '' }, 1);
    const st = s.status;
    const x = s.stats;
    if (!s.up || st === null || x === null) continue;
    const started0 = Date.parse(st.startedAt);
    if (Number.isFinite(started0)) started(l, started0 / 1000);
    size(l, st.sizeBytes);
    requests({ ...l, op: 'read' }, st.io.reads);
    requests({ ...l, op: 'write' }, st.io.writes);
    requests({ ...l, op: 'flush' }, st.io.flushes);
    requests({ ...l, op: 'discard' }, st.io.discards);
    bytes({ ...l, op: 'read' }, st.io.readBytes);
    bytes({ ...l, op: 'write' }, st.io.writeBytes);
    failed(l, st.io.errors);
    inflight(l, st.io.inflight);
    if (st.io.latencyLog2Us !== undefined && st.io.latencyLog2Us.length > 0) latency.add(l, st.io.latencyLog2Us);
    backingErrors({ ...l, op: 'read' }, x.readErrors);
    backingErrors({ ...l, op: 'write' }, x.writeErrors);
    spareErrors(l, x.spareIoErrors);
    retries(l, x.retries);
    recovered(l, x.recoveredReads);
    unrecovered(l, x.unrecoveredReads);
    const rc = remapCounters(x);
    for (const [origin, value] of rc.byOrigin) remaps({ ...l, origin }, value);
    if (rc.scan !== undefined) scanRemaps(l, rc.scan);
    unremaps(l, st.remap.unremaps);
    relocations(l, x.relocations);
    relocationFailures(l, x.relocationFailures);
    remapped({ ...l, state: 'mapped' }, st.remap.mapped);
    remapped({ ...l, state: 'lost' }, st.remap.lost);
    lost(l, x.lostBlocks);
    pending(l, x.pendingBlocks);
    slots(l, st.remap.slots);
    slotsUsed(l, st.remap.used);
    slotsFree(l, st.remap.free);
    slotsRetired(l, st.remap.retired);
    spareFull(l, x.spareFull ? 1 : 0);
    autoRemap(l, x.autoRemap ? 1 : 0);
    parked(l, x.faultsParked);
    score(l, st.health.score);
    for (const h of HEALTH_STATES) healthState({ ...l, state: h }, st.health.state === h ? 1 : 0);
    const f = st.health.forecast.spareExhaustionSeconds;
    if (f !== null) forecast(l, f);
    if (s.scan !== null) {
      for (const ss of SCAN_STATES) scanState({ ...l, state: ss }, s.scan.state === ss ? 1 : 0);
      scanProgress(l, s.scan.progress / 100);
      scanPosition(l, s.scan.position);
      scanRate(l, s.scan.rateBps);
      scanPass(l, s.scan.pass);
      scanErrors(l, s.scan.errorsFound);
      scanSlow(l, s.scan.slowFound);
    }
    queueDepth({ ...l, class: 'foreground' }, x.queue.foreground);
    queueDepth({ ...l, class: 'background' }, x.queue.background);
    queueRunning(l, x.queue.running);
    queueHandled(l, x.queue.handled);
    queueDropped(l, x.queue.droppedBackground);
    for (const [kind, o] of [['device', x.outage], ['write', x.writeOutage]] as const) {
      outageActive({ ...l, kind }, o.active ? 1 : 0);
      outages({ ...l, kind }, o.outages);
      outageHeld({ ...l, kind }, o.held);
      outageFailed({ ...l, kind }, o.failedAfterHold);
    }
    slowReads(l, x.slowIos);
    slowBlocks(l, x.slowBlocks);
  }
  return reg;
}
