// Option specs and zod schemas of every command's flags.
import path from 'node:path';
import * as z from 'zod';
import {
  DEFAULT_DEPTH,
  DEFAULT_MAX_IO_KIB,
  MAX_DEPTH,
  MAX_MAX_IO_KIB,
  MAX_QUEUES,
  MIN_MAX_IO_KIB,
  BUFFER_MODES,
  type DeviceConfig,
} from '../device/config.js';
import type { OptionSpecs } from './args.js';
import { TABLE_UUID_RE } from '../device/table-uuid.js';
import { MAX_TABLE_LIMIT } from '../control/protocol.js';
import { parseWholeNumber } from '../numbers.js';
import { POLICY_LIMITS } from '../config/policy.js';
import { isScanRate, SCAN_RATE_RULE } from '../scan/settings.js';
import { CLI_KEY_NAMES, POLICY_KEYS, DEVICE_ID_LIKE_RE, DEVICE_NAME_RE, isDeviceKey, type PolicyKey, type PolicySettings } from '../config/schema.js';

const help = { help: { type: 'boolean', short: 'h' } } as const;
const json = { json: { type: 'boolean' } } as const;

export const addOptions = {
  main: { type: 'string' },
  spare: { type: 'string' },
  name: { type: 'string' },
  queues: { type: 'string' },
  depth: { type: 'string' },
  'block-size': { type: 'string' },
  'max-io': { type: 'string' },
  buffers: { type: 'string' },
  foreground: { type: 'boolean' },
  'log-file': { type: 'string' },
  'spare-offset': { type: 'string' },
  'spare-size': { type: 'string' },
  'force-format': { type: 'boolean' },
  'require-table': { type: 'boolean' },
  'table-uuid': { type: 'string' },
  'policy-given': { type: 'string' },
  persist: { type: 'boolean' },
  'auto-remap': { type: 'string' },
  'error-threshold': { type: 'string' },
  'read-retries': { type: 'string' },
  'retry-backoff-ms': { type: 'string' },
  'outage-regions': { type: 'string' },
  'write-outage-regions': { type: 'string' },
  'outage-window-ms': { type: 'string' },
  'outage-hold-ms': { type: 'string' },
  ...json,
  ...help,
} as const satisfies OptionSpecs;
export const listOptions = { ...json, ...help } as const satisfies OptionSpecs;
export const statusOptions = { ...json, ...help } as const satisfies OptionSpecs;
/** del's and down's flags: --force deletes a device whose block device is in use; --json. */
export const delOptions = { force: { type: 'boolean' }, ...json, ...help } as const satisfies OptionSpecs;
export const delFlagsSchema = z.object({ force: z.boolean().default(false), json: z.boolean().default(false) });
export type DelFlags = z.output<typeof delFlagsSchema>;
export const recoverOptions = { foreground: { type: 'boolean' }, 'log-file': { type: 'string' }, ...json, ...help } as const satisfies OptionSpecs;
export const sectorCommandOptions = { ...json, ...help } as const satisfies OptionSpecs;
export const tableOptions = { offset: { type: 'string' }, limit: { type: 'string' }, ...json, ...help } as const satisfies OptionSpecs;
export const messageOptions = { ...help } as const satisfies OptionSpecs;
export const configOptions = { device: { type: 'string' }, ...json, ...help } as const satisfies OptionSpecs;
export const mapOptions = { out: { type: 'string' }, ...json, ...help } as const satisfies OptionSpecs;
export const watchOptions = { ...json, ...help } as const satisfies OptionSpecs;
export const healthOptions = { history: { type: 'boolean' }, ...json, ...help } as const satisfies OptionSpecs;
export const scanOptions = { rate: { type: 'string' }, wait: { type: 'boolean' }, watch: { type: 'boolean' }, ...json, ...help } as const satisfies OptionSpecs;

/** A byte count in decimal digits (below 2^53); the message names the flag and the bad value. */
export const bytesFlag = (flag: string, multipleOf = 1, min = 0) =>
  z.string().transform((s, ctx) => {
    const n = parseWholeNumber(s);
    if (n === null) {
      ctx.addIssue({ code: 'custom', message: `--${flag} must be a whole number of bytes, got ${JSON.stringify(s)}` });
      return z.NEVER;
    }
    if (n < min || n % multipleOf !== 0) {
      const mult = multipleOf > 1 ? `a multiple of ${multipleOf}` : '';
      const atLeast = min > 0 ? `at least ${min}` : '';
      ctx.addIssue({ code: 'custom', message: `--${flag} must be ${[atLeast, mult].filter(Boolean).join(' and ')} bytes, got ${n}` });
      return z.NEVER;
    }
    return n;
  });


