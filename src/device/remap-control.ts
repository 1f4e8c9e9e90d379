// Control-socket handlers of the remap engine (remap, unremap, verify, table, message) and the remap part of
// the status: the dm-remap v2.0 status line and its fields as JSON.
import { DmrError, usageError } from '../errors.js';
import { DEFAULT_TABLE_LIMIT, MAX_TABLE_LIMIT, type DeviceStatus, type Handlers, type ResultOf } from '../control/protocol.js';
import type { RemapEngine } from './remap-engine.js';
import { parseSector, parseWholeNumber } from '../numbers.js';
import type { AutoRemapper } from './auto-remap.js';
import { MAX_RECHECK_SECTORS } from '../control/protocol.js';
import { outageRefusal } from './engine-context.js';
import { scanMessage, type ScanCommands } from '../scan/scan-control.js';
import type { ScanCounters } from '../scan/scanner.js';
import type { HealthState } from '../health/index.js';

type RemapStatus = DeviceStatus['remap'];
type RemapCommands = 'remap' | 'unremap' | 'verify' | 'table' | 'message' | 'stats' | 'clear_stats' | 'set_auto_remap' | 'recheck';

/** `0 <sectors> remap v2.0 <remapped>/<slots> <lost>/<slots> <used>/<slots> health=<h> errors=W<w>:R<r> auto_remaps=<a> manual_remaps=<m> scan=<p>%` */
export function statusLine(r: Omit<RemapStatus, 'line'>): string {
  const s = r.slots;
  return (
    `0 ${r.sectors} remap v2.0 ${r.remapped}/${s} ${r.lost}/${s} ${r.used}/${s} health=${r.health} ` +
    `errors=W${r.writeErrors}:R${r.readErrors} auto_remaps=${r.autoRemaps} manual_remaps=${r.manualRemaps} scan=${r.scanPercent}%`
  );
}

/**
 * `health`: the health model's state now (DeviceHealth.assess(): the line's `health=<h>`); `scanPercent`: the
 * background scan's progress (Scanner.status().progress): the line's `scan=<p>%`.
 */
export function remapStatus(engine: RemapEngine, health: HealthState, scanPercent = 0): RemapStatus {
  const st = engine.store;
  const g = st.geometry;
  const counts = st.table.counts();
  const c = st.counters();
  const slots = g.slotCount;
  const free = st.allocator.free;
  const base = {
    sectors: engine.deviceSectors,
    slots,
    remapped: counts.remapped,
    mapped: counts.mapped,
    lost: counts.lost,
    used: slots - free,
    free,
    retired: st.allocator.retiredCount,
    writeErrors: c.writeErrors,
    readErrors: c.readErrors,
    autoRemaps: c.autoRemaps,
    manualRemaps: c.manualRemaps,
    // A spare before format version 3 stores the scan's remaps as auto: no count to report, not a 0.
    ...(g.version >= 3 ? { scanRemaps: c.scanRemaps } : {}),
    unremaps: c.unremaps,
    scanPercent,
    pairId: st.pairId,
    spareOffset: g.spareOffset,
    spareSize: g.spareSize,
    spareDataOffset: Number(engine.spareDataOffset),
    journalUsed: st.journalUsed,
    journalCapacity: st.journalCapacity,
    generation: st.generation,
  };
  const withHealth = { ...base, health };
  return { line: statusLine(withHealth), ...withHealth };
}

// Text replies of `message`, also used by the CLI for its human-readable output.
export function describeRemap(r: ResultOf<'remap'>): string {
  const where = `sector ${r.sector} (block ${r.block}) to spare slot ${r.slot}`;
  return r.state === 'lost' ? `remapped ${where} as lost: main read failed with ${r.readErrno ?? 'an error'}; reads fail until the block is written` : `remapped ${where}`;
}

export function describeUnremap(r: ResultOf<'unremap'>): string {
  return `unremapped sector ${r.sector} (block ${r.block}): data moved back to main, spare slot ${r.slot} freed`;
}

