// `dmremap-ublk status <device>`: asks the device's daemon for its status over the control socket.
import { request } from '../control/client.js';
import { findInvalidTarget, findTarget, invalidEntryError, notFound, readEntries, type InvalidEntry, type RegistryEntry } from '../control/registry.js';
import { DmrError } from '../errors.js';
import { runDir } from '../paths.js';
import { printJson, type CliContext } from './context.js';
import { formatStatus } from './format.js';
import { formatQuiesced, quiescedView } from './quiesced.js';

/** No running device by that name: say whether it is an orphan (daemon died), has an invalid entry, or is unknown. */
function notRunning(stale: RegistryEntry[], invalid: InvalidEntry[], target: string): never {
  const orphan = findTarget(stale, target);
  if (orphan === null) {
    const bad = findInvalidTarget(invalid, target);
    throw bad === null ? notFound(target) : invalidEntryError(bad);
  }
  throw new DmrError(
    'E_DAEMON',
    `the daemon of ${orphan.blockPath} is gone (pid ${orphan.pid}); "dmremap-ublk del ${target}" removes the device`,
  );
}

/** The registry entry of the running device `target` names (path, id or name). */
export function liveEntry(ctx: CliContext, target: string): RegistryEntry {
  const { live, stale, invalid } = readEntries(runDir(ctx.env));
  return findTarget(live, target) ?? notRunning(stale, invalid, target);
}

/**
 * A quiesced device (its daemon gone, the kernel holding its I/O) is a state, not an error: exit 0 with
 * state "quiesced", the reason and what to do.
 */
export async function runStatus(ctx: CliContext, target: string, json: boolean): Promise<number> {
  const { live, stale } = readEntries(runDir(ctx.env));
  const dead = findTarget(live, target) === null ? findTarget(stale, target) : null;
  const q = dead === null ? null : quiescedView(dead);
  if (q !== null) {
    if (json) printJson(ctx, q);
    else ctx.stdout.write(formatQuiesced(q));
    return 0;
  }
  const entry = liveEntry(ctx, target);
  const status = await request(entry.socket, 'status', {});
  if (json) printJson(ctx, status);
  else ctx.stdout.write(`${status.remap.line}\n${formatStatus(status)}`);
  return 0;
}
