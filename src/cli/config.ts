// `dmremap-ublk config get|set|unset`: the error-handling and background-scan defaults in the config file.
// Keys on the command line are snake_case like dm-remap's sysfs attributes; the file and --json use
// camelCase (FaultPolicy's and ScanSettings' names).
// Every argument is checked before the file is touched, and a bad argument or a bad file changes nothing.
import { configPath, deviceSettings, loadConfig, resolveAlertCommand, resolveHealthConfig, resolvePolicy, resolveScanConfig, withSetting, writeConfig, type SettingValue } from '../config/file.js';
import { withConfigLock } from '../config/lock.js';
import { POLICY_LIMITS } from '../config/policy.js';
import { alertCommandSchema, SETTING_CLI_NAMES as CLI_KEY_NAMES, SETTING_KEYS, type ConfigFile, type PolicyKey, type SettingKey } from '../config/schema.js';
import { parseScanSetting, SCAN_SETTING_KEYS, type ScanSettingKey } from '../scan/settings.js';
import { HEALTH_SETTING_KEYS, healthOrderProblem, parseHealthSetting, type HealthSettingKey } from '../health/settings.js';
import { usageError } from '../errors.js';
import { parseControlGroup, resolveControlGroup, type ControlGroup } from '../config/control-group.js';
import { parseWholeNumber } from '../numbers.js';
import { PROG, printJson, type CliContext } from './context.js';
import type { ConfigFlags } from './schemas.js';

/** A key's value; null: alert_command unset (no command). */
type Value = SettingValue | null;

const KEY_LIST = SETTING_KEYS.map((k) => CLI_KEY_NAMES[k]).join(', ');
const isScanKey = (k: SettingKey): k is ScanSettingKey => (SCAN_SETTING_KEYS as readonly string[]).includes(k);
const isHealthKey = (k: SettingKey): k is HealthSettingKey => (HEALTH_SETTING_KEYS as readonly string[]).includes(k);
const BOOL_WORDS: Readonly<Record<string, boolean>> = { '1': true, on: true, true: true, '0': false, off: false, false: false };

/** A key as typed on the command line (auto_remap, scan_rate_mib, ...) → its key in the file. */
export function parseKey(s: string): SettingKey {
  const key = SETTING_KEYS.find((k) => CLI_KEY_NAMES[k] === s);
  if (key === undefined) throw usageError(`unknown key ${JSON.stringify(s)} (keys: ${KEY_LIST})`);
  return key;
}

/** A value as typed on the command line, checked against the key's limits. */
export function parseValue(key: SettingKey, s: string): SettingValue {
  if (isScanKey(key)) return parseScanSetting(key, s);
  if (isHealthKey(key)) return parseHealthSetting(key, s);
  if (key === 'alertCommand') {
    const r = alertCommandSchema.safeParse(s);
    if (!r.success) throw usageError(`alert_command ${r.error.issues[0]?.message ?? 'is not valid'}`);
    return r.data;
  }
  const name = CLI_KEY_NAMES[key as PolicyKey];
  if (key === 'autoRemap') {
    const b = Object.hasOwn(BOOL_WORDS, s) ? BOOL_WORDS[s] : undefined;
    if (b === undefined) throw usageError(`${name} must be 0, 1, on, off, true or false, got ${JSON.stringify(s)}`);
    return b;
  }
  const { min, max } = POLICY_LIMITS[key];
  const n = parseWholeNumber(s, 9);
  if (n === null) throw usageError(`${name} must be a whole number, got ${JSON.stringify(s)}`);
  if (n < min || n > max) throw usageError(`${name} must be from ${min} to ${max}, got ${n}`);
  return n;
}

/** How a value is shown to people: auto_remap as on/off, numbers and commands as they are, no alert command as (none). */
export function showValue(v: Value): string {
  if (v === null) return '(none)';
  return typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v);
}

export async function runConfig(ctx: CliContext, positionals: string[], flags: ConfigFlags): Promise<number> {
  const [sub, ...args] = positionals;
  if ((sub === 'get' || sub === 'set' || sub === 'unset') && args[0] === CONTROL_GROUP_KEY) return controlGroup(ctx, sub, args.slice(1), flags);
  switch (sub) {
    case 'get':
      return get(ctx, args, flags);
    case 'set':
    case 'unset':
      return change(ctx, sub, args, flags);
    case undefined:
      throw usageError(`missing config command (get, set, unset); see ${PROG} config --help`);
    default:
      throw usageError(`unknown config command ${JSON.stringify(sub)} (get, set, unset; see ${PROG} config --help)`);
  }
}

function get(ctx: CliContext, args: string[], flags: ConfigFlags): number {
  if (args.length > 1) throw usageError(`config get takes at most one key, got ${args.length}`);
  const keys = args[0] === undefined ? [...SETTING_KEYS] : [parseKey(args[0])];
  const { config } = loadConfig(configPath(ctx.env));
  const value = resolved(config, flags.device ?? null);
  if (flags.json) printJson(ctx, Object.fromEntries(keys.map((k) => [k, value(k)])));
  else ctx.stdout.write(keys.map((k) => `${CLI_KEY_NAMES[k]} = ${showValue(value(k))}\n`).join(''));
  return 0;
}

