// Logging: pino, JSON lines to a file or to stderr. A daemon in the foreground with a terminal on stderr
// gets readable lines instead ("12:00:01.234 INFO  device live  devId=0 blockPath=/dev/ublkb0"), with every
// control character in them escaped (terminal-text.ts). A log file can be reopened (reopenLogFile: SIGHUP
// after logrotate moved it away).
import fs from 'node:fs';
import pino, { type Logger, type DestinationStream } from 'pino';
import { escapeControls } from './terminal-text.js';

export type { Logger } from 'pino';

export interface LogOptions {
  /** Append JSON lines to this file; otherwise write to stderr. */
  file?: string | undefined;
  /** Readable lines instead of JSON (only used for stderr). */
  pretty?: boolean;
  /** pino level; 'info' by default (DMREMAP_LOG_LEVEL in the CLI's environment overrides it). */
  level?: string;
  /** Where stderr output goes (tests substitute their own). */
  stderr?: { write(s: string): unknown };
}

const LEVEL_NAMES: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};
const OMITTED = new Set(['level', 'time', 'msg', 'pid', 'hostname']);

/**
 * Formats one pino JSON line as "HH:MM:SS.mmm LEVEL message  key=value ...". The message and every value
 * may come from outside (a path, a kernel error text): control characters in them are escaped, and the
 * line ends in exactly one newline.
 */
export function formatPretty(line: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return `${escapeControls(line.replace(/\n$/, ''))}\n`;
  }
  if (rec === null || typeof rec !== 'object') return `${escapeControls(line.replace(/\n$/, ''))}\n`;
  const time = typeof rec.time === 'number' ? new Date(rec.time).toISOString().slice(11, 23) : '';
  const level = (LEVEL_NAMES[Number(rec.level)] ?? String(rec.level)).padEnd(5);
  const fields = Object.entries(rec)
    .filter(([k]) => !OMITTED.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  const msg = typeof rec.msg === 'string' ? rec.msg : '';
  return `${time} ${escapeControls(level)} ${escapeControls(msg)}${fields ? `  ${escapeControls(fields)}` : ''}\n`;
}

/** The file destination of each logger createLogger made for a file, for reopenLogFile. */
const fileDestinations = new WeakMap<Logger, { fd: number; reopen(file?: string): void }>();

export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? 'info';
  const base = { level, base: { pid: process.pid } };
  if (opts.file !== undefined) {
    const dest = pino.destination({ dest: opts.file, sync: true, mkdir: true, append: true, mode: 0o640 });
    const log = pino(base, dest);
    // SonicBoom keeps its open fd in `fd` (its typings leave it out); a sync destination sets it at (re)open.
    fileDestinations.set(log, dest as typeof dest & { fd: number });
    return log;
  }
  const out = opts.stderr ?? process.stderr;
  const stream: DestinationStream = opts.pretty
    ? { write: (s: string) => void out.write(formatPretty(s)) }
    : opts.stderr
      ? { write: (s: string) => void out.write(s) }
      : pino.destination({ fd: 2, sync: true });
  return pino(base, stream);
}

/** What reopenLogFile did besides reopening: the stdio fds it moved to the new file, and why it could not. */
export interface Reopened {
  /** fd 1 and/or 2: those that wrote to the old log file and now write to the new one. */
  stdio: Array<1 | 2>;
  /** The redirection's error, when it failed (the logger itself writes to the new file all the same). */
  stdioError: string | null;
}

/** Whether two open fds refer to the same file (the same device and inode); false when either is not open. */
function sameFile(a: number, b: number): boolean {
  try {
    const x = fs.fstatSync(a);
    const y = fs.fstatSync(b);
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

/**
 * Reopens the file `log` writes to (by its path: after logrotate renamed it, a new file is created there).
 * The process's stdout and stderr that wrote to the old file (a detached daemon's and supervisor's: what Node
 * or a native abort writes there, outside the logger) are moved to the new one with `redirectStdio`
 * (the addon's dup2); a terminal or the journal on them is left alone. Returns false for a logger that writes
 * to a stream, not a file. Throws what the open throws.
 */
export function reopenLogFile(log: Logger, redirectStdio?: (fd: number, target: 1 | 2) => void): Reopened | false {
  const dest = fileDestinations.get(log);
  if (dest === undefined) return false;
  const follow = ([1, 2] as const).filter((t) => sameFile(dest.fd, t));
  dest.reopen();
  const done: Reopened = { stdio: [], stdioError: null };
  if (redirectStdio === undefined) return done;
  for (const t of follow) {
    try {
      redirectStdio(dest.fd, t);
      done.stdio.push(t);
    } catch (e) {
      done.stdioError = e instanceof Error ? e.message : String(e);
    }
  }
  return done;
}
