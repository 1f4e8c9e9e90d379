// `dmremap-ublk list`: the devices in the registry. A running one is pinged over its control socket
// ("running" or "unresponsive"); one whose daemon died is "quiesced" while the kernel keeps its device (with
// the reason, see quiesced.ts), else "orphaned" until `del` cleans the entry up. A registry file this version
// cannot parse is "invalid: <why>" (never left out: its main and spare stay taken until `del <id>`).
import { request } from '../control/client.js';
import { readEntries, type RegistryEntry } from '../control/registry.js';
import { runDir } from '../paths.js';
import { nameDir, stableNameOf } from '../device/stable-name.js';
import { printJson, type CliContext } from './context.js';
import { table } from './format.js';
import { quiescedView } from './quiesced.js';
import { supervisorOf } from '../supervisor/find.js';

const PING_TIMEOUT_MS = 2000;

type State = 'running' | 'unresponsive' | 'quiesced' | 'orphaned' | 'invalid';

async function state(e: RegistryEntry): Promise<State> {
  try {
    await request(e.socket, 'ping', {}, PING_TIMEOUT_MS);
    return 'running';
  } catch {
    return 'unresponsive';
  }
}

export async function runList(ctx: CliContext, json: boolean): Promise<number> {
  const { live, stale, invalid } = readEntries(runDir(ctx.env));
  const links = nameDir(ctx.env);
  const valid = await Promise.all(
    [...live, ...stale].sort((a, b) => a.devId - b.devId).map(async (e) => {
      const q = stale.includes(e) ? quiescedView(e) : null;
      const st: State = q !== null ? 'quiesced' : stale.includes(e) ? 'orphaned' : await state(e);
      return {
        devId: e.devId,
        name: e.name,
        blockPath: e.blockPath,
        /** /dev/dmremap/<name> when it points at this device, else null. */
        stableName: stableNameOf(links, e.name, e.blockPath),
        main: e.main.path,
        spare: e.spare.path,
        pid: e.pid,
        startedAt: e.startedAt,
        state: st,
        /** The supervisor that restarts this daemon (its parent), or null (--foreground, or no daemon). */
        supervisorPid: st === 'running' || st === 'unresponsive' ? supervisorOf(e.pid) : null,
        /** Why a quiesced device has no daemon; null otherwise. */
        reason: q?.reason ?? null,
      };
    }),
  );
  const broken = invalid.map((e) => ({
    devId: e.devId,
    name: e.name,
    blockPath: e.blockPath ?? `(device ${e.devId})`,
    stableName: e.blockPath === null ? null : stableNameOf(links, e.name, e.blockPath),
    main: e.main?.path ?? null,
    spare: e.spare?.path ?? null,
    pid: e.pid,
    startedAt: null,
    state: 'invalid' as State,
    supervisorPid: null,
    reason: `${e.file}: ${e.reason}`,
  }));
  const rows = [...valid, ...broken].sort((a, b) => a.devId - b.devId);
  if (json) {
    printJson(ctx, rows);
  } else if (rows.length === 0) {
    ctx.stdout.write('no dmremap-ublk devices\n');
  } else {
    const cells = rows.map((r) => [r.blockPath, r.name ?? '-', r.stableName ?? '-', r.main ?? '-', r.spare ?? '-', String(r.pid ?? '-'), r.reason === null ? r.state : `${r.state}: ${r.reason}`]);
    ctx.stdout.write(table([['DEVICE', 'NAME', 'LINK', 'MAIN', 'SPARE', 'PID', 'STATE'], ...cells]));
  }
  return 0;
}
