// `dmremap-ublk enable <dev|id|name>` records a running (or quiesced) device's definition in devices.d so that
// `up` (and systemd, when its units are installed) brings it back after a reboot; `disable <dev|name>` removes
// the record (the device keeps running). `add --persist` records the device it adds (persistAdded).
import { request } from '../control/client.js';
import { findTarget, notFound, readEntries, type RegistryEntry } from '../control/registry.js';
import { TABLE_UUID_RE } from '../device/table-uuid.js';
import { DmrError, toDmrError } from '../errors.js';
import { runDir } from '../paths.js';
import { checkRecord, recordFromEntry, recordFromFlags, saveRecord, tableUuidFor, type ServedTable, type TableUuidChoice } from '../service/define.js';
import { devicesDir, isRecordName, readRecord, recordPath, removeRecord, type DeviceRecord } from '../service/records.js';
import { diskDir } from '../service/stable-path.js';
import { instanceUnit, systemctl, unitDir, unitsInstalled } from '../service/systemd.js';
import { printJson, PROG, type CliContext } from './context.js';
import type { AddFlags } from './schemas.js';

/** What enabling did about systemd: enabled the unit, or why not (and how the device comes back instead). */
export interface SystemdOutcome {
  unit: string;
  enabled: boolean;
  note: string | null;
  /**
   * Why `systemctl enable` failed, when it did: the record is written and the device runs, so this is a
   * warning (stderr, and here in --json), not a failure; "systemctl enable <unit>" by hand finishes it.
   */
  warning: string | null;
}

function hookSystemd(ctx: CliContext, name: string, on: boolean): SystemdOutcome {
  const unit = instanceUnit(name);
  const ctl = systemctl(ctx.env);
  if (!unitsInstalled(unitDir(ctx.env))) {
    return { unit, enabled: false, note: on ? `the systemd units are not installed (${PROG} install-systemd): "${PROG} up" brings the device back` : null, warning: null };
  }
  if (!ctl.running) {
    return { unit, enabled: false, note: on ? `systemd is not running: "${PROG} up" brings the device back (or "systemctl enable ${unit}" once it runs)` : null, warning: null };
  }
  if (!on) {
    // disable: a failure stops it before the record is removed (nothing changed).
    ctl.run(['disable', unit]);
    return { unit, enabled: false, note: null, warning: null };
  }
  try {
    ctl.run(['enable', unit]);
  } catch (e) {
    if (!(e instanceof DmrError && e.code === 'E_SYSTEMD')) throw e;
    return { unit, enabled: false, note: null, warning: `${e.message}: the device is recorded and "${PROG} up" brings it back; "systemctl enable ${unit}" to have systemd do it` };
  }
  return { unit, enabled: true, note: null, warning: null };
}

function report(ctx: CliContext, json: boolean, verb: 'enabled' | 'disabled', record: Pick<DeviceRecord, 'name'>, file: string, sd: SystemdOutcome, extra: object = {}): void {
  if (sd.warning !== null) ctx.stderr.write(`${PROG}: warning: ${record.name}: ${sd.warning}\n`);
  if (json) {
    printJson(ctx, { name: record.name, record: file, [verb]: true, systemd: sd, ...extra });
    return;
  }
  const how = sd.unit !== '' && verb === 'enabled' && sd.enabled ? ` (systemd: ${sd.unit} enabled)` : '';
  ctx.stdout.write(`${record.name}: ${verb}, record ${file}${how}\n`);
  if (sd.note !== null) ctx.stdout.write(`${record.name}: ${sd.note}\n`);
}

/** Where a record's main or spare had no stable link: the record keeps the path given, and says so. */
function warnUnstable(ctx: CliContext, record: DeviceRecord): void {
  for (const [role, b] of [['main', record.main], ['spare', record.spare]] as const) {
    if (b.kind === 'as-given') ctx.stderr.write(`${PROG}: warning: ${record.name}: ${role} ${b.path} has no /dev/disk link with a stable identity: recorded as given\n`);
  }
}

/**
 * `record` with the table UUID tableUuidFor chose (the running daemon's `served` table; the one recorded
 * before kept otherwise), its notes and warnings written to stderr, one line each. Checks `record` first
 * (saveRecord's refusals: nothing read, nothing said).
 */
