// The refusals of a new device that can be known before it exists: main and spare validated and claimed
// (validate.ts, claim.ts), the spare region checked for what it holds (signatures.ts). The daemon runs them
// as it starts; `add` runs them first (precheckDevice) so that bad input is refused before a daemon starts.
// This module imports neither the daemon nor the logger: a refused `add` does not wait for them to load.
import type { Occupant } from '../control/registry.js';
import type { Logger } from '../log.js';
import type { NativeAddon } from '../native.js';
import { ClaimedSpareIo } from '../remap/io.js';
import type { DeviceConfig } from './config.js';
import { checkSpareRegion } from './signatures.js';
import { otherTableProblem, readTableId } from './table-uuid.js';
import { planDevice, type DevicePlan } from './validate.js';

/** Where the spare check says what --force-format overwrites. */
export type SpareCheckLog = Pick<Logger, 'warn'>;

/**
 * The claimed spare's I/O, once its region is known to hold nothing it must not overwrite (or --force-format)
 * and, for a device given its table's UUID (`up`), no other table.
 */
export async function checkedSpare(deps: { native: NativeAddon; log: SpareCheckLog }, cfg: DeviceConfig, plan: DevicePlan): Promise<ClaimedSpareIo> {
  const io = new ClaimedSpareIo(deps.native, plan.spare.fd, plan.spare.sizeBytes, plan.spare.path);
  await checkSpareRegion({
    io,
    path: plan.spare.path,
    spareOffset: cfg.spareOffset ?? 0,
    spareSize: cfg.spareSize,
    force: cfg.forceFormat === true,
    log: deps.log,
  });
  // A recorded device's spare must hold its recorded table, not another of the same main: checked before the
  // store reads (and may repair) anything.
  if (cfg.tableUuid !== undefined) {
    const who = cfg.name !== null ? `device ${cfg.name}` : `main ${cfg.mainPath}`;
    const table = await readTableId(io, cfg.spareOffset ?? 0);
    const refusal = otherTableProblem(table, plan.main.path, plan.spare.path, cfg.tableUuid, who);
    if (refusal !== null) throw refusal;
  }
  return io;
}

/** A log that drops what it is given: the check that runs before the daemon has nothing to report. */
const SILENT: SpareCheckLog = { warn: () => undefined };

/**
 * What `add` without --foreground runs before it starts the daemon: every refusal of Daemon.start() that can
 * be known without the kernel device (claims, signatures on the spare), then the claims are released again.
 */
export async function precheckDevice(native: NativeAddon, cfg: DeviceConfig, running: Occupant[]): Promise<void> {
  const plan = planDevice(native, cfg, running);
  try {
    await checkedSpare({ native, log: SILENT }, cfg, plan);
  } finally {
    plan.held.release();
  }
}
