// `dmremap-ublk scan <device> [start [--rate N] [--wait] | pause | resume | stop] [--watch] [--json]`: the
// background scan's control messages, and a progress display (--watch, start --wait): a bar with the rate
// and ETA redrawn in place on a terminal, one plain line per change otherwise.
import { request } from '../control/client.js';
import type { ScanStatusResult } from '../control/protocol.js';
import { DmrError, usageError } from '../errors.js';
import { describeScan, formatDuration, formatRate } from '../scan/scan-control.js';
import { printJson, type CliContext } from './context.js';
import type { ScanFlags } from './schemas.js';
import { liveEntry } from './status.js';

export const SCAN_ACTIONS = ['start', 'pause', 'resume', 'stop'] as const;
export type ScanAction = (typeof SCAN_ACTIONS)[number];

/** pause and stop wait for the scan's read in flight (a slow disk's block-by-block re-read). */
const COMMAND_TIMEOUT_MS = 120_000;
export const WATCH_INTERVAL_MS = 1000;
const BAR_WIDTH = 30;

/** `<device> [action]`: the device and the action (none: show the status). */
export function scanTarget(positionals: string[]): { target: string; action: ScanAction | null } {
  const [target, action, ...rest] = positionals;
  if (target === undefined || target === '') throw usageError('missing device: dmremap-ublk scan <device> [start [--rate N] | pause | resume | stop]');
  if (rest.length > 0) throw usageError(`scan takes a device and one action, got ${positionals.length} arguments`);
  if (action === undefined) return { target, action: null };
  if (!(SCAN_ACTIONS as readonly string[]).includes(action)) {
    throw usageError(`unknown scan action ${JSON.stringify(action)} (actions: ${SCAN_ACTIONS.join(', ')})`);
  }
  return { target, action: action as ScanAction };
}

export interface WatchOptions {
  intervalMs?: number;
  /** Aborted: the watch ends (Ctrl-C). */
  signal?: AbortSignal;
}

export async function runScan(ctx: CliContext, target: string, action: ScanAction | null, flags: ScanFlags, opts: WatchOptions = {}): Promise<number> {
  if (flags.rate !== undefined && action !== 'start') throw usageError('--rate goes with "scan <device> start"');
  if (flags.wait && action !== 'start') throw usageError('--wait goes with "scan <device> start"');
  if (flags.watch && action !== null) throw usageError(`--watch shows a scan's progress: "scan <device> --watch" (not with ${action}; use start --wait)`);
  const sock = liveEntry(ctx, target).socket;
  let s: ScanStatusResult;
  switch (action) {
    case null:
      s = await request(sock, 'scan', {});
      break;
    case 'start':
      s = await request(sock, 'scan_start', flags.rate !== undefined ? { rateMib: flags.rate } : {}, COMMAND_TIMEOUT_MS);
      break;
    case 'pause':
      s = await request(sock, 'scan_pause', {}, COMMAND_TIMEOUT_MS);
      break;
    case 'resume':
      s = await request(sock, 'scan_resume', {}, COMMAND_TIMEOUT_MS);
      break;
    case 'stop':
      s = await request(sock, 'scan_stop', {}, COMMAND_TIMEOUT_MS);
      break;
  }
  if (!flags.watch && !flags.wait) {
    if (flags.json) printJson(ctx, s);
    else ctx.stdout.write(`${describeScan(s)}\n`);
    return 0;
  }
  return watch(ctx, sock, s, flags, opts);
}

/**
 * Polls `scan` until the pass is done (or, for --watch, nothing is under way), or until aborted. --wait
 * fails (E_SCAN_STATE) when the pass it waits for was stopped.
 */
async function watch(ctx: CliContext, sock: string, first: ScanStatusResult, flags: ScanFlags, opts: WatchOptions): Promise<number> {
  const tty = ctx.stdoutIsTTY === true && !flags.json;
  const intervalMs = opts.intervalMs ?? WATCH_INTERVAL_MS;
  const pass = first.pass;
  let last = '';
  let s = first;
  const aborted = (): boolean => opts.signal?.aborted === true;
  const show = (st: ScanStatusResult): void => {
    if (flags.json) {
      printJson(ctx, st);
      return;
    }
    const line = tty ? progressBar(st) : describeScan(st);
    if (line === last) return;
    last = line;
    ctx.stdout.write(tty ? `\r\x1b[2K${line}` : `${line}\n`);
  };
  try {
    for (;;) {
      show(s);
      if (s.state === 'done' || s.pass > pass) break;
      if (s.state === 'idle') {
        if (flags.wait) throw new DmrError('E_SCAN_STATE', `the scan was stopped before pass ${pass} finished (at ${s.position} of ${s.deviceBytes} bytes)`);
        break;
      }
      if (aborted()) break;
      await sleep(intervalMs, opts.signal);
      if (aborted()) break;
      s = await request(sock, 'scan', {});
    }
  } finally {
    if (tty && last !== '') ctx.stdout.write('\n');
  }
  return 0;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((res) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      res();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** `[##########....................]  33%  64 MiB/s  eta 1m20s  errors 0  slow 0  running` */
export function progressBar(s: ScanStatusResult): string {
  const filled = Math.round((s.progress / 100) * BAR_WIDTH);
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}]`;
  const rate = s.state === 'running' ? formatRate(s.rateBps) : '-';
  const eta = s.etaSeconds === null ? '-' : formatDuration(s.etaSeconds);
  return `${bar} ${String(s.progress).padStart(3)}%  ${rate}  eta ${eta}  errors ${s.errorsFound}  slow ${s.slowFound}  ${s.state}`;
}
