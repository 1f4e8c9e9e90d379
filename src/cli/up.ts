// `dmremap-ublk up [name...]` brings up every recorded device (src/service/records.ts) that is not running:
// a running one is left alone ("already up"), a quiesced one (its daemon died, the kernel holds its I/O) is
// recovered, any other is added from its record; a missing or changed disk is reported and skipped, and the
// others still come up. `down [name...]` stops recorded running devices as `del` does, keeping the records;
// a device whose block device is in use (mounted, held, swap) is refused as del refuses it (E_DEVICE_IN_USE,
// unless --force), checked before its unit is stopped: its line fails, the other devices still go down.
// One line per device (or per record that does not parse, by file name with the reason); exit 1 if any failed.
// `up --foreground <name>` runs one device's daemon in this process: the systemd unit's ExecStart.
import { findTarget, readEntries } from '../control/registry.js';
import { DmrError, toDmrError } from '../errors.js';
import { runDir } from '../paths.js';
import { disksProblem, flagsFromRecord, notRecordedDevice, quiescedTableProblem } from '../service/define.js';
import { instanceUnit, systemctl, unitManaged } from '../service/systemd.js';
import { devicesDir, listRecords, readRecord, type DeviceRecord, type InvalidRecord } from '../service/records.js';
import { printJson, PROG, type CliContext } from './context.js';
import type { DelFlags, UpFlags } from './schemas.js';

export type UpResult = 'up' | 'already-up' | 'recovered' | 'down' | 'not-running' | 'failed' | 'invalid';

export interface DeviceLine {
  name: string | null;
  /** The record file (set for every line; the only thing an invalid record has). */
  record: string;
  result: UpResult;
  blockPath: string | null;
  devId: number | null;
  error: { code: string; message: string } | null;
}

const FAILED: readonly UpResult[] = ['failed', 'invalid'];

/** The records `names` select (all when none given); a name with no record is a failed line, an invalid record an invalid one. */
function selected(ctx: CliContext, names: string[]): { records: DeviceRecord[]; lines: DeviceLine[] } {
  const dir = devicesDir(ctx.env);
  const { valid, invalid } = listRecords(dir);
  const bad = (i: InvalidRecord): DeviceLine => ({ name: null, record: i.file, result: 'invalid', blockPath: null, devId: null, error: { code: 'E_RECORD', message: i.reason } });
  if (names.length === 0) return { records: valid, lines: invalid.map(bad) };
  const records: DeviceRecord[] = [];
  const lines: DeviceLine[] = [];
  for (const name of names) {
    const r = valid.find((v) => v.name === name);
    if (r !== undefined) {
      records.push(r);
      continue;
    }
    const inv = invalid.find((i) => i.file.endsWith(`/${name}.json`));
    if (inv !== undefined) lines.push({ ...bad(inv), name });
    else lines.push({ name, record: `${dir}/${name}.json`, result: 'failed', blockPath: null, devId: null, error: { code: 'E_NOT_FOUND', message: `no device record named ${JSON.stringify(name)} in ${dir}` } });
  }
  return { records, lines };
}

/** Runs a command that prints its --json result, and returns that result (its output is not the user's). */
async function quietly<T>(ctx: CliContext, run: (sub: CliContext) => Promise<number>): Promise<T> {
  let out = '';
  const sub: CliContext = { ...ctx, stdout: { write: (s: string) => (out += s) }, stderr: { write: () => true } };
  await run(sub);
  return JSON.parse(out.trim().split('\n').pop() ?? 'null') as T;
}

interface ReadyJson {
  devId: number;
  blockPath: string;
}

