// The config file: where it is, reading and validating it, the effective policy of a device, and writing
// it atomically. The file plays the role of dm-remap's /sys/kernel/dm_remap: defaults for devices added
// afterwards. A missing file means all defaults; a file that cannot be read or is not valid is an error
// (E_CONFIG) naming the file and the first problem, never silently ignored.
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../atomic-file.js';
import { DmrError, errorCodeOf } from '../errors.js';
import { DEFAULT_POLICY, type FaultPolicy } from './policy.js';
import { configFileSchema, describeFirstIssue, type ConfigFile, type PolicySettings, type SectionSettings, type SettingKey } from './schema.js';
import { resolveScanSettings, type ScanSettings } from '../scan/settings.js';
import { HEALTH_SETTING_KEYS, resolveHealthSettings, type HealthSettings, type PartialHealthSettings } from '../health/settings.js';

export const DEFAULT_CONFIG_FILE = '/etc/dmremap-ublk/config.json';
/** A config file larger than this is refused (it is a handful of keys; this catches pointing at a disk). */
const MAX_CONFIG_BYTES = 1 << 20;

/** The config file's path: $DMREMAP_CONFIG if set and not empty (tests use it), else the default. */
export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  const p = env.DMREMAP_CONFIG;
  return p !== undefined && p !== '' ? path.resolve(p) : DEFAULT_CONFIG_FILE;
}

export interface LoadedConfig {
  file: string;
  /** False when the file does not exist (the config is then empty: all defaults). */
  exists: boolean;
  config: ConfigFile;
}

const configError = (file: string, what: string, cause?: unknown): DmrError =>
  new DmrError('E_CONFIG', `${file}: ${what}`, cause === undefined ? undefined : { cause });

/** Parses and validates the file's text; throws E_CONFIG "<file>: <first problem>". */
export function parseConfig(file: string, text: string): ConfigFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text.startsWith('\uFEFF') ? text.slice(1) : text);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw configError(file, `not valid JSON (${why})`, e);
  }
  const r = configFileSchema.safeParse(raw);
  if (!r.success) throw configError(file, describeFirstIssue(r.error));
  // The schema has no transforms and no defaults, so the parsed JSON is the validated value; using it
  // (rather than zod's copy) keeps the order of the keys as the user wrote them when the file is rewritten.
  return raw as ConfigFile;
}

/** Reads the config file. Missing: an empty config. Unreadable or invalid: E_CONFIG. */
export function loadConfig(file: string): LoadedConfig {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    if (errorCodeOf(e) === 'ENOENT') return { file, exists: false, config: {} };
    throw configError(file, `cannot read (${errorCodeOf(e) ?? String(e)})`, e);
  }
  let text: string;
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw configError(file, 'not a regular file');
    if (st.size > MAX_CONFIG_BYTES) throw configError(file, `too large (${st.size} bytes; at most ${MAX_CONFIG_BYTES})`);
    text = fs.readFileSync(fd, 'utf8');
  } catch (e) {
    if (e instanceof DmrError) throw e;
    throw configError(file, `cannot read (${errorCodeOf(e) ?? String(e)})`, e);
  } finally {
    fs.closeSync(fd);
  }
  return { file, exists: true, config: parseConfig(file, text) };
}

/** The key a device's overrides live under: its name, else its main device's absolute path. */
export function deviceKey(name: string | null, mainPath: string): string {
  return name ?? mainPath;
}

/** The per-device section for `device`, if the file has one. */
export function deviceSettings(config: ConfigFile, device: string | null): SectionSettings | undefined {
  if (device === null || config.devices === undefined || !Object.hasOwn(config.devices, device)) return undefined;
  return config.devices[device];
}

/**
 * The policy a device runs with. Precedence, highest first: `flags` (add's options), the file's section for
 * `device`, the file's global keys, DEFAULT_POLICY.
 */
export function resolvePolicy(config: ConfigFile, device: string | null, flags: PolicySettings = {}): FaultPolicy {
  const perDevice = deviceSettings(config, device) ?? {};
  const pick = <K extends keyof FaultPolicy>(k: K): FaultPolicy[K] =>
    (flags[k] ?? perDevice[k] ?? config[k] ?? DEFAULT_POLICY[k]) as FaultPolicy[K];
  return {
    autoRemap: pick('autoRemap'),
    errorThreshold: pick('errorThreshold'),
    readRetries: pick('readRetries'),
    retryBackoffMs: pick('retryBackoffMs'),
    outageRegions: pick('outageRegions'),
    writeOutageRegions: pick('writeOutageRegions'),
    outageWindowMs: pick('outageWindowMs'),
    outageHoldMs: pick('outageHoldMs'),
  };
}