const devicePath = (flag: string) =>
  z
    .string({ error: `missing required option --${flag} <path>` })
    .min(1, `--${flag} must not be empty`)
    .transform((p) => path.resolve(p));

/** A whole number in [min, max] written in decimal digits; the message names the flag and the bad value. */
export const intFlag = (flag: string, min: number, max: number, multipleOf = 1) =>
  z.string().transform((s, ctx) => {
    const n = parseWholeNumber(s, 9);
    if (n === null) {
      ctx.addIssue({ code: 'custom', message: `--${flag} must be a whole number, got ${JSON.stringify(s)}` });
      return z.NEVER;
    }
    if (n < min || n > max || n % multipleOf !== 0) {
      const mult = multipleOf > 1 ? `, a multiple of ${multipleOf}` : '';
      ctx.addIssue({ code: 'custom', message: `--${flag} must be from ${min} to ${max}${mult}, got ${n}` });
      return z.NEVER;
    }
    return n;
  });

export const NAME_RE = DEVICE_NAME_RE;

const deviceName = z
  .string()
  .regex(NAME_RE, '--name must start with a letter and hold at most 64 letters, digits, ".", "_" or "-"')
  .refine((n) => !DEVICE_ID_LIKE_RE.test(n), '--name must not look like a device id (ublkN, ublkbN, ublkcN)');

const onOff = (flag: string) =>
  z
    .enum(['on', 'off'], { error: (iss) => `--${flag} must be on or off, got ${JSON.stringify(iss.input)}` })
    .transform((s) => s === 'on');

/** add's error-handling flags, by FaultPolicy key (the flag is the config key with dashes). */
const policyFlag = (key: Exclude<PolicyKey, 'autoRemap'>) => {
  const flag = CLI_KEY_NAMES[key].replaceAll('_', '-');
  return intFlag(flag, POLICY_LIMITS[key].min, POLICY_LIMITS[key].max);
};

/** The flag name of each policy key (auto-remap, error-threshold, ...). */
const POLICY_FLAG_NAMES = POLICY_KEYS.map((k) => CLI_KEY_NAMES[k].replaceAll('_', '-'));

/**
 * --policy-given: which of the error-handling flags were given to the `add` that started this daemon (a
 * detached daemon gets every resolved key as a flag): a comma-separated list of flag names, possibly empty.
 * Its registry entry keeps only those, and `enable` records only those (as `add --persist` does).
 */
const policyGivenFlag = z.string().transform((s, ctx) => {
  const names = s === '' ? [] : s.split(',');
  const keys: PolicyKey[] = [];
  for (const n of names) {
    const i = POLICY_FLAG_NAMES.indexOf(n);
    if (i < 0) {
      ctx.addIssue({ code: 'custom', message: `--policy-given must list error-handling flag names (${POLICY_FLAG_NAMES.join(', ')}), got ${JSON.stringify(n)}` });
      return z.NEVER;
    }
    keys.push(POLICY_KEYS[i] as PolicyKey);
  }
  return keys;
});

/** The flags of `keys` in `policy` (the ones given). */
function pickPolicy(policy: PolicySettings, keys: readonly PolicyKey[]): PolicySettings {
  return Object.fromEntries(Object.entries(policy).filter(([k]) => keys.includes(k as PolicyKey))) as PolicySettings;
}

