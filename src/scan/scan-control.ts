// Control-socket handlers of the background scan (scan, scan_start, scan_pause, scan_resume, scan_stop), the
// `scan ...` words of the `message` command, and the scan's human-readable lines (CLI and message replies).
import { usageError } from '../errors.js';
import type { Handlers, ScanStatusResult } from '../control/protocol.js';
import { MIB } from './rate-control.js';
import type { Scanner } from './scanner.js';
import { badRate, isScanRate } from './settings.js';

export type ScanCommands = 'scan' | 'scan_start' | 'scan_pause' | 'scan_resume' | 'scan_stop';

export function scanHandlers(scanner: () => Scanner): Pick<Handlers, ScanCommands> {
  return {
    scan: () => scanner().status(),
    scan_start: (req) => {
      if (req.rateMib !== undefined && !isScanRate(req.rateMib)) throw badRate(req.rateMib);
      return scanner().start(req.rateMib);
    },
    scan_pause: () => scanner().pause(),
    scan_resume: () => scanner().resume(),
    scan_stop: () => scanner().stop(),
  };
}

/** `message scan [start [rate_mib] | pause | resume | stop]`: the reply line. */
export async function scanMessage(h: Pick<Handlers, ScanCommands>, words: readonly string[]): Promise<string> {
  const sub = (words[1] ?? '').toLowerCase();
  const args = words.length - 2;
  const none = (): void => {
    if (args > 0) throw usageError(`message scan ${sub}: expected no argument, got ${args}`);
  };
  switch (sub) {
    case '':
      return describeScan(await h.scan({ id: 0, cmd: 'scan' }));
    case 'start': {
      if (args > 1) throw usageError(`message scan start: expected "scan start [rate_mib]", got ${args} arguments`);
      const rateMib = words[2] === undefined ? undefined : parseRate(words[2]);
      return describeScan(await h.scan_start({ id: 0, cmd: 'scan_start', ...(rateMib !== undefined ? { rateMib } : {}) }));
    }
    case 'pause':
      none();
      return describeScan(await h.scan_pause({ id: 0, cmd: 'scan_pause' }));
    case 'resume':
      none();
      return describeScan(await h.scan_resume({ id: 0, cmd: 'scan_resume' }));
    case 'stop':
      none();
      return describeScan(await h.scan_stop({ id: 0, cmd: 'scan_stop' }));
    default:
      throw usageError(`message scan: unknown action ${JSON.stringify(sub)} (known: start [rate_mib], pause, resume, stop)`);
  }
}

/** A rate typed by a user, MiB/s: a number above 0 (decimals allowed) up to MAX_SCAN_RATE_MIB; E_USAGE otherwise. */
export function parseRate(text: string): number {
  const t = text.trim();
  const n = /^[0-9]+(\.[0-9]+)?$/.test(t) ? Number(t) : Number.NaN;
  if (!isScanRate(n)) throw badRate(text);
  return n;
}

const iso = (ms: number | null): string => (ms === null ? '-' : new Date(ms).toISOString());

/** "1h02m", "45s": a duration for people. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

export function formatRate(bps: number): string {
  return `${(bps / MIB).toFixed(bps >= 10 * MIB ? 0 : 1)} MiB/s`;
}

/** One line: state, progress, position, rate, ETA, findings, times. */
export function describeScan(s: ScanStatusResult): string {
  const parts = [`scan ${s.state}`, `${s.progress}%`, `${s.position}/${s.deviceBytes} bytes`, `pass ${s.pass}`];
  if (s.state === 'running') parts.push(`rate ${formatRate(s.rateBps)}`, `eta ${s.etaSeconds === null ? '-' : formatDuration(s.etaSeconds)}`);
  parts.push(`errors ${s.errorsFound}`, `slow ${s.slowFound}`, `started ${iso(s.startedAt)}`, `finished ${iso(s.finishedAt)}`);
  return parts.join(', ');
}