export function describeVerify(r: ResultOf<'verify'>): string {
  const head = `sector ${r.sector} (block ${r.block})`;
  const where = r.device === 'spare' ? `spare slot ${r.slot} (byte ${r.offset} of the spare)` : `main (byte ${r.offset})`;
  switch (r.state) {
    case 'moving':
      return `${head}: being moved, at ${where}`;
    case 'lost':
      return `${head}: lost, at ${where}; its data is gone: reads fail with EIO until it is written`;
    default: {
      const reads = r.readable ? 'reads fine' : `does not read (${r.errno ?? 'error'})`;
      return `${head}: ${r.state === 'mapped' ? 'remapped to' : 'not remapped, on'} ${where}; ${reads}`;
    }
  }
}

export function describeRecheck(r: ResultOf<'recheck'>): string {
  const lines = [`rechecked ${r.checked} lost block(s): ${r.recovered} read on main again and are back there, ${r.unreadable} still unreadable`];
  for (const b of r.blocks) {
    if (b.result === 'recovered') lines.push(`sector ${b.sector} (block ${b.block}): recovered`);
    else if (b.result === 'unreadable') lines.push(`sector ${b.sector} (block ${b.block}): still unreadable (${b.errno ?? 'error'})`);
    else if (b.result === 'main-stale') {
      lines.push(`sector ${b.sector} (block ${b.block}): stays lost: main's copy is not known to be its data (its slot failed, or it was lost before the daemon started)`);
    } else lines.push(`sector ${b.sector} (block ${b.block}): not lost, nothing to recheck`);
  }
  return lines.join('\n');
}

export function describeTable(t: ResultOf<'table'>): string {
  const lines = [`${t.total} remapped block(s)${t.entries.length < t.total ? `, showing ${t.offset}-${t.offset + t.entries.length - 1}` : ''}`];
  for (const e of t.entries) {
    lines.push(`block ${e.block} sector ${e.sector} slot ${e.slot} ${e.state} ${e.origin} ${new Date(e.time).toISOString()} errors ${e.errorCount}`);
  }
  return lines.join('\n');
}

const MESSAGES = [
  'remap <sector>',
  'unremap <sector>',
  'verify <sector>',
  'table [offset [limit]]',
  'status',
  'stats',
  'clear_stats',
  'set_auto_remap 0|1',
  'recheck [sector...]',
  'scan [start [rate_mib]|pause|resume|stop]',
  'ping',
] as const;

/**
 * A manual remap copies the block from main and a recheck reads lost blocks there: while main is in an
 * outage the copy fails and the block would be committed lost, though its data is intact on main.
 */
function refuseDuringOutage(auto: AutoRemapper, what: 'remap' | 'recheck'): void {
  if (auto.outage.active) throw outageRefusal(what);
}

/** The error-handling statistics: the auto-remapper's counters, the store's persisted ones and the table's. */
/** The slow-read counters of `stats`: the scan's (with the slow-block rule's), and the users' slow reads (user-slow-reads.ts). */
export type SlowReadCounters = Pick<ScanCounters, 'slowIos' | 'slowBlocks' | 'uniformSlowChunks' | 'busySlowReads'> & {
  userSlowReads: number;
  userSlowUnjudged: number;
};

