// `dmremap-ublk list`: the devices in the registry. A running one is pinged over its control socket
// ("running" or "unresponsive"); one whose daemon died is "orphaned" until `del` cleans it up.
import { request } from '../control/client.js';
import { readEntries, type RegistryEntry } from '../control/registry.js';
import { runDir } from '../paths.js';
import { printJson, type CliContext } from './context.js';
import { table } from './format.js';

const PING_TIMEOUT_MS = 2000;

type State = 'running' | 'unresponsive' | 'orphaned';

async function state(e: RegistryEntry): Promise<State> {
  try {
    await request(e.socket, 'ping', {}, PING_TIMEOUT_MS);
    return 'running';
  } catch {
    return 'unresponsive';
  }
}

export async function runList(ctx: CliContext, json: boolean): Promise<number> {
  const { live, stale } = readEntries(runDir(ctx.env));
  const rows = await Promise.all(
    [...live, ...stale].sort((a, b) => a.devId - b.devId).map(async (e) => ({
      devId: e.devId,
      name: e.name,
      blockPath: e.blockPath,
      main: e.main.path,
      spare: e.spare.path,
      pid: e.pid,
      startedAt: e.startedAt,
      state: stale.includes(e) ? ('orphaned' as const) : await state(e),
    })),
  );
  if (json) {
    printJson(ctx, rows);
  } else if (rows.length === 0) {
    ctx.stdout.write('no dmremap-ublk devices\n');
  } else {
    const cells = rows.map((r) => [r.blockPath, r.name ?? '-', r.main, r.spare, String(r.pid), r.state]);
    ctx.stdout.write(table([['DEVICE', 'NAME', 'MAIN', 'SPARE', 'PID', 'STATE'], ...cells]));
  }
  return 0;
}