async function upOne(ctx: CliContext, record: DeviceRecord): Promise<DeviceLine> {
  const base = { name: record.name, record: `${devicesDir(ctx.env)}/${record.name}.json` };
  try {
    const { live, quiesced } = readEntries(runDir(ctx.env));
    const running = findTarget(live, record.name);
    if (running !== null) {
      const other = notRecordedDevice(record, running);
      if (other !== null) throw other;
      return { ...base, result: 'already-up', blockPath: running.blockPath, devId: running.devId, error: null };
    }
    const waiting = findTarget(quiesced, record.name);
    if (waiting !== null) {
      const other = notRecordedDevice(record, waiting) ?? quiescedTableProblem(record, waiting);
      if (other !== null) throw other;
    }
    // An enabled unit runs the device (its `up --foreground` adds or recovers it): systemd is its only manager.
    if (unitManaged(ctx.env, record.name)) return startUnit(ctx, record, base, waiting !== null);
    if (waiting !== null) {
      const { runRecover } = await import('./recover.js');
      try {
        const r = await quietly<ReadyJson>(ctx, (sub) => runRecover(sub, String(waiting.devId), { foreground: false, logFile: null, json: true }));
        return { ...base, result: 'recovered', blockPath: r.blockPath, devId: r.devId, error: null };
      } catch (e) {
        // Its supervisor (or unit) recovered it first: it is up, which is what was asked.
        if (!(e instanceof DmrError && e.code === 'E_DEVICE_LIVE')) throw e;
        return { ...base, result: 'already-up', blockPath: waiting.blockPath, devId: waiting.devId, error: null };
      }
    }
    const problem = disksProblem(record);
    if (problem !== null) throw problem;
    const { runDetached, withPolicy } = await import('./add.js');
    const flags = withPolicy(ctx.env, { ...flagsFromRecord(record, false), json: true });
    const r = await quietly<ReadyJson>(ctx, (sub) => runDetached(sub, flags));
    return { ...base, result: 'up', blockPath: r.blockPath, devId: r.devId, error: null };
  } catch (e) {
    const err = toDmrError(e);
    return { ...base, result: 'failed', blockPath: null, devId: null, error: { code: err.code, message: err.message } };
  }
}

/**
 * `systemctl start dmremap-ublk@<name>.service` (Type=notify: it returns once the daemon reported the device
 * live, or failed) and the device it brought up.
 */
function startUnit(ctx: CliContext, record: DeviceRecord, base: Pick<DeviceLine, 'name' | 'record'>, quiesced: boolean): DeviceLine {
  // A quiesced device's table was checked already (upOne: quiescedTableProblem); the unit's command checks again.
  const problem = quiesced ? null : disksProblem(record);
  if (problem !== null) throw problem;
  const unit = instanceUnit(record.name);
  systemctl(ctx.env).run(['start', unit]);
  const e = findTarget(readEntries(runDir(ctx.env)).live, record.name);
  if (e === null) throw new DmrError('E_SYSTEMD', `systemctl start ${unit} returned, but ${record.name} is not running (journalctl -u ${unit})`);
  return { ...base, result: quiesced ? 'recovered' : 'up', blockPath: e.blockPath, devId: e.devId, error: null };
}

async function downOne(ctx: CliContext, record: DeviceRecord, force: boolean): Promise<DeviceLine> {
  const base = { name: record.name, record: `${devicesDir(ctx.env)}/${record.name}.json` };
  try {
    const { live, quiesced } = readEntries(runDir(ctx.env));
    const served = findTarget(live, record.name);
    const entry = served ?? findTarget(quiesced, record.name);
    if (entry === null) {
      // Nothing runs, but its unit may be waiting to restart it: stop that too.
      if (unitManaged(ctx.env, record.name)) systemctl(ctx.env).run(['stop', instanceUnit(record.name)]);
      return { ...base, result: 'not-running', blockPath: null, devId: null, error: null };
    }
    const other = notRecordedDevice(record, entry);
    if (other !== null) throw other;
    // Before anything stops: a unit's stop would delete the device under its users.
    const { refuseInUse, runDel } = await import('./del.js');
    refuseInUse(ctx, entry.devId, entry.blockPath, entry.name, force, served !== null);
    // Under systemd the unit goes first: stopping it deletes a device its daemon serves, and cancels a
    // pending Restart=on-failure that would otherwise add the device back once del is done.
    if (unitManaged(ctx.env, record.name)) systemctl(ctx.env).run(['stop', instanceUnit(record.name)]);
    const after = readEntries(runDir(ctx.env));
    const left = findTarget(after.live, record.name) ?? findTarget(after.quiesced, record.name);
    if (left !== null) {
      await quietly(ctx, (sub) => runDel(sub, String(left.devId), { json: true, force }));
    }
    return { ...base, result: 'down', blockPath: entry.blockPath, devId: entry.devId, error: null };
  } catch (e) {
    const err = toDmrError(e);
    return { ...base, result: 'failed', blockPath: null, devId: null, error: { code: err.code, message: err.message } };
  }
}