export function autoRemapStats(engine: RemapEngine, auto: AutoRemapper, health: HealthState, scan: SlowReadCounters | null = null): ResultOf<'stats'> {
  const st = engine.store;
  const c = st.counters();
  const a = auto.stats();
  // Kept by the table on every change: no walk of it per request.
  const pending = st.table.counts().lostAuto;
  const rs = remapStatus(engine, health);
  return {
    autoRemap: auto.policy.autoRemap,
    policy: { errorThreshold: auto.policy.errorThreshold, readRetries: auto.policy.readRetries, retryBackoffMs: auto.policy.retryBackoffMs },
    readErrors: c.readErrors,
    writeErrors: c.writeErrors,
    retries: a.retries,
    recoveredReads: a.recoveredReads,
    unrecoveredReads: a.unrecoveredReads,
    autoRemaps: c.autoRemaps,
    manualRemaps: c.manualRemaps,
    ...(st.geometry.version >= 3 ? { scanRemaps: c.scanRemaps } : {}),
    relocations: a.relocations,
    relocationFailures: a.relocationFailures,
    healedBlocks: a.slotWritesCommitted,
    redrivenWrites: a.redrivenWrites,
    recoveredBlocks: a.recovered,
    pendingBlocks: pending,
    lostBlocks: rs.lost,
    spareIoErrors: a.spareIoErrors,
    retiredSlots: rs.retired,
    passedThrough: a.passedThrough,
    faultsParked: a.faultsParked,
    queue: a.queue,
    freeSlots: rs.free,
    spareFull: auto.spareFull || rs.free === 0,
    outage: a.outage,
    writeOutage: a.writeOutage,
    health,
    slowIos: scan?.slowIos ?? 0,
    slowBlocks: scan?.slowBlocks ?? 0,
    slowChunks: scan?.uniformSlowChunks ?? 0,
    busySlowReads: scan?.busySlowReads ?? 0,
    userSlowReads: scan?.userSlowReads ?? 0,
    userSlowUnjudged: scan?.userSlowUnjudged ?? 0,
  };
}

/** The human output of `dmremap-ublk stats`. */
export function describeStatsReport(s: ResultOf<'stats'>): string {
  const q = s.queue;
  return [
    `auto-remap        ${s.autoRemap ? 'on' : 'off'} (error threshold ${s.policy.errorThreshold}, ${s.policy.readRetries} read retries, backoff ${s.policy.retryBackoffMs} ms)`,
    `errors            ${s.writeErrors} write, ${s.readErrors} read, ${s.spareIoErrors} on the spare`,
    `reads             ${s.retries} retries, ${s.recoveredReads} recovered, ${s.unrecoveredReads} failed every try`,
    `remaps            ${s.autoRemaps} automatic${s.scanRemaps === undefined ? '' : ` (${s.scanRemaps} found by the background scan)`}, ` +
      `${s.manualRemaps} manual, ${s.relocations} relocations (${s.relocationFailures} failed)`,
    `blocks            ${s.pendingBlocks} pending (unreadable, healed by the next write), ${s.lostBlocks} lost, ${s.healedBlocks} written to their slots (redirected or healed), ${s.redrivenWrites} writes driven again (their block had left the slot), ${s.recoveredBlocks} lost blocks recovered by recheck`,
    `spare             ${s.freeSlots} free slots, ${s.retiredSlots} retired${s.spareFull ? ', FULL: errors reach the user' : ''}`,
    `passed through    ${s.passedThrough} failed requests returned to the user`,
    `outages           ${s.outage.active ? `NOW (since ${new Date(s.outage.since ?? 0).toISOString()}, ${s.outage.held} requests held); ` : ''}` +
      `${s.outage.outages} outages of main, ${s.outage.heldTotal} requests held, ${s.outage.failedAfterHold} failed after the hold`,
    `write outages     ${s.writeOutage.active ? `NOW: main refuses writes (since ${new Date(s.writeOutage.since ?? 0).toISOString()}, ${s.writeOutage.held} writes held); ` : ''}` +
      `${s.writeOutage.outages} times main refused writes, ${s.writeOutage.heldTotal} writes held, ${s.writeOutage.failedAfterHold} redirected after the hold; ` +
      `main took ${s.writeOutage.mainWritesOk} writes, ${s.writeOutage.mainWritesFailed} failed`,
    `work queue        ${q.queued} queued (${q.foreground} foreground, ${q.background} background), ${q.running} running, ${q.handled} done; ${s.faultsParked} requests waiting` +
      (q.droppedBackground > 0 ? `; ${q.droppedBackground} relocations dropped (queue full: they wait for the block's next error)` : ''),
    `slow reads        ${s.slowIos} reads slower than slow_io_ms (${s.userSlowReads} of them users' reads, ${s.userSlowUnjudged} of those not read again), ${s.slowBlocks} slow blocks found, ${s.slowChunks} ranges slow as a whole (no block counted), ${s.busySlowReads} scan reads slow while users did I/O (not judged)`,
    `health            ${s.health}`,
  ].join('\n');
}

