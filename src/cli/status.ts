// `dmremap-ublk status <device>`: asks the device's daemon for its status over the control socket.
import { request } from '../control/client.js';
import { readEntries, resolveTarget } from '../control/registry.js';
import { runDir } from '../paths.js';
import { printJson, type CliContext } from './context.js';
import { formatStatus } from './format.js';

export async function runStatus(ctx: CliContext, target: string, json: boolean): Promise<number> {
  const entry = resolveTarget(readEntries(runDir(ctx.env)).live, target);
  const status = await request(entry.socket, 'status', {});
  if (json) printJson(ctx, status);
  else ctx.stdout.write(formatStatus(status));
  return 0;
}
