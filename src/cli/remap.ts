// `dmremap-ublk remap|unremap|verify <device> <sector>`, `table <device>`, `stats <device>` and
// `message <device> <words...>`:
// the remap control messages, sent to the device's daemon over its control socket.
import { request } from '../control/client.js';
import { usageError } from '../errors.js';
import { describeRemap, describeStatsReport, describeTable, describeUnremap, describeVerify } from '../device/remap-control.js';
import { parseSector } from '../numbers.js';
import { printJson, type CliContext } from './context.js';
import { liveEntry } from './status.js';
import { MAX_RECHECK_SECTORS } from '../control/protocol.js';
import { describeRecheck } from '../device/remap-control.js';

export type SectorCommand = 'remap' | 'unremap' | 'verify';

/** `<device> <sector>`: exactly two positionals, the sector in decimal 512-byte sectors. */
export function deviceAndSector(command: SectorCommand, positionals: string[]): { target: string; sector: number } {
  if (positionals.length !== 2) {
    throw usageError(`${command} takes a device and a sector: dmremap-ublk ${command} <device> <sector> (got ${positionals.length} argument(s))`);
  }
  const [target, s] = positionals as [string, string];
  if (target === '') throw usageError(`device to ${command} must not be empty`);
  return { target, sector: parseSector(s) };
}

/** `<device> [<sector>...]`: a device and any number of sectors (none: every lost block). */
export function deviceAndSectors(command: 'recheck', positionals: string[]): { target: string; sectors: number[] } {
  const [target, ...rest] = positionals;
  if (target === undefined || target === '') throw usageError(`${command} takes a device and optional sectors: dmremap-ublk ${command} <device> [<sector>...]`);
  if (rest.length > MAX_RECHECK_SECTORS) throw usageError(`${command} takes at most ${MAX_RECHECK_SECTORS} sectors, got ${rest.length}`);
  return { target, sectors: rest.map((s) => parseSector(s)) };
}

/** `recheck <device> [<sector>...]`: re-reads lost blocks on main; those that read go back to main. */
export async function runRecheck(ctx: CliContext, target: string, sectors: number[], json: boolean): Promise<number> {
  const sock = liveEntry(ctx, target).socket;
  // Every lost block is read on main, one block each: allow for a slow failing disk.
  const r = await request(sock, 'recheck', sectors.length > 0 ? { sectors } : {}, 600_000);
  if (json) printJson(ctx, r);
  else ctx.stdout.write(`${describeRecheck(r)}\n`);
  return 0;
}

export async function runSectorCommand(ctx: CliContext, command: SectorCommand, target: string, sector: number, json: boolean): Promise<number> {
  const sock = liveEntry(ctx, target).socket;
  // A remap copies one block and commits it: well within the default timeout, unless the disk stalls.
  const timeout = 120_000;
  let text: string;
  let out: unknown;
  if (command === 'remap') {
    const r = await request(sock, 'remap', { sector }, timeout);
    out = r;
    text = describeRemap(r);
  } else if (command === 'unremap') {
    const r = await request(sock, 'unremap', { sector }, timeout);
    out = r;
    text = describeUnremap(r);
  } else {
    const r = await request(sock, 'verify', { sector }, timeout);
    out = r;
    text = describeVerify(r);
  }
  if (json) printJson(ctx, out);
  else ctx.stdout.write(`${text}\n`);
  return 0;
}

export async function runTable(ctx: CliContext, target: string, o: { offset?: number; limit?: number; json: boolean }): Promise<number> {
  const sock = liveEntry(ctx, target).socket;
  const args: { offset?: number; limit?: number } = {};
  if (o.offset !== undefined) args.offset = o.offset;
  if (o.limit !== undefined) args.limit = o.limit;
  const t = await request(sock, 'table', args);
  if (o.json) printJson(ctx, t);
  else ctx.stdout.write(`${describeTable(t)}\n`);
  return 0;
}

export async function runStats(ctx: CliContext, target: string, json: boolean): Promise<number> {
  const s = await request(liveEntry(ctx, target).socket, 'stats', {});
  if (json) printJson(ctx, s);
  else ctx.stdout.write(`${describeStatsReport(s)}\n`);
  return 0;
}

export async function runMessage(ctx: CliContext, positionals: string[]): Promise<number> {
  const [target, ...words] = positionals;
  if (target === undefined || target === '') throw usageError('missing device: dmremap-ublk message <device> <words...>');
  if (words.length === 0) throw usageError('missing message: dmremap-ublk message <device> <words...> (e.g. "remap 1234")');
  // One argument holding spaces ("remap 1234") is split like dmsetup message's words.
  const split = words.flatMap((w) => w.split(/\s+/).filter((x) => x !== ''));
  if (split.length === 0) throw usageError('message must not be empty');
  const r = await request(liveEntry(ctx, target).socket, 'message', { words: split }, 120_000);
  ctx.stdout.write(`${r.reply}\n`);
  return 0;
}