/** One line of `key=value` pairs: the reply of the `stats` message. */
export function describeStats(s: ResultOf<'stats'>): string {
  return (
    `auto_remap=${s.autoRemap ? 1 : 0} read_errors=${s.readErrors} write_errors=${s.writeErrors} retries=${s.retries} ` +
    `recovered_reads=${s.recoveredReads} unrecovered_reads=${s.unrecoveredReads} auto_remaps=${s.autoRemaps} ` +
    `manual_remaps=${s.manualRemaps} scan_remaps=${s.scanRemaps ?? 0} relocations=${s.relocations} pending=${s.pendingBlocks} lost=${s.lostBlocks} ` +
    `spare_io_errors=${s.spareIoErrors} retired_slots=${s.retiredSlots} passed_through=${s.passedThrough} ` +
    `queued=${s.queue.queued + s.queue.running} free_slots=${s.freeSlots} outage=${s.outage.active ? 1 : 0} outages=${s.outage.outages} ` +
    `held=${s.outage.held} write_outage=${s.writeOutage.active ? 1 : 0} write_outages=${s.writeOutage.outages} ` +
    `writes_held=${s.writeOutage.held} slow_ios=${s.slowIos} slow_blocks=${s.slowBlocks} health=${s.health}`
  );
}

/**
 * `dmsetup message <dev> <sector> <message>` passes the sector the message is for first; dm-remap scripts
 * say `0 remap N`. The device is one target starting at sector 0, so a leading `0` is accepted and dropped;
 * another leading number is an error (there is no other target to send it to).
 */
export function withoutDmsetupSector(words: string[]): string[] {
  const first = words[0] ?? '';
  if (!/^[0-9]+$/.test(first)) return words;
  if (!/^0+$/.test(first)) throw usageError(`message: the leading sector (dmsetup's target sector) must be 0, got ${first}: the device is one target starting at sector 0`);
  if (words.length === 1) throw usageError('message: nothing after the leading sector 0 (e.g. "0 remap 1234")');
  return words.slice(1);
}

function count(from: string, words: string[], min: number, max: number, usage: string): void {
  const n = words.length - 1;
  if (n < min || n > max) throw usageError(`message ${from}: expected "${usage}", got ${n} argument(s)`);
}

function tableArgs(offset: number | undefined, limit: number | undefined): { offset: number; limit: number } {
  return { offset: offset ?? 0, limit: limit ?? DEFAULT_TABLE_LIMIT };
}

