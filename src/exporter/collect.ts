// What the exporter asks each device: `status`, `stats` and `scan` over its control socket, in parallel,
// each bounded by the per-device timeout, and every device at once; a device that does not answer in time
// is down (up 0) and never holds up the scrape. Devices are found as `list` finds them (the registry).
import { request } from '../control/client.js';
import type { DeviceStatus, ScanStatusResult, Stats } from '../control/protocol.js';
import { readEntries } from '../control/registry.js';
import { toDmrError } from '../errors.js';

/** How long one device may take to answer a scrape. */
export const DEVICE_TIMEOUT_MS = 2000;

/** One device as the scrape found it. */
export interface DeviceSnapshot {
  devId: number;
  /** The label `device`: /dev/ublkbN. */
  device: string;
  /** The label `name`: the name given to add, "" without one. */
  name: string;
  main: string | null;
  spare: string | null;
  /** Its daemon answered `status` and `stats`. */
  up: boolean;
  /** Why it is down (logged, not exported); null when up. */
  error: string | null;
  /** How long asking it took. */
  seconds: number;
  status: DeviceStatus | null;
  stats: Stats | null;
  /** null when the daemon refused `scan` (the rest is still exported). */
  scan: ScanStatusResult | null;
}

interface Target {
  devId: number;
  device: string;
  name: string | null;
  main: string | null;
  spare: string | null;
  /** null: no daemon to ask (it died, or its registry file does not parse). */
  socket: string | null;
  /** Why there is no daemon to ask. */
  down: string | null;
}

/** Asks one device, never taking (much) longer than `timeoutMs`. */
export async function collectDevice(t: Target, timeoutMs: number): Promise<DeviceSnapshot> {
  const t0 = performance.now();
  const base = { devId: t.devId, device: t.device, name: t.name ?? '', main: t.main, spare: t.spare };
  const done = (rest: Pick<DeviceSnapshot, 'up' | 'error' | 'status' | 'stats' | 'scan'>): DeviceSnapshot => ({
    ...base,
    ...rest,
    seconds: (performance.now() - t0) / 1000,
  });
  if (t.socket === null) return done({ up: false, error: t.down, status: null, stats: null, scan: null });
  const sock = t.socket;
  const [status, stats, scan] = await Promise.allSettled([
    request(sock, 'status', {}, timeoutMs),
    request(sock, 'stats', {}, timeoutMs),
    request(sock, 'scan', {}, timeoutMs),
  ]);
  if (status.status === 'rejected' || stats.status === 'rejected') {
    const why = status.status === 'rejected' ? status.reason : (stats as PromiseRejectedResult).reason;
    return done({ up: false, error: toDmrError(why).message, status: null, stats: null, scan: null });
  }
  return done({ up: true, error: null, status: status.value, stats: stats.value, scan: scan.status === 'fulfilled' ? scan.value : null });
}

/** Every device in the registry of `runDir`, asked in parallel, sorted by device id. */
export async function collectAll(runDir: string, timeoutMs = DEVICE_TIMEOUT_MS): Promise<DeviceSnapshot[]> {
  const { live, stale, invalid } = readEntries(runDir);
  const targets: Target[] = [
    ...live.map((e) => ({ devId: e.devId, device: e.blockPath, name: e.name, main: e.main.path, spare: e.spare.path, socket: e.socket, down: null })),
    ...stale.map((e) => ({
      devId: e.devId,
      device: e.blockPath,
      name: e.name,
      main: e.main.path,
      spare: e.spare.path,
      socket: null,
      down: `its daemon (pid ${e.pid}) is gone`,
    })),
    ...invalid.map((e) => ({
      devId: e.devId,
      device: e.blockPath ?? `/dev/ublkb${e.devId}`,
      name: e.name,
      main: e.main?.path ?? null,
      spare: e.spare?.path ?? null,
      socket: null,
      down: `its registry file ${e.file} is not valid (${e.reason})`,
    })),
  ];
  const snaps = await Promise.all(targets.map((t) => collectDevice(t, timeoutMs)));
  return snaps.sort((a, b) => a.devId - b.devId);
}