const WORDS: Record<UpResult, string> = {
  up: 'up',
  'already-up': 'already up',
  recovered: 'recovered',
  down: 'down',
  'not-running': 'not running',
  failed: 'failed',
  invalid: 'invalid record',
};

function print(ctx: CliContext, json: boolean, lines: DeviceLine[]): number {
  if (json) printJson(ctx, lines);
  else if (lines.length === 0) ctx.stdout.write('no recorded devices\n');
  for (const l of json ? [] : lines) {
    const who = l.result === 'invalid' ? l.record : (l.name ?? l.record);
    const where = l.blockPath !== null ? ` ${l.blockPath}` : '';
    const why = l.error !== null ? `: ${l.error.message}` : '';
    ctx.stdout.write(`${who}: ${WORDS[l.result]}${where}${why}\n`);
  }
  return lines.some((l) => FAILED.includes(l.result)) ? 1 : 0;
}

export async function runUp(ctx: CliContext, names: string[], flags: UpFlags): Promise<number> {
  if (flags.foreground) return upForeground(ctx, names, flags.json);
  const { records, lines } = selected(ctx, names);
  // One after another: each waits for its daemon's readiness, and a disk's failure holds up no other.
  for (const r of records) lines.push(await upOne(ctx, r));
  return print(ctx, flags.json, lines);
}

export async function runDown(ctx: CliContext, names: string[], flags: DelFlags): Promise<number> {
  const { records, lines } = selected(ctx, names);
  for (const r of records) lines.push(await downOne(ctx, r, flags.force));
  return print(ctx, flags.json, lines);
}

/**
 * The systemd unit's main process: serves the recorded device `name` in this process, recovering it when it is
 * quiesced (a restarted unit after its daemon died) and adding it otherwise. A device that already runs under
 * another daemon is refused (E_ALREADY_UP, exit 73, which the unit does not restart on): the unit does not take
 * over a device started by hand.
 */
async function upForeground(ctx: CliContext, names: string[], json: boolean): Promise<number> {
  if (names.length !== 1) throw new DmrError('E_USAGE', `up --foreground takes one device name, got ${names.length}`);
  const name = names[0] as string;
  const record = readRecord(devicesDir(ctx.env), name);
  if (record === null) throw new DmrError('E_NOT_FOUND', `no device record named ${JSON.stringify(name)} in ${devicesDir(ctx.env)}`);
  const { live, quiesced } = readEntries(runDir(ctx.env));
  const running = findTarget(live, name);
  if (running !== null) {
    const other = notRecordedDevice(record, running);
    if (other !== null) throw new DmrError('E_ALREADY_UP', other.message);
    throw new DmrError('E_ALREADY_UP', `${name} is already up (${running.blockPath}, daemon pid ${running.pid}, not run by this command): "${PROG} down ${name}" first`);
  }
  const waiting = findTarget(quiesced, name);
  if (waiting !== null) {
    const other = notRecordedDevice(record, waiting) ?? quiescedTableProblem(record, waiting);
    if (other !== null) throw other;
    const { runRecover } = await import('./recover.js');
    return runRecover(ctx, String(waiting.devId), { foreground: true, logFile: null, json });
  }
  const problem = disksProblem(record);
  if (problem !== null) throw problem;
  const { runForeground, withPolicy } = await import('./add.js');
  return runForeground(ctx, withPolicy(ctx.env, { ...flagsFromRecord(record, true), json }));
}
