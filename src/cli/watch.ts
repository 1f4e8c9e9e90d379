// `dmremap-ublk watch <device> [--json]`: the device's events as they happen, from its daemon's `watch`
// subscription: with --json each event's JSON line as the daemon sent it (NDJSON), otherwise one readable
// line each (time, type, a sentence). Runs until SIGINT/SIGTERM (exit 0); the daemon going away is an error.
import { watchEvents } from '../control/watch-client.js';
import type { DeviceEvent } from '../device/device-events.js';
import { formatRate } from '../scan/scan-control.js';
import type { CliContext } from './context.js';
import { formatBytes } from './format.js';
import { liveEntry } from './status.js';

export interface WatchRunOptions {
  /** Aborted on SIGINT/SIGTERM: the watch ends, exit 0. */
  signal?: AbortSignal;
}

export async function runWatch(ctx: CliContext, target: string, json: boolean, opts: WatchRunOptions = {}): Promise<number> {
  const sock = liveEntry(ctx, target).socket;
  await watchEvents(sock, (ev, line) => ctx.stdout.write(json ? `${line}\n` : `${formatEvent(ev)}\n`), opts.signal);
  return 0;
}

const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;

function list(blocks: readonly number[], count: number): string {
  const shown = blocks.join(', ');
  return count > blocks.length ? `${shown}, ...` : shown;
}

/** One readable line: `2026-12-02T09:41:04.123Z remap   block 154 (sector 1232) to slot 0, origin auto`. */
export function formatEvent(ev: DeviceEvent): string {
  return `${new Date(ev.at).toISOString()} ${ev.type.padEnd(7)} ${describeEvent(ev)}`;
}

export function describeEvent(ev: DeviceEvent): string {
  switch (ev.type) {
    case 'remap':
      return `block ${ev.block} (sector ${ev.sector}) to slot ${ev.slot}, origin ${ev.origin}${ev.state === 'lost' ? ', its data lost: reads fail until it is written' : ''}`;
    case 'pending':
      return ev.change === 'added'
        ? `${plural(ev.count, 'block')} pending (unreadable, lost until written): ${list(ev.blocks, ev.count)}`
        : `${plural(ev.count, 'pending block')} cleared (written or read again): ${list(ev.blocks, ev.count)}`;
    case 'burst':
      return `${ev.message}: ${plural(ev.count, ev.unit === 'blocks' ? 'block' : 'sector')}${ev.events > 1 ? ` in ${ev.events} more events` : ''}${ev.blocks.length > 0 ? ` (${list(ev.blocks, ev.count)})` : ''}`;
    case 'health':
      return `${ev.previous} -> ${ev.state} (score ${ev.score}): ${ev.reason}`;
    case 'alarm':
      return `${ev.alarm === 'acceleration' ? 'new bad blocks are accelerating' : 'the spare is forecast to run out soon'}; health ${ev.state} (score ${ev.score}): ${ev.reason}`;
    case 'scan': {
      const where = `${ev.progress}% (${formatBytes(ev.position)} of ${formatBytes(ev.deviceBytes)})`;
      if (ev.previous === null) return `pass ${ev.pass} at ${where}, ${formatRate(ev.rateBps)}, ${plural(ev.errorsFound, 'error')} found`;
      return `${ev.previous} -> ${ev.state}, pass ${ev.pass} at ${where}, ${plural(ev.errorsFound, 'error')} found`;
    }
    case 'outage':
      if (ev.kind === 'read') return ev.phase === 'begin' ? 'main stopped answering: outage began (I/O is held)' : 'main answers again: outage ended';
      return ev.phase === 'begin' ? 'main refuses writes: write outage began (writes are held)' : 'main takes writes again: write outage ended';
    case 'missed':
      return `${plural(ev.count, 'event')} missed (this watcher read too slowly)`;
  }
}