export const addFlagsSchema = z
  .object({
    main: devicePath('main'),
    spare: devicePath('spare'),
    name: deviceName.optional(),
    queues: intFlag('queues', 1, MAX_QUEUES).optional(),
    depth: intFlag('depth', 1, MAX_DEPTH).optional(),
    'block-size': z
      .enum(['512', '4096'], { error: (iss) => `--block-size must be 512 or 4096, got ${JSON.stringify(iss.input)}` })
      .transform((s) => Number(s) as 512 | 4096)
      .optional(),
    'max-io': intFlag('max-io', MIN_MAX_IO_KIB, MAX_MAX_IO_KIB, 4).optional(),
    buffers: z
      .enum(BUFFER_MODES, { error: (iss) => `--buffers must be auto, copy or zero-copy, got ${JSON.stringify(iss.input)}` })
      .default('auto'),
    foreground: z.boolean().default(false),
    'log-file': z.string().min(1, '--log-file must not be empty').transform((p) => path.resolve(p)).optional(),
    'spare-offset': bytesFlag('spare-offset', 4096).optional(),
    'spare-size': bytesFlag('spare-size', 1, 1).optional(),
    'force-format': z.boolean().default(false),
    'require-table': z.boolean().default(false),
    'table-uuid': z
      .string()
      .regex(TABLE_UUID_RE, { error: (iss) => `--table-uuid must be a remap table's UUID (lower-case hex, 8-4-4-4-12, as status --json shows remap.pairId), got ${JSON.stringify(iss.input)}` })
      .optional(),
    'policy-given': policyGivenFlag.optional(),
    persist: z.boolean().default(false),
    'auto-remap': onOff('auto-remap').optional(),
    'error-threshold': policyFlag('errorThreshold').optional(),
    'read-retries': policyFlag('readRetries').optional(),
    'retry-backoff-ms': policyFlag('retryBackoffMs').optional(),
    'outage-regions': policyFlag('outageRegions').optional(),
    'write-outage-regions': policyFlag('writeOutageRegions').optional(),
    'outage-window-ms': policyFlag('outageWindowMs').optional(),
    'outage-hold-ms': policyFlag('outageHoldMs').optional(),
    json: z.boolean().default(false),
  })
  .refine((f) => !f.persist || f.name !== undefined, { message: '--persist needs --name (the record and /dev/dmremap/<name> are named by it)' })
  .refine((f) => !f['require-table'] || !f['force-format'], { message: '--require-table and --force-format contradict each other: give one' })
  .refine((f) => f['table-uuid'] === undefined || !f['force-format'], { message: '--table-uuid and --force-format contradict each other: give one' })
  .refine((f) => !f.persist || !f.foreground, { message: '--persist is for a detached add (a foreground one: add it, then "dmremap-ublk enable <name>")' })
  .transform((f) => {
    const policyFlags = dropUndefined({
      autoRemap: f['auto-remap'],
      errorThreshold: f['error-threshold'],
      readRetries: f['read-retries'],
      retryBackoffMs: f['retry-backoff-ms'],
      outageRegions: f['outage-regions'],
      writeOutageRegions: f['write-outage-regions'],
      outageWindowMs: f['outage-window-ms'],
      outageHoldMs: f['outage-hold-ms'],
    }) satisfies PolicySettings as PolicySettings;
    const given = f['policy-given'];
    return {
      device: {
        mainPath: f.main,
        sparePath: f.spare,
        name: f.name ?? null,
        queues: f.queues,
        depth: f.depth ?? DEFAULT_DEPTH,
        blockSize: f['block-size'],
        maxIoBytes: (f['max-io'] ?? DEFAULT_MAX_IO_KIB) * 1024,
        buffers: f.buffers,
        spareOffset: f['spare-offset'],
        spareSize: f['spare-size'],
        forceFormat: f['force-format'],
        // A table named by its UUID must exist: never formatted.
        requireTable: f['require-table'] || f['table-uuid'] !== undefined,
        ...(f['table-uuid'] !== undefined ? { tableUuid: f['table-uuid'] } : {}),
        policyGiven: given === undefined ? policyFlags : pickPolicy(policyFlags, given),
      } satisfies DeviceConfig as DeviceConfig,
      /** The error-handling flags given; the rest comes from the config file (see src/cli/add.ts withPolicy). */
      policyFlags,
      foreground: f.foreground,
      /** Record the device in devices.d once it is live (src/service/records.ts). */
      persist: f.persist,
      logFile: f['log-file'] ?? null,
      json: f.json,
    };
  });
export type AddFlags = z.output<typeof addFlagsSchema>;

function dropUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

export const jsonFlagSchema = z.object({ json: z.boolean().default(false) });

/** config's --device: a device name as add --name takes it, or a main device's path (made absolute). */
const configDevice = z.string().transform((s, ctx) => {
  const key = s.includes('/') ? path.resolve(s) : s;
  if (!isDeviceKey(key)) {
    ctx.addIssue({
      code: 'custom',
      message: `--device must be a device name (as given to add --name) or a main device path, got ${JSON.stringify(s)}`,
    });
    return z.NEVER;
  }
  return key;
});

