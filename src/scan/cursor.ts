// The scan cursor: where the background scan of one device is and what it found, the commands that move it
// (start, pause, resume, stop, advance), and its progress. Pure values: persisting is cursor-codec.ts and
// scan-file.ts.
//
// States: idle (no pass under way: never started, or stopped), running, paused, done (the last pass read the
// whole device; it stays done until the next start). `position` is the byte offset up to which the current
// pass has read everything (the scan's sequential front), `startedAt` when the current or last pass started,
// `finishedAt` when the last finished pass finished (kept across later passes: the schedule counts from it),
// `pass` how many passes were started, `errorsFound` and `slowFound` what the current or last pass found.
import * as z from 'zod';
import { DmrError } from '../errors.js';
import { MAX_SCAN_RATE_MIB } from './settings.js';

export const SCAN_STATES = ['idle', 'running', 'paused', 'done'] as const;
export type ScanState = (typeof SCAN_STATES)[number];

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const time = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable();

/** The decoded cursor, with the rules that tie its fields together. */
export const scanCursorSchema = z
  .strictObject({
    state: z.enum(SCAN_STATES),
    /** Bytes of the device the current pass has read, from 0 (a multiple of nothing in particular). */
    position: count,
    /** The size of the device the cursor belongs to, bytes (> 0). */
    deviceBytes: count.min(1),
    /** ms since the epoch. */
    startedAt: time,
    finishedAt: time,
    pass: z.number().int().min(0).max(0xffffffff),
    errorsFound: count,
    slowFound: count,
    /** The pass's ceiling in MiB/s given by `scan start --rate` (kept across restarts), null: scan_rate_mib. */
    rateMib: z.number().positive().max(MAX_SCAN_RATE_MIB).nullable(),
  })
  .superRefine((c, ctx) => {
    const bad = (message: string): void => {
      ctx.addIssue({ code: 'custom', message });
    };
    if (c.position > c.deviceBytes) bad(`position ${c.position} is beyond the device (${c.deviceBytes} bytes)`);
    if (c.pass === 0 && (c.state !== 'idle' || c.startedAt !== null || c.finishedAt !== null)) {
      bad('a cursor with no pass started must be idle, with no start or finish time');
    }
    switch (c.state) {
      case 'idle':
        if (c.position !== 0) bad('an idle cursor must be at position 0');
        break;
      case 'running':
      case 'paused':
        if (c.startedAt === null) bad(`a ${c.state} cursor must have a start time`);
        if (c.position >= c.deviceBytes) bad(`a ${c.state} cursor must be before the end of the device`);
        break;
      case 'done':
        if (c.position !== c.deviceBytes) bad('a done cursor must be at the end of the device');
        if (c.startedAt === null || c.finishedAt === null) bad('a done cursor must have start and finish times');
        else if (c.finishedAt < c.startedAt) bad('a done cursor cannot finish before it started');
        break;
    }
  });
export type ScanCursor = z.output<typeof scanCursorSchema>;

/** What a stretch of the scan found. */
export interface ScanFindings {
  errors: number;
  slow: number;
}

const stateError = (message: string): DmrError => new DmrError('E_SCAN_STATE', message);

/** A device's cursor before any scan. */
export function newCursor(deviceBytes: number): ScanCursor {
  return scanCursorSchema.parse({
    state: 'idle',
    position: 0,
    deviceBytes,
    startedAt: null,
    finishedAt: null,
    pass: 0,
    errorsFound: 0,
    slowFound: 0,
    rateMib: null,
  });
}

/** `start`: a new pass from byte 0. Refused (E_SCAN_STATE) while one runs or is paused. */
export function startPass(c: ScanCursor, nowMs: number, rateMib: number | null = null): ScanCursor {
  if (c.state === 'running') throw stateError('a scan is already running');
  if (c.state === 'paused') throw stateError('a scan is paused: resume it, or stop it before starting a new one');
  return { ...c, state: 'running', position: 0, startedAt: nowMs, pass: c.pass + 1, errorsFound: 0, slowFound: 0, rateMib };
}

/** `pause`: only a running scan. */
export function pausePass(c: ScanCursor): ScanCursor {
  if (c.state !== 'running') throw stateError(`no scan is running (the scan is ${c.state})`);
  return { ...c, state: 'paused' };
}

/** `resume`: only a paused scan. */
export function resumePass(c: ScanCursor): ScanCursor {
  if (c.state !== 'paused') throw stateError(`no scan is paused (the scan is ${c.state})`);
  return { ...c, state: 'running' };
}

/** `stop`: abandons the running or paused pass (idle, position 0; what it found stays until the next start). */
export function stopPass(c: ScanCursor): ScanCursor {
  if (c.state !== 'running' && c.state !== 'paused') throw stateError(`no scan is running or paused (the scan is ${c.state})`);
  return { ...c, state: 'idle', position: 0 };
}

/**
 * The running pass has read everything up to `position` and found `found` on the way; reaching the end of
 * the device finishes the pass (done, finishedAt = nowMs). The front never moves back (a block skipped and
 * revisited later does not move it). E_SCAN_STATE unless running; E_INTERNAL for a position that is not
 * ahead of the cursor or beyond the device.
 */
export function advancePass(c: ScanCursor, position: number, nowMs: number, found: ScanFindings = { errors: 0, slow: 0 }): ScanCursor {
  if (c.state !== 'running') throw stateError(`the scan is not running (it is ${c.state})`);
  if (!Number.isSafeInteger(position) || position < c.position || position > c.deviceBytes) {
    throw new DmrError('E_INTERNAL', `scan position ${position} is not between the cursor (${c.position}) and the end of the device (${c.deviceBytes})`);
  }
  if (!Number.isSafeInteger(found.errors) || !Number.isSafeInteger(found.slow) || found.errors < 0 || found.slow < 0) {
    throw new DmrError('E_INTERNAL', `scan findings must be whole numbers >= 0: ${JSON.stringify(found)}`);
  }
  const next: ScanCursor = { ...c, position, errorsFound: c.errorsFound + found.errors, slowFound: c.slowFound + found.slow };
  return position === c.deviceBytes ? { ...next, state: 'done', finishedAt: Math.max(nowMs, c.startedAt ?? nowMs) } : next;
}

/** Progress for `scan=` and --json: whole percent, 100 only once the pass is done, 0 when idle. */
export function progressPercent(c: ScanCursor): number {
  if (c.state === 'done') return 100;
  if (c.state === 'idle') return 0;
  return Math.min(99, Math.floor((c.position * 100) / c.deviceBytes));
}

/** Seconds left at `rateBps`, or null when nothing is under way or the rate is 0. */
export function etaSeconds(c: ScanCursor, rateBps: number): number | null {
  if ((c.state !== 'running' && c.state !== 'paused') || !(rateBps > 0)) return null;
  return Math.ceil((c.deviceBytes - c.position) / rateBps);
}
