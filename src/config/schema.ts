// The config file's schema (/etc/dmremap-ublk/config.json): global FaultPolicy and scan settings, every key optional,
// plus optional per-device overrides keyed by the device's --name (or its main device's absolute path when
// it has no name). The schema is strict: an unknown key is an error, not something silently ignored.
import * as z from 'zod';
import { POLICY_LIMITS, type FaultPolicy } from './policy.js';
import { SCAN_CLI_KEY_NAMES, SCAN_SETTING_KEYS, scanSettingsSchema, type ScanSettingKey } from '../scan/settings.js';
import { controlGroupSchema } from './control-group.js';
import { HEALTH_CLI_KEY_NAMES, HEALTH_SETTING_KEYS, healthSettingsSchema, type HealthSettingKey } from '../health/settings.js';

export type PolicyKey = keyof FaultPolicy;

/** The policy keys in the order they are shown and written. */
export const POLICY_KEYS = ['autoRemap', 'errorThreshold', 'readRetries', 'retryBackoffMs', 'outageRegions', 'writeOutageRegions', 'outageWindowMs', 'outageHoldMs'] as const satisfies readonly PolicyKey[];

/** The command line's names of the keys (snake_case, like dm-remap's sysfs attributes). */
export const CLI_KEY_NAMES: Readonly<Record<PolicyKey, string>> = {
  autoRemap: 'auto_remap',
  errorThreshold: 'error_threshold',
  readRetries: 'read_retries',
  retryBackoffMs: 'retry_backoff_ms',
  outageRegions: 'outage_regions',
  writeOutageRegions: 'write_outage_regions',
  outageWindowMs: 'outage_window_ms',
  outageHoldMs: 'outage_hold_ms',
};

/** A device name as `add --name` accepts it: starts with a letter, at most 64 of [A-Za-z0-9._-]. */
export const DEVICE_NAME_RE = /^[A-Za-z][A-Za-z0-9._-]{0,63}$/;
/** Names that would be mistaken for a device id (ublkN, ublkbN, ublkcN). */
export const DEVICE_ID_LIKE_RE = /^ublk[bc]?\d+$/;

/** Whether `key` can name a device in the file: a device name, or an absolute path (of a main device). */
export function isDeviceKey(key: string): boolean {
  if (key.startsWith('/')) return key.length > 1 && !key.includes('\0');
  return DEVICE_NAME_RE.test(key) && !DEVICE_ID_LIKE_RE.test(key);
}

const limitedInt = (limits: { min: number; max: number }) =>
  z
    .number({ error: 'must be a whole number' })
    .int('must be a whole number')
    .min(limits.min, `must be at least ${limits.min}`)
    .max(limits.max, `must be at most ${limits.max}`);

/** The policy keys, each optional: the file's global section and each device's section. */
export const policySettingsSchema = z.strictObject(
  {
    autoRemap: z.boolean({ error: 'must be true or false' }).optional(),
    errorThreshold: limitedInt(POLICY_LIMITS.errorThreshold).optional(),
    readRetries: limitedInt(POLICY_LIMITS.readRetries).optional(),
    retryBackoffMs: limitedInt(POLICY_LIMITS.retryBackoffMs).optional(),
    outageRegions: limitedInt(POLICY_LIMITS.outageRegions).optional(),
    writeOutageRegions: limitedInt(POLICY_LIMITS.writeOutageRegions).optional(),
    outageWindowMs: limitedInt(POLICY_LIMITS.outageWindowMs).optional(),
    outageHoldMs: limitedInt(POLICY_LIMITS.outageHoldMs).optional(),
  },
  { error: 'must be an object' },
);
export type PolicySettings = z.output<typeof policySettingsSchema>;

/** The longest alert_command accepted. */
export const MAX_ALERT_COMMAND_LENGTH = 4096;

/**
 * The program run when a device's health changes state or a forecast alarm begins (src/device/health-alert.ts),
 * through /bin/sh -c: one line of text, not empty.
 */
export const alertCommandSchema = z
  .string({ error: 'must be a string (a command line)' })
  .min(1, 'must not be empty (unset it to run no command)')
  .max(MAX_ALERT_COMMAND_LENGTH, `must be at most ${MAX_ALERT_COMMAND_LENGTH} characters`)
  .refine((s) => !/[\0\n\r]/.test(s), 'must be one line (no newline or NUL)');

/**
 * Every key a section of the file holds: the policy's, the background scan's (src/scan/settings.ts), the
 * health model's (src/health/settings.ts) and the alert command.
 */
export type SettingKey = PolicyKey | ScanSettingKey | HealthSettingKey | 'alertCommand';
export const SETTING_KEYS = [...POLICY_KEYS, ...SCAN_SETTING_KEYS, ...HEALTH_SETTING_KEYS, 'alertCommand'] as const satisfies readonly SettingKey[];
/** Command-line names of every key. */
export const SETTING_CLI_NAMES: Readonly<Record<SettingKey, string>> = { ...CLI_KEY_NAMES, ...SCAN_CLI_KEY_NAMES, ...HEALTH_CLI_KEY_NAMES, alertCommand: 'alert_command' };

/** A section of the file (global, or one device's): the policy, scan and health keys and alertCommand, each optional. */
export const sectionSchema = z.strictObject(
  { ...policySettingsSchema.shape, ...scanSettingsSchema.shape, ...healthSettingsSchema.shape, alertCommand: alertCommandSchema.optional() },
  { error: 'must be an object' },
);
export type SectionSettings = z.output<typeof sectionSchema>;

const deviceKeySchema = z.string().refine(isDeviceKey, {
  message: 'is neither a device name (as given to add --name) nor the absolute path of a main device',
});

export const configFileSchema = z.strictObject(
  {
    ...sectionSchema.shape,
    /** Global only: the group that may use the control sockets' read-only commands (control-group.ts). */
    controlGroup: controlGroupSchema.optional(),
    devices: z.record(deviceKeySchema, sectionSchema, { error: 'must be an object of device name → settings' }).optional(),
  },
  { error: 'must be a JSON object' },
);
export type ConfigFile = z.output<typeof configFileSchema>;

const TOP_KEYS = [...SETTING_KEYS, 'controlGroup', 'devices'] as const;

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    const s = String(seg);
    if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(s)) out += out === '' ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out;
}

/** The first problem zod found, as "<where>: <what>" (or just "<what>" for the file as a whole). */
export function describeFirstIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (issue === undefined) return 'invalid settings';
  const where = formatPath(issue.path);
  let what: string;
  if (issue.code === 'unrecognized_keys') {
    const allowed = issue.path.length === 0 ? TOP_KEYS : SETTING_KEYS;
    const keys = issue.keys.map((k) => JSON.stringify(k)).join(', ');
    what = `unknown key${issue.keys.length > 1 ? 's' : ''} ${keys} (known: ${allowed.join(', ')})`;
  } else if (issue.code === 'invalid_key') {
    // The path ends with the bad key itself: name it in the message, report it at its record.
    const key = String(issue.path[issue.path.length - 1]);
    const where = formatPath(issue.path.slice(0, -1));
    const what = `key ${JSON.stringify(key)} ${issue.issues[0]?.message ?? 'is not valid'}`;
    return where === '' ? what : `${where}: ${what}`;
  } else {
    what = issue.message;
  }
  return where === '' ? what : `${where}: ${what}`;
}