/** The value each key has for `device` (or globally): file, then defaults. */
function resolved(config: ConfigFile, device: string | null): (k: SettingKey) => Value {
  const policy = resolvePolicy(config, device);
  const scan = resolveScanConfig(config, device);
  const health = resolveHealthConfig(config, device);
  return (k) => (k === 'alertCommand' ? resolveAlertCommand(config, device) : isScanKey(k) ? scan[k] : isHealthKey(k) ? health[k] : policy[k]);
}

function storedValue(config: ConfigFile, device: string | null, key: SettingKey): Value | undefined {
  return device === null ? config[key] : deviceSettings(config, device)?.[key];
}

/**
 * E_USAGE when `config` would order two health thresholds the wrong way (healthOrderProblem) where a change
 * of `device`'s section (or, globally, of every section, which inherit the global keys) applies.
 */
function checkHealthOrder(config: ConfigFile, device: string | null): void {
  const scopes = device === null ? [null, ...Object.keys(config.devices ?? {})] : [device];
  for (const d of scopes) {
    const problem = healthOrderProblem(resolveHealthConfig(config, d));
    if (problem !== null) throw usageError(d === null ? problem : `${problem} for device ${d}`);
  }
}

function change(ctx: CliContext, op: 'set' | 'unset', args: string[], flags: ConfigFlags): number {
  const want = op === 'set' ? 2 : 1;
  if (args[0] === undefined) throw usageError(`missing key to ${op} (${KEY_LIST})`);
  const key = parseKey(args[0]);
  if (op === 'set' && args[1] === undefined) throw usageError(`missing value for ${CLI_KEY_NAMES[key]}`);
  if (args.length > want) {
    const what = op === 'set' ? 'a key and a value' : 'one key';
    throw usageError(`config ${op} takes ${what}, got ${args.length} arguments`);
  }
  const value = op === 'set' ? parseValue(key, args[1] as string) : undefined;
  const device = flags.device ?? null;

  const file = configPath(ctx.env);
  const unchanged = (config: ConfigFile): { previous: Value; changed: boolean; now: Value } => {
    const v = resolved(config, device)(key);
    return { previous: v, changed: false, now: v };
  };
  // A no-op needs no lock and creates nothing. A change is read again, made and written under the lock, so
  // that a concurrent set/unset cannot lose it (or lose its own).
  const { config: current } = loadConfig(file);
  const { previous, changed, now } =
    storedValue(current, device, key) === value
      ? unchanged(current)
      : withConfigLock(file, () => {
          const { config } = loadConfig(file);
          if (storedValue(config, device, key) === value) return unchanged(config);
          const next = withSetting(config, device, key, value);
          if (isHealthKey(key)) checkHealthOrder(next, device);
          writeConfig(file, next);
          return { previous: resolved(config, device)(key), changed: true, now: resolved(next, device)(key) };
        });

  if (flags.json) {
    printJson(ctx, { key: CLI_KEY_NAMES[key], device, value: now, previous, changed, file });
  } else {
    const where = device === null ? '' : ` for device ${device}`;
    ctx.stdout.write(`${CLI_KEY_NAMES[key]} = ${showValue(now)}${where} (${changed ? `was ${showValue(previous)}` : 'unchanged'})\n`);
  }
  return 0;
}

/** The global-only key of the control sockets' read-only group (src/config/control-group.ts). */
export const CONTROL_GROUP_KEY = 'control_group';

/**
 * `config get|set|unset control_group [value]`: global only (no --device). `set` checks a group name exists
 * (E_CONFIG when it does not) before the file is touched; a gid is stored as a number.
 */
function controlGroup(ctx: CliContext, op: 'get' | 'set' | 'unset', args: string[], flags: ConfigFlags): number {
  if (flags.device !== undefined) throw usageError(`${CONTROL_GROUP_KEY} is global: it takes no --device`);
  const want = op === 'set' ? 1 : 0;
  if (op === 'set' && args[0] === undefined) throw usageError(`missing value for ${CONTROL_GROUP_KEY}`);
  if (args.length > want) throw usageError(`config ${op} ${CONTROL_GROUP_KEY} takes ${want === 1 ? 'one value' : 'no value'}, got ${args.length}`);
  const file = configPath(ctx.env);
  const show = (v: ControlGroup | undefined): string => (v === undefined ? '(none)' : String(v));
  if (op === 'get') {
    const v = loadConfig(file).config.controlGroup;
    if (flags.json) printJson(ctx, { controlGroup: v ?? null });
    else ctx.stdout.write(`${CONTROL_GROUP_KEY} = ${show(v)}\n`);
    return 0;
  }
  const value = op === 'set' ? parseControlGroup(args[0] as string) : undefined;
  resolveControlGroup(value, file);
  const apply = (config: ConfigFile): { previous: ControlGroup | undefined; changed: boolean } => {
    const previous = config.controlGroup;
    if (previous === value) return { previous, changed: false };
    const next = structuredClone(config);
    if (value === undefined) delete next.controlGroup;
    else next.controlGroup = value;
    writeConfig(file, next);
    return { previous, changed: true };
  };
  const current = loadConfig(file).config;
  const { previous, changed } = current.controlGroup === value ? { previous: value, changed: false } : withConfigLock(file, () => apply(loadConfig(file).config));
  if (flags.json) printJson(ctx, { key: CONTROL_GROUP_KEY, device: null, value: value ?? null, previous: previous ?? null, changed, file });
  else ctx.stdout.write(`${CONTROL_GROUP_KEY} = ${show(value)} (${changed ? `was ${show(previous)}` : 'unchanged'})\n`);
  return 0;
}
