// Logging: pino, JSON lines to a file or to stderr. A daemon in the foreground with a terminal on stderr
// gets readable lines instead ("12:00:01.234 INFO  device live  devId=0 blockPath=/dev/ublkb0").
import pino, { type Logger, type DestinationStream } from 'pino';

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

/** Formats one pino JSON line as "HH:MM:SS.mmm LEVEL message  key=value ...". */
export function formatPretty(line: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.endsWith('\n') ? line : `${line}\n`;
  }
  const time = typeof rec.time === 'number' ? new Date(rec.time).toISOString().slice(11, 23) : '';
  const level = (LEVEL_NAMES[Number(rec.level)] ?? String(rec.level)).padEnd(5);
  const fields = Object.entries(rec)
    .filter(([k]) => !OMITTED.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  const msg = typeof rec.msg === 'string' ? rec.msg : '';
  return `${time} ${level} ${msg}${fields ? `  ${fields}` : ''}\n`;
}

export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? 'info';
  const base = { level, base: { pid: process.pid } };
  if (opts.file !== undefined) {
    return pino(base, pino.destination({ dest: opts.file, sync: true, mkdir: true, append: true }));
  }
  const out = opts.stderr ?? process.stderr;
  const stream: DestinationStream = opts.pretty
    ? { write: (s: string) => void out.write(formatPretty(s)) }
    : opts.stderr
      ? { write: (s: string) => void out.write(s) }
      : pino.destination({ fd: 2, sync: true });
  return pino(base, stream);
}