export function remapHandlers(
  engine: () => RemapEngine,
  status: () => DeviceStatus,
  auto: () => AutoRemapper,
  scan: { handlers: Pick<Handlers, ScanCommands>; counters: () => SlowReadCounters } | null = null,
  /** The health model's state now (DeviceHealth.assess().state). */
  health: () => HealthState = () => status().remap.health,
): Pick<Handlers, RemapCommands> {
  const h = {
    stats: () => autoRemapStats(engine(), auto(), health(), scan?.counters() ?? null),
    clear_stats: () => {
      auto().clearStats();
      return { cleared: true as const };
    },
    set_auto_remap: (req: { enabled: boolean }) => {
      auto().setAutoRemap(req.enabled);
      return { autoRemap: req.enabled };
    },
    remap: (req: { sector: number }) => {
      refuseDuringOutage(auto(), 'remap');
      return engine().remap(req.sector);
    },
    unremap: (req: { sector: number }) => engine().unremap(req.sector),
    verify: (req: { sector: number }) => engine().verify(req.sector),
    recheck: async (req: { sectors?: number[] }): Promise<ResultOf<'recheck'>> => {
      refuseDuringOutage(auto(), 'recheck');
      const e = engine();
      const blocks = req.sectors === undefined ? null : req.sectors.map((s) => e.blockOf(s));
      const r = await auto().recheck(blocks);
      const count = (k: string): number => r.filter((x) => x.result === k).length;
      return {
        checked: count('recovered') + count('unreadable'),
        recovered: count('recovered'),
        unreadable: count('unreadable'),
        blocks: r.slice(0, MAX_RECHECK_SECTORS).map((x) => ({ sector: (x.block * e.blockSize) / 512, ...x })),
      };
    },
    table: (req: { offset?: number; limit?: number }) => {
      const { offset, limit } = tableArgs(req.offset, req.limit);
      return engine().table(offset, limit);
    },
  };
  const message = async (req: { words: string[] }): Promise<ResultOf<'message'>> => {
    const words = withoutDmsetupSector(req.words);
    const verb = (words[0] ?? '').toLowerCase();
    switch (verb) {
      case 'ping':
        count(verb, words, 0, 0, 'ping');
        return { reply: 'pong' };
      case 'status':
        count(verb, words, 0, 0, 'status');
        return { reply: status().remap.line };
      case 'stats':
        count(verb, words, 0, 0, 'stats');
        return { reply: describeStats(h.stats()) };
      case 'clear_stats':
        count(verb, words, 0, 0, 'clear_stats');
        h.clear_stats();
        return { reply: 'statistics cleared' };
      case 'set_auto_remap': {
        count(verb, words, 1, 1, 'set_auto_remap 0|1');
        const v = words[1] as string;
        if (v !== '0' && v !== '1') throw usageError(`message set_auto_remap: expected 0 or 1, got ${JSON.stringify(v)}`);
        h.set_auto_remap({ enabled: v === '1' });
        return { reply: `auto_remap=${v}` };
      }
      case 'remap':
      case 'unremap':
      case 'verify': {
        count(verb, words, 1, 1, `${verb} <sector>`);
        const sector = parseSector(words[1] as string);
        if (verb === 'remap') return { reply: describeRemap(await h.remap({ sector })) };
        if (verb === 'unremap') return { reply: describeUnremap(await h.unremap({ sector })) };
        return { reply: describeVerify(await h.verify({ sector })) };
      }
      case 'recheck': {
        count(verb, words, 0, 15, 'recheck [sector...]');
        const sectors = words.slice(1).map((w) => parseSector(w));
        return { reply: describeRecheck(await h.recheck(sectors.length > 0 ? { sectors } : {})) };
      }
      case 'table': {
        count(verb, words, 0, 2, 'table [offset [limit]]');
        const num = (s: string | undefined, what: string, max: number): number | undefined => {
          if (s === undefined) return undefined;
          const n = parseWholeNumber(s, 15);
          if (n === null || n > max) throw usageError(`message table: ${what} must be a whole number up to ${max}, got ${JSON.stringify(s)}`);
          return n;
        };
        const offset = num(words[1], 'offset', Number.MAX_SAFE_INTEGER);
        const limit = num(words[2], 'limit', MAX_TABLE_LIMIT);
        if (limit === 0) throw usageError('message table: limit must be at least 1');
        return { reply: describeTable(h.table({ offset, limit })) };
      }
      case 'scan':
        if (scan === null) throw new DmrError('E_USAGE', 'message scan: this device has no background scan');
        return { reply: await scanMessage(scan.handlers, words) };
      default:
        throw new DmrError('E_USAGE', `unknown message ${JSON.stringify(words.join(' '))} (known: ${MESSAGES.join(', ')})`);
    }
  };
  return { ...h, message };
}