export const configFlagsSchema = z.object({
  device: configDevice.optional(),
  json: z.boolean().default(false),
});
export type ConfigFlags = z.output<typeof configFlagsSchema>;

export const tableFlagsSchema = z.object({
  offset: intFlag('offset', 0, 999_999_999).optional(),
  limit: intFlag('limit', 1, MAX_TABLE_LIMIT).optional(),
  json: z.boolean().default(false),
});

/** scan's flags: --rate in MiB/s from 0.01 (decimals allowed), --wait, --watch, --json. */
export const scanFlagsSchema = z.object({
  rate: z
    .string()
    .transform((t, ctx) => {
      const n = /^[0-9]+(\.[0-9]+)?$/.test(t.trim()) ? Number(t.trim()) : Number.NaN;
      if (!isScanRate(n)) {
        ctx.addIssue({ code: 'custom', message: `--rate must be ${SCAN_RATE_RULE}, got ${JSON.stringify(t)}` });
        return z.NEVER;
      }
      return n;
    })
    .optional(),
  wait: z.boolean().default(false),
  watch: z.boolean().default(false),
  json: z.boolean().default(false),
});
export type ScanFlags = z.output<typeof scanFlagsSchema>;

/** The picture formats of `map --out`, named by the file's extension. */
export const MAP_FORMATS = { '.svg': 'svg', '.html': 'html' } as const;
export type MapFormat = (typeof MAP_FORMATS)[keyof typeof MAP_FORMATS];

/** map's flags: --out FILE.svg|FILE.html (the format from the extension, any case), --json; one of them at least. */
export const mapFlagsSchema = z
  .object({
    out: z
      .string()
      .min(1, '--out must not be empty')
      .transform((p, ctx) => {
        const ext = path.extname(p).toLowerCase();
        if (!Object.hasOwn(MAP_FORMATS, ext)) {
          ctx.addIssue({ code: 'custom', message: `--out must name a .svg or .html file (the format comes from the extension), got ${JSON.stringify(p)}` });
          return z.NEVER;
        }
        return { path: path.resolve(p), format: MAP_FORMATS[ext as keyof typeof MAP_FORMATS] as MapFormat };
      })
      .optional(),
    json: z.boolean().default(false),
  })
  .refine((f) => f.out !== undefined || f.json, { message: 'map needs --out FILE.svg|FILE.html (or --json to print the map data)' });
export type MapFlags = z.output<typeof mapFlagsSchema>;

export const recoverFlagsSchema = z
  .object({
    foreground: z.boolean().default(false),
    'log-file': z.string().min(1, '--log-file must not be empty').transform((p) => path.resolve(p)).optional(),
    json: z.boolean().default(false),
  })
  .transform((f) => ({ foreground: f.foreground, logFile: f['log-file'] ?? null, json: f.json }));
export type RecoverFlags = z.output<typeof recoverFlagsSchema>;

/** health's flags: --history (the series day by day), --json. */
export const healthFlagsSchema = z.object({
  history: z.boolean().default(false),
  json: z.boolean().default(false),
});
export type HealthFlags = z.output<typeof healthFlagsSchema>;

/** up's and down's flags: --json; up's --foreground runs one device's daemon in this process (the systemd unit). */
export const upOptions = { foreground: { type: 'boolean' }, ...json, ...help } as const satisfies OptionSpecs;
export const upFlagsSchema = z.object({ foreground: z.boolean().default(false), json: z.boolean().default(false) });
export type UpFlags = z.output<typeof upFlagsSchema>;
/** down's flags are del's (delFlagsSchema): --force, --json. */
export const downOptions = delOptions;
export const enableOptions = { ...json, ...help } as const satisfies OptionSpecs;

/** install-systemd's flags: --prefix DIR (a root to install under instead of /), --force (replace files edited here), --json. */
export const installSystemdOptions = { prefix: { type: 'string' }, force: { type: 'boolean' }, ...json, ...help } as const satisfies OptionSpecs;
export const installSystemdFlagsSchema = z.object({
  prefix: z.string().min(1, '--prefix must not be empty').transform((p) => path.resolve(p)).optional(),
  force: z.boolean().default(false),
  json: z.boolean().default(false),
});
export type InstallSystemdFlags = z.output<typeof installSystemdFlagsSchema>;