/**
 * The background scan's settings of a device: the file's section for `device`, then its global keys, then
 * DEFAULT_SCAN_SETTINGS. Read by the daemon at start and at recover.
 */
export function resolveScanConfig(config: ConfigFile, device: string | null): ScanSettings {
  const perDevice = deviceSettings(config, device) ?? {};
  const pick = (s: SectionSettings) => ({
    scanRateMib: s.scanRateMib,
    scanMinRateMib: s.scanMinRateMib,
    scanIntervalDays: s.scanIntervalDays,
    slowIoMs: s.slowIoMs,
    slowThreshold: s.slowThreshold,
  });
  return resolveScanSettings(pick(perDevice), pick(config));
}

/** The health model's keys of a section. */
function healthPart(s: SectionSettings): PartialHealthSettings {
  return Object.fromEntries(HEALTH_SETTING_KEYS.map((k) => [k, s[k]])) as PartialHealthSettings;
}

/**
 * The health model's settings of a device: the file's section for `device`, then its global keys, then
 * DEFAULT_HEALTH_SETTINGS. Read by the daemon at start and at recover.
 */
export function resolveHealthConfig(config: ConfigFile, device: string | null): HealthSettings {
  return resolveHealthSettings(healthPart(deviceSettings(config, device) ?? {}), healthPart(config));
}

/** The alert command of a device (its section, then the global key), or null for none. */
export function resolveAlertCommand(config: ConfigFile, device: string | null): string | null {
  return deviceSettings(config, device)?.alertCommand ?? config.alertCommand ?? null;
}

/** A value of any key of a section. */
export type SettingValue = boolean | number | string;

/**
 * A copy of `config` with `key` set to `value` (or removed when `value` is undefined) globally or in the
 * section of `device`. Other keys keep their values and order; a device section (and `devices`) left
 * empty by a removal is dropped.
 */
export function withSetting(
  config: ConfigFile,
  device: string | null,
  key: SettingKey,
  value: SettingValue | undefined,
): ConfigFile {
  const next = structuredClone(config) as ConfigFile;
  const assign = (section: SectionSettings): void => {
    if (value === undefined) delete section[key];
    else (section as Record<SettingKey, unknown>)[key] = value;
  };
  if (device === null) {
    assign(next);
    return next;
  }
  const devices: NonNullable<ConfigFile['devices']> = next.devices ?? {};
  const section: SectionSettings = Object.hasOwn(devices, device) ? (devices[device] as SectionSettings) : {};
  assign(section);
  if (Object.keys(section).length > 0) devices[device] = section;
  else delete devices[device];
  if (Object.keys(devices).length > 0) next.devices = devices;
  else delete next.devices;
  return next;
}

/** The file's text for `config`: pretty JSON with a final newline. */
export function formatConfig(config: ConfigFile): string {
  return `${JSON.stringify(config, null, 2)}\n`;
}

/** Creates `dir` (and missing parents) with mode 0755. */
export function ensureConfigDir(dir: string): void {
  let first: string | undefined;
  try {
    first = fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    // mkdir's mode is filtered by the umask: give the directories this call created exactly 0755.
    if (first !== undefined) {
      for (let d = dir; ; d = path.dirname(d)) {
        fs.chmodSync(d, 0o755);
        if (d === first || path.dirname(d) === d) break;
      }
    }
  } catch (e) {
    throw new DmrError('E_CONFIG', `cannot create directory ${dir} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  }
}

/**
 * Replaces the file with `config`, atomically and durably (writeFileAtomic: a temporary file in the same
 * directory, mode 0644, fsynced, renamed over the file, then the directory fsynced). A reader sees the old
 * file or the new one, never a mix, and a failure leaves the old file as it was (and no temporary file).
 */
export function writeConfig(file: string, config: ConfigFile): void {
  // Never write what could not be read back.
  parseConfig(file, formatConfig(config));
  ensureConfigDir(path.dirname(file));
  try {
    writeFileAtomic(file, formatConfig(config), { mode: 0o644, errorCode: 'E_CONFIG' });
  } catch (e) {
    const cause = e instanceof DmrError ? e.cause : e;
    throw configError(file, `cannot write (${errorCodeOf(cause) ?? String(cause)})`, cause);
  }
}
