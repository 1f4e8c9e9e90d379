// The human output of `dmremap-ublk health`, in the style of `zpool status`: the state, the score, the
// reasons one per line, the action, the forecast; with --history the series day by day. Pure: the CLI
// prints what these return.
import type { HealthDay, HealthResult } from '../control/protocol.js';
import { formatDuration } from './words.js';

const label = (name: string): string => `${name.padStart(8)}: `;
const INDENT = ' '.repeat(10);

/** One line of the forecast: when the spare runs out, and whether new bad blocks are accelerating. */
export function describeForecast(f: HealthResult['forecast']): string {
  const parts: string[] = [];
  if (f.spareExhaustionSeconds === null || f.range === null) {
    parts.push('none yet (too few new bad blocks to see a trend)');
  } else if (f.spareExhaustionSeconds === 0) {
    parts.push('the spare is full');
  } else {
    const [lo, hi] = f.range;
    const high = hi >= Number.MAX_VALUE / 2 ? 'longer' : formatDuration(hi);
    parts.push(`the spare lasts about ${formatDuration(f.spareExhaustionSeconds)} (${formatDuration(lo)} to ${high}) at ${f.ratePerDay.toFixed(1)} new bad blocks a day`);
  }
  if (f.acceleration) parts.push('new bad blocks are accelerating');
  return parts.join('; ');
}

export function describeHealth(h: HealthResult): string {
  const lines: string[] = [];
  lines.push(`${label('device')}${h.device}${h.name !== null ? ` (${h.name})` : ''}`);
  lines.push(`${label('state')}${h.state}`);
  lines.push(`${label('score')}${h.score}`);
  const reasons = h.reasons.map((r) => `${r.sentence} [${r.state}, -${r.weight}]`);
  if (h.recordError !== null) reasons.unshift(`the saved health history cannot be used, this run's events only: ${h.recordError}`);
  if (reasons.length === 0) reasons.push('no new bad block and no error in the watch window');
  reasons.forEach((r, i) => lines.push(`${i === 0 ? label('reason') : INDENT}${r}`));
  lines.push(`${label('action')}${h.action}`);
  lines.push(`${label('forecast')}${describeForecast(h.forecast)}`);
  lines.push(`${label('since')}${new Date(h.since).toISOString()}`);
  let out = `${lines.join('\n')}\n`;
  if (h.history !== undefined) out += `\n${describeHistory(h.history)}`;
  return out;
}

const HISTORY_COLUMNS = ['day', 'bad auto/scan/manual', 'pending', 'read err', 'write err', 'recovered', 'slow', 'spare err r/w', 'outages', 'spare used'] as const;

/** The series day by day: one row per UTC day with events, oldest first. */
export function describeHistory(days: readonly HealthDay[]): string {
  if (days.length === 0) return 'history: no day with events yet\n';
  const rows: string[][] = days.map((d) => {
    const c = d.counts;
    return [
      d.day,
      `${c.badAuto}/${c.badScan}/${c.badManual}`,
      String(c.pending),
      String(c.readErrors),
      String(c.writeErrors),
      String(c.recoveredReads),
      String(c.slowIos),
      `${c.spareReadErrors}/${c.spareWriteErrors}`,
      c.outages > 0 || c.outageSeconds > 0 ? `${c.outages} (${formatDuration(c.outageSeconds)})` : '0',
      d.spare === null ? '-' : `${d.spare.used}/${d.spare.slots}`,
    ];
  });
  const all = [[...HISTORY_COLUMNS], ...rows];
  const widths = HISTORY_COLUMNS.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((x, i) => x.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n';
}