function withTable(ctx: CliContext, record: DeviceRecord, served: ServedTable): { record: DeviceRecord; table: TableUuidChoice } {
  const dir = devicesDir(ctx.env);
  checkRecord(dir, record);
  const { tableUuid: _none, ...rest } = record;
  const table = tableUuidFor(record.name, served, readRecord(dir, record.name)?.tableUuid, record.spare.path, record.spareOffset);
  for (const n of table.notes) ctx.stderr.write(`${PROG}: ${record.name}: ${n}\n`);
  for (const w of table.warnings) ctx.stderr.write(`${PROG}: warning: ${record.name}: ${w}\n`);
  return { record: table.tableUuid === null ? rest : { ...rest, tableUuid: table.tableUuid }, table };
}

/** The table `e`'s daemon serves: its status reply's pairId; or why there is none (quiesced, no answer). */
async function servedTable(e: RegistryEntry, live: boolean): Promise<ServedTable> {
  if (!live) return { none: 'its daemon is gone, the device waits quiesced' };
  try {
    const s = await request(e.socket, 'status', {});
    if (s.devId !== e.devId) return { none: `its socket answered for device ${s.devId}` };
    if (!TABLE_UUID_RE.test(s.remap.pairId)) return { none: `its daemon reported table ${JSON.stringify(s.remap.pairId)}` };
    return { uuid: s.remap.pairId };
  } catch (err) {
    return { none: toDmrError(err).message };
  }
}

export async function runEnable(ctx: CliContext, target: string, json: boolean): Promise<number> {
  const { live, quiesced } = readEntries(runDir(ctx.env));
  const running = findTarget(live, target);
  const entry = running ?? findTarget(quiesced, target);
  if (entry === null) throw notFound(target);
  const { record, table } = withTable(ctx, recordFromEntry(entry, diskDir(ctx.env)), await servedTable(entry, running !== null));
  const file = saveRecord(devicesDir(ctx.env), record);
  warnUnstable(ctx, record);
  report(ctx, json, 'enabled', record, file, hookSystemd(ctx, record.name, true), { main: record.main.path, spare: record.spare.path, tableUuid: table.tableUuid, tableUuidFrom: table.from });
  return 0;
}

/** disable takes a recorded name, or a running device (path, id) whose name is recorded. */
export async function runDisable(ctx: CliContext, target: string, json: boolean): Promise<number> {
  const dir = devicesDir(ctx.env);
  let name = target;
  if (!isRecordName(target) || readRecordOrNull(dir, target) === null) {
    const { live, quiesced } = readEntries(runDir(ctx.env));
    const entry = findTarget(live, target) ?? findTarget(quiesced, target);
    if (entry === null || entry.name === null) throw notFound(target);
    name = entry.name;
  }
  const file = recordPath(dir, name);
  const sd = hookSystemd(ctx, name, false);
  if (!removeRecord(dir, name)) throw notFound(name);
  report(ctx, json, 'disabled', { name }, file, sd);
  return 0;
}

/** The record of `name` if `name` is a record name and it exists (a bad record still counts: disable removes it). */
function readRecordOrNull(dir: string, name: string): object | null {
  try {
    return readRecord(dir, name);
  } catch {
    return {};
  }
}

/** Checks what `add --persist` will record, before anything is started (bad input changes nothing). */
export function persistPlan(ctx: CliContext, flags: AddFlags): DeviceRecord {
  const record = recordFromFlags(flags, diskDir(ctx.env));
  checkRecord(devicesDir(ctx.env), record);
  return record;
}

/**
 * After the device is live: writes its record (and enables its unit where systemd runs with the units
 * installed); says so on stderr (add's stdout is the device path). Returns the record file and the unit's fate.
 */
export function persistAdded(ctx: CliContext, planned: DeviceRecord, pairId: string | undefined): { record: string; systemd: SystemdOutcome; tableUuid: string | null } {
  // The table the new daemon opened (or formatted), as its readiness line names it: the record names it (`up`
  // refuses another).
  const served: ServedTable = pairId !== undefined ? { uuid: pairId } : { none: 'its readiness line named no table' };
  const { record, table } = withTable(ctx, planned, served);
  const file = saveRecord(devicesDir(ctx.env), record);
  warnUnstable(ctx, record);
  const sd = hookSystemd(ctx, record.name, true);
  ctx.stderr.write(`${PROG}: ${record.name}: recorded in ${file}${sd.enabled ? ` (systemd: ${sd.unit} enabled)` : ''}\n`);
  if (sd.note !== null) ctx.stderr.write(`${PROG}: ${record.name}: ${sd.note}\n`);
  if (sd.warning !== null) ctx.stderr.write(`${PROG}: warning: ${record.name}: ${sd.warning}\n`);
  return { record: file, systemd: sd, tableUuid: table.tableUuid };
}
