// The error-handling config (issue 6): the file's schema and the effective policy (defaults ← file global ←
// file per-device ← add's flags), `config get|set|unset`, and how `add` resolves the policy and hands it to
// the daemon. Bad input gets one line and the right exit code, and leaves the file byte for byte as it was.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { daemonArgs, withPolicy } from '../../src/cli/add.js';
import { validate, parseShape } from '../../src/cli/args.js';
import { main } from '../../src/cli/main.js';
import { addFlagsSchema, addOptions } from '../../src/cli/schemas.js';
import { configPath, DEFAULT_CONFIG_FILE, loadConfig, resolvePolicy, writeConfig } from '../../src/config/file.js';
import { DEFAULT_POLICY, type FaultPolicy } from '../../src/config/policy.js';
import { DEFAULT_SCAN_SETTINGS } from '../../src/scan/settings.js';
import { DEFAULT_HEALTH_SETTINGS, HEALTH_CLI_KEY_NAMES, HEALTH_SETTING_KEYS } from '../../src/health/settings.js';

/** The health model's keys as `config get` prints them (defaults unless `over` says otherwise), then alert_command. */
const healthLines = (over: Record<string, number> = {}, alert = '(none)'): string =>
  HEALTH_SETTING_KEYS.map((k) => `${HEALTH_CLI_KEY_NAMES[k]} = ${over[k] ?? DEFAULT_HEALTH_SETTINGS[k]}\n`).join('') + `alert_command = ${alert}\n`;
const CLI_KEYS =
  'auto_remap, error_threshold, read_retries, retry_backoff_ms, outage_regions, write_outage_regions, outage_window_ms, outage_hold_ms, scan_rate_mib, scan_min_rate_mib, scan_interval_days, slow_io_ms, slow_threshold, ' +
  `${HEALTH_SETTING_KEYS.map((k) => HEALTH_CLI_KEY_NAMES[k]).join(', ')}, alert_command`;
const FILE_KEYS =
  'autoRemap, errorThreshold, readRetries, retryBackoffMs, outageRegions, writeOutageRegions, outageWindowMs, outageHoldMs, scanRateMib, scanMinRateMib, scanIntervalDays, slowIoMs, slowThreshold, ' +
  `${HEALTH_SETTING_KEYS.join(', ')}, alertCommand`;
import type { DeviceConfig } from '../../src/device/config.js';
import { Daemon } from '../../src/device/daemon.js';
import { DmrError } from '../../src/errors.js';
import { captureCtx, fakeFor, makeWorld, type World } from './helpers.js';

/** The outage settings' defaults (DEFAULT_POLICY's), where a test spells a whole policy out. */
const OUTAGE_DEFAULTS = { outageRegions: 4, writeOutageRegions: 8, outageWindowMs: 2000, outageHoldMs: 30000 } as const;

let w: World;
let cfgDir: string;
let cfgFile: string;
beforeEach(() => {
  w = makeWorld();
  cfgDir = path.join(w.root, 'etc', 'dmremap-ublk');
  cfgFile = path.join(cfgDir, 'config.json');
});
afterEach(() => {
  vi.restoreAllMocks();
  w.cleanup();
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(...args: string[]): Promise<Run> {
  const native = fakeFor(w);
  const c = captureCtx(w, native);
  c.ctx.env.DMREMAP_CONFIG = cfgFile;
  const code = await main(args, c.ctx);
  return { code, stdout: c.stdout(), stderr: c.stderr() };
}

function writeFile(content: string | object): Buffer {
  fs.mkdirSync(cfgDir, { recursive: true });
  const text = typeof content === 'string' ? content : JSON.stringify(content, null, 2);
  fs.writeFileSync(cfgFile, text);
  return fs.readFileSync(cfgFile);
}

const fileJson = (): unknown => JSON.parse(fs.readFileSync(cfgFile, 'utf8'));

/** Exactly one line "dmremap-ublk: <message>" on stderr, nothing on stdout. */
function expectOneLine(r: Run, exitCode: number, message: string | RegExp): void {
  expect(r.code).toBe(exitCode);
  expect(r.stdout).toBe('');
  const lines = r.stderr.split('\n');
  expect(lines).toHaveLength(2);
  expect(lines[1]).toBe('');
  const text = (lines[0] as string).replace(/^dmremap-ublk: /, '');
  expect(lines[0]).toMatch(/^dmremap-ublk: /);
  if (typeof message === 'string') expect(text).toBe(message);
  else expect(text).toMatch(message);
}

const add = (...extra: string[]): string[] => ['add', '--main', w.main, '--spare', w.spare, ...extra];

describe('the effective policy', () => {
  it('DMREMAP_CONFIG overrides the path; the default is /etc/dmremap-ublk/config.json', () => {
    expect(DEFAULT_CONFIG_FILE).toBe('/etc/dmremap-ublk/config.json');
    expect(configPath({})).toBe(DEFAULT_CONFIG_FILE);
    expect(configPath({ DMREMAP_CONFIG: '' })).toBe(DEFAULT_CONFIG_FILE);
    expect(configPath({ DMREMAP_CONFIG: 'rel/c.json' })).toBe(path.resolve('rel/c.json'));
  });

  it('a missing file is all defaults', () => {
    expect(loadConfig(cfgFile)).toEqual({ file: cfgFile, exists: false, config: {} });
    expect(resolvePolicy({}, 'vol')).toEqual(DEFAULT_POLICY);
  });

  it('flags > per-device > global > defaults, key by key', () => {
    const config = { readRetries: 5, errorThreshold: 2, devices: { vol: { readRetries: 1, autoRemap: false } } };
    expect(resolvePolicy(config, null)).toEqual({ autoRemap: true, errorThreshold: 2, readRetries: 5, retryBackoffMs: 10, ...OUTAGE_DEFAULTS });
    expect(resolvePolicy(config, 'other')).toEqual({ autoRemap: true, errorThreshold: 2, readRetries: 5, retryBackoffMs: 10, ...OUTAGE_DEFAULTS });
    expect(resolvePolicy(config, 'vol')).toEqual({ autoRemap: false, errorThreshold: 2, readRetries: 1, retryBackoffMs: 10, ...OUTAGE_DEFAULTS });
    expect(resolvePolicy(config, 'vol', { readRetries: 0, retryBackoffMs: 50 })).toEqual({
      autoRemap: false,
      errorThreshold: 2,
      readRetries: 0,
      retryBackoffMs: 50,
      ...OUTAGE_DEFAULTS,
    });
    // Inherited object properties are not device entries.
    expect(resolvePolicy(config, 'constructor')).toEqual(resolvePolicy(config, null));
  });

  it('add looks a device up by --name, else by its absolute main path', () => {
    writeFile({ devices: { vol: { readRetries: 1 }, [w.main]: { readRetries: 2 } } });
    const env = { DMREMAP_CONFIG: cfgFile };
    const flagsOf = (...extra: string[]) => {
      const { values } = parseShape('add', add(...extra).slice(1), addOptions, false);
      return withPolicy(env, validate(addFlagsSchema, values));
    };
    expect(flagsOf('--name', 'vol').device.policy?.readRetries).toBe(1);
    expect(flagsOf('--name', 'other').device.policy?.readRetries).toBe(3); // named: the path entry is not used
    expect(flagsOf().device.policy?.readRetries).toBe(2);
    expect(flagsOf('--read-retries', '9').device.policy?.readRetries).toBe(9);
    // A relative --main finds the entry of the absolute path.
    const rel = path.relative(process.cwd(), w.main);
    const { values } = parseShape('add', ['--main', rel, '--spare', w.spare], addOptions, false);
    expect(withPolicy(env, validate(addFlagsSchema, values)).device.policy?.readRetries).toBe(2);
  });
});

describe('config get / set / unset', () => {
  it('get prints the defaults when there is no file, and creates nothing', async () => {
    const r = await run('config', 'get');
    expect(r).toEqual({
      code: 0,
      stderr: '',
      stdout:
        'auto_remap = on\nerror_threshold = 1\nread_retries = 3\nretry_backoff_ms = 10\noutage_regions = 4\nwrite_outage_regions = 8\noutage_window_ms = 2000\noutage_hold_ms = 30000\n' +
        'scan_rate_mib = 64\nscan_min_rate_mib = 1\nscan_interval_days = 30\nslow_io_ms = 500\nslow_threshold = 2\n' +
        healthLines(),
    });
    expect((await run('config', 'get', 'retry_backoff_ms')).stdout).toBe('retry_backoff_ms = 10\n');
    expect(JSON.parse((await run('config', 'get', '--json')).stdout)).toEqual({ ...DEFAULT_POLICY, ...DEFAULT_SCAN_SETTINGS, ...DEFAULT_HEALTH_SETTINGS, alertCommand: null });
    expect(JSON.parse((await run('config', 'get', 'auto_remap', '--json')).stdout)).toEqual({ autoRemap: true });
    expect(fs.existsSync(path.join(w.root, 'etc'))).toBe(false);
  });

  it('set then get round-trips every key; the directory is created 0755 and the file 0644', async () => {
    const sets: [string, string, string][] = [
      ['auto_remap', 'off', 'auto_remap = off (was on)\n'],
      ['error_threshold', '65535', 'error_threshold = 65535 (was 1)\n'],
      ['read_retries', '0', 'read_retries = 0 (was 3)\n'],
      ['retry_backoff_ms', '10000', 'retry_backoff_ms = 10000 (was 10)\n'],
      ['outage_regions', '64', 'outage_regions = 64 (was 4)\n'],
      ['write_outage_regions', '64', 'write_outage_regions = 64 (was 8)\n'],
      ['outage_window_ms', '10', 'outage_window_ms = 10 (was 2000)\n'],
      ['outage_hold_ms', '600000', 'outage_hold_ms = 600000 (was 30000)\n'],
      ['scan_rate_mib', '1048576', 'scan_rate_mib = 1048576 (was 64)\n'],
      ['scan_min_rate_mib', '8', 'scan_min_rate_mib = 8 (was 1)\n'],
      ['scan_interval_days', '0', 'scan_interval_days = 0 (was 30)\n'],
      ['slow_io_ms', '1', 'slow_io_ms = 1 (was 500)\n'],
      ['slow_threshold', '65535', 'slow_threshold = 65535 (was 2)\n'],
      ['health_watch_days', '30', 'health_watch_days = 30 (was 60)\n'],
      ['health_spare_critical_percent', '95', 'health_spare_critical_percent = 95 (was 90)\n'],
      ['alert_command', '/usr/local/bin/alert --to root', 'alert_command = /usr/local/bin/alert --to root (was (none))\n'],
    ];
    for (const [key, value, out] of sets) {
      const r = await run('config', 'set', key, value);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toBe(out);
    }
    const all = {
      autoRemap: false, errorThreshold: 65535, readRetries: 0, retryBackoffMs: 10000, outageRegions: 64, writeOutageRegions: 64, outageWindowMs: 10, outageHoldMs: 600000,
      scanRateMib: 1048576, scanMinRateMib: 8, scanIntervalDays: 0, slowIoMs: 1, slowThreshold: 65535,
      healthWatchDays: 30, healthSpareCriticalPercent: 95, alertCommand: '/usr/local/bin/alert --to root',
    };
    expect(fileJson()).toEqual(all);
    expect(JSON.parse((await run('config', 'get', '--json')).stdout)).toEqual({ ...DEFAULT_HEALTH_SETTINGS, ...all });
    expect((await run('config', 'get')).stdout).toBe(
      'auto_remap = off\nerror_threshold = 65535\nread_retries = 0\nretry_backoff_ms = 10000\noutage_regions = 64\nwrite_outage_regions = 64\noutage_window_ms = 10\noutage_hold_ms = 600000\n' +
        'scan_rate_mib = 1048576\nscan_min_rate_mib = 8\nscan_interval_days = 0\nslow_io_ms = 1\nslow_threshold = 65535\n' +
        healthLines({ healthWatchDays: 30, healthSpareCriticalPercent: 95 }, '/usr/local/bin/alert --to root'),
    );
    expect(fs.statSync(cfgDir).mode & 0o777).toBe(0o755);
    expect(fs.statSync(cfgFile).mode & 0o777).toBe(0o644);
    expect(fs.readdirSync(cfgDir)).toEqual(['config.json']); // no temporary file left
  });

  it('auto_remap takes 0|1|on|off|true|false', async () => {
    for (const [v, b] of [['0', false], ['1', true], ['off', false], ['on', true], ['false', false], ['true', true]] as const) {
      expect((await run('config', 'set', 'auto_remap', v)).code).toBe(0);
      expect(fileJson()).toEqual({ autoRemap: b });
    }
  });

  it('setting the value already stored writes nothing', async () => {
    await run('config', 'set', 'read_retries', '5');
    const before = fs.statSync(cfgFile);
    const r = await run('config', 'set', 'read_retries', '5');
    expect(r.stdout).toBe('read_retries = 5 (unchanged)\n');
    expect(fs.statSync(cfgFile).ino).toBe(before.ino);
  });

  it('per-device overrides win over the global values, only for that device', async () => {
    expect((await run('config', 'set', 'read_retries', '5')).stdout).toBe('read_retries = 5 (was 3)\n');
    expect((await run('config', 'set', 'read_retries', '2', '--device', 'vol')).stdout).toBe('read_retries = 2 for device vol (was 5)\n');
    expect((await run('config', 'set', 'auto_remap', 'off', '--device', w.main)).stdout).toBe(`auto_remap = off for device ${w.main} (was on)\n`);
    expect(fileJson()).toEqual({ readRetries: 5, devices: { vol: { readRetries: 2 }, [w.main]: { autoRemap: false } } });
    expect((await run('config', 'get', 'read_retries', '--device', 'vol')).stdout).toBe('read_retries = 2\n');
    expect((await run('config', 'get', 'read_retries', '--device', 'other')).stdout).toBe('read_retries = 5\n');
    expect((await run('config', 'get', 'read_retries')).stdout).toBe('read_retries = 5\n');
    // A relative path names the same entry as the absolute one.
    const rel = path.relative(process.cwd(), w.main);
    expect(JSON.parse((await run('config', 'get', '--device', rel, '--json')).stdout)).toMatchObject({ autoRemap: false, readRetries: 5 });
    // Changing the global value does not change the device's override.
    await run('config', 'set', 'read_retries', '7');
    expect((await run('config', 'get', 'read_retries', '--device', 'vol')).stdout).toBe('read_retries = 2\n');
  });

  it('set keeps the other keys, and their order', async () => {
    const text = '{\n  "retryBackoffMs": 20,\n  "devices": {\n    "b": { "readRetries": 1 },\n    "a": { "errorThreshold": 4 }\n  },\n  "autoRemap": true\n}\n';
    writeFile(text);
    await run('config', 'set', 'error_threshold', '3', '--device', 'b');
    expect(fs.readFileSync(cfgFile, 'utf8')).toBe(
      JSON.stringify({ retryBackoffMs: 20, devices: { b: { readRetries: 1, errorThreshold: 3 }, a: { errorThreshold: 4 } }, autoRemap: true }, null, 2) +
        '\n',
    );
  });

  it('set --json says what changed', async () => {
    const r = await run('config', 'set', 'auto_remap', 'off', '--device', 'vol', '--json');
    expect(JSON.parse(r.stdout)).toEqual({ key: 'auto_remap', device: 'vol', value: false, previous: true, changed: true, file: cfgFile });
  });

  it('unset falls back to the next level and drops empty sections; unsetting nothing writes nothing', async () => {
    writeFile({ readRetries: 5, devices: { vol: { readRetries: 2 } } });
    expect((await run('config', 'unset', 'read_retries', '--device', 'vol')).stdout).toBe('read_retries = 5 for device vol (was 2)\n');
    expect(fileJson()).toEqual({ readRetries: 5 });
    expect((await run('config', 'unset', 'read_retries')).stdout).toBe('read_retries = 3 (was 5)\n');
    expect(fileJson()).toEqual({});
    const before = fs.readFileSync(cfgFile);
    expect((await run('config', 'unset', 'read_retries')).stdout).toBe('read_retries = 3 (unchanged)\n');
    expect(fs.readFileSync(cfgFile)).toEqual(before);
    fs.rmSync(path.join(w.root, 'etc'), { recursive: true });
    expect((await run('config', 'unset', 'auto_remap', '--device', 'vol')).code).toBe(0);
    expect(fs.existsSync(path.join(w.root, 'etc'))).toBe(false);
  });

  it('config --help and config get --help print the help', async () => {
    for (const args of [['config', '--help'], ['config', 'get', '--help']]) {
      const r = await run(...args);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^Usage: dmremap-ublk config get/);
      expect(r.stdout).toContain('devices added afterwards');
    }
  });
});

describe('bad input to config changes nothing', () => {
  const usage: [string[], string][] = [
    [['config'], 'missing config command (get, set, unset); see dmremap-ublk config --help'],
    [['config', 'show'], 'unknown config command "show" (get, set, unset; see dmremap-ublk config --help)'],
    [['config', 'set'], `missing key to set (${CLI_KEYS})`],
    [['config', 'set', 'readRetries', '1'], `unknown key "readRetries" (keys: ${CLI_KEYS})`],
    [['config', 'set', 'read_retries'], 'missing value for read_retries'],
    [['config', 'set', 'read_retries', '1', '2'], 'config set takes a key and a value, got 3 arguments'],
    [['config', 'set', 'read_retries', '17'], 'read_retries must be from 0 to 16, got 17'],
    [['config', 'set', 'read_retries', 'many'], 'read_retries must be a whole number, got "many"'],
    [['config', 'set', 'error_threshold', '0'], 'error_threshold must be from 1 to 65535, got 0'],
    // One region would make every write to a bad sector on an idle device a write outage.
    [['config', 'set', 'write_outage_regions', '1'], 'write_outage_regions must be from 2 to 64, got 1'],
    [['config', 'set', 'retry_backoff_ms', '10001'], 'retry_backoff_ms must be from 0 to 10000, got 10001'],
    [['config', 'set', 'scan_rate_mib', '0'], 'scan_rate_mib must be a whole number from 1 to 1048576, got "0"'],
    [['config', 'set', 'scan_interval_days', '3651'], 'scan_interval_days must be a whole number from 0 to 3650, got "3651"'],
    [['config', 'set', 'slow_io_ms', 'fast'], 'slow_io_ms must be a whole number from 1 to 600000, got "fast"'],
    [['config', 'set', 'retry_backoff_ms', '1.5'], 'retry_backoff_ms must be a whole number, got "1.5"'],
    [['config', 'set', 'retry_backoff_ms', ''], 'retry_backoff_ms must be a whole number, got ""'],
    [['config', 'set', 'auto_remap', 'yes'], 'auto_remap must be 0, 1, on, off, true or false, got "yes"'],
    [['config', 'set', 'auto_remap', 'ON'], 'auto_remap must be 0, 1, on, off, true or false, got "ON"'],
    [['config', 'set', 'read_retries', '1', '--device', 'my disk'], '--device must be a device name (as given to add --name) or a main device path, got "my disk"'],
    [['config', 'set', 'read_retries', '1', '--device', 'ublkb0'], '--device must be a device name (as given to add --name) or a main device path, got "ublkb0"'],
    [['config', 'set', 'read_retries', '1', '--frob'], 'unknown option --frob for config (see dmremap-ublk config --help)'],
    [['config', 'unset'], `missing key to unset (${CLI_KEYS})`],
    [['config', 'unset', 'read_retries', 'x'], 'config unset takes one key, got 2 arguments'],
    [['config', 'get', 'a', 'b'], 'config get takes at most one key, got 2'],
    [['config', 'get', 'bogus'], `unknown key "bogus" (keys: ${CLI_KEYS})`],
  ];
  for (const [args, message] of usage) {
    it(`${args.join(' ')} → exit 2`, async () => {
      const before = writeFile({ readRetries: 5, devices: { vol: { autoRemap: false } } });
      expectOneLine(await run(...args), 2, message);
      expect(fs.readFileSync(cfgFile)).toEqual(before);
      expect(fs.readdirSync(cfgDir)).toEqual(['config.json']);
    });
  }

  it('a bad value with no file creates neither the file nor its directory', async () => {
    expectOneLine(await run('config', 'set', 'read_retries', '99'), 2, 'read_retries must be from 0 to 16, got 99');
    expect(fs.existsSync(path.join(w.root, 'etc'))).toBe(false);
  });

  it('--json errors carry the code', async () => {
    const r = await run('config', 'set', 'read_retries', '99', '--json');
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toEqual({ error: { code: 'E_USAGE', message: 'read_retries must be from 0 to 16, got 99' } });
  });
});

// Each invalid file and the one line every command reports for it (after "<file>: ").
const BAD_FILES: [string, string, string | RegExp][] = [
  ['out of range', '{"readRetries": 17}', 'readRetries: must be at most 16'],
  ['below the minimum', '{"errorThreshold": 0}', 'errorThreshold: must be at least 1'],
  ['one write-outage region', '{"writeOutageRegions": 1}', 'writeOutageRegions: must be at least 2'],
  ['not a whole number', '{"retryBackoffMs": 2.5}', 'retryBackoffMs: must be a whole number'],
  ['a string for a number', '{"readRetries": "3"}', 'readRetries: must be a whole number'],
  ['a number for a boolean', '{"autoRemap": 1}', 'autoRemap: must be true or false'],
  ['an unknown key', '{"read_retries": 3}', `unknown key "read_retries" (known: ${FILE_KEYS}, controlGroup, devices)`],
  ['an unknown per-device key', '{"devices": {"vol": {"spare": "x"}}}', `devices.vol: unknown key "spare" (known: ${FILE_KEYS})`],
  ['a bad per-device value', '{"devices": {"/dev/sdb": {"readRetries": -1}}}', 'devices["/dev/sdb"].readRetries: must be at least 0'],
  ['a bad device key', '{"devices": {"my disk": {}}}', 'devices: key "my disk" is neither a device name (as given to add --name) nor the absolute path of a main device'],
  ['devices not an object', '{"devices": []}', 'devices: must be an object of device name → settings'],
  ['not an object', '[1, 2]', 'must be a JSON object'],
  ['not JSON', '{"readRetries": 3,}', /^not valid JSON \(.+\)$/],
  ['empty', '', /^not valid JSON \(.+\)$/],
];

describe('an invalid config file: one line naming the file, exit 1, nothing changed or created', () => {
  for (const [what, text, problem] of BAD_FILES) {
    it(what, async () => {
      const before = writeFile(text);
      const message = typeof problem === 'string' ? `${cfgFile}: ${problem}` : new RegExp(`^${cfgFile}: ${problem.source.slice(1)}`);
      for (const args of [
        ['config', 'get'],
        ['config', 'get', 'read_retries', '--device', 'vol'],
        ['config', 'set', 'read_retries', '4'],
        ['config', 'unset', 'read_retries'],
        add(),
        add('--foreground'),
        add('--name', 'vol', '--read-retries', '1'),
      ]) {
        expectOneLine(await run(...args), 1, message);
        expect(fs.readFileSync(cfgFile)).toEqual(before);
        expect(fs.readdirSync(cfgDir)).toEqual(['config.json']);
        expect(w.runDirEntries()).toEqual([]);
        expect(w.devNodes()).toEqual([]);
      }
      const r = await run('config', 'get', '--json');
      expect(JSON.parse(r.stdout).error.code).toBe('E_CONFIG');
    });
  }

  it('a directory where the file should be', async () => {
    fs.mkdirSync(cfgFile, { recursive: true });
    expectOneLine(await run('config', 'get'), 1, `${cfgFile}: not a regular file`);
    expectOneLine(await run(...add()), 1, `${cfgFile}: not a regular file`);
    expect(w.runDirEntries()).toEqual([]);
  });

  it.skipIf(process.getuid?.() === 0)('an unreadable file', async () => {
    writeFile('{}');
    fs.chmodSync(cfgFile, 0o000);
    expectOneLine(await run('config', 'get'), 1, `${cfgFile}: cannot read (EACCES)`);
  });
});

describe('atomic write', () => {
  it('a write that fails leaves the old file and no temporary file', () => {
    fs.mkdirSync(cfgDir, { recursive: true });
    // The rename cannot replace a non-empty directory: the write fails after the temp file was written.
    const target = path.join(cfgDir, 'dir.json');
    fs.mkdirSync(path.join(target, 'x'), { recursive: true });
    expect(() => writeConfig(target, { readRetries: 1 })).toThrow(DmrError);
    try {
      writeConfig(target, { readRetries: 1 });
    } catch (e) {
      expect((e as DmrError).code).toBe('E_CONFIG');
      expect((e as DmrError).message).toMatch(new RegExp(`^${target}: cannot write \\(E[A-Z]+\\)$`));
    }
    expect(fs.readdirSync(cfgDir)).toEqual(['dir.json']);
  });

  it('never writes a config it could not read back', () => {
    expect(() => writeConfig(cfgFile, { readRetries: 99 })).toThrow(`${cfgFile}: readRetries: must be at most 16`);
    expect(fs.existsSync(cfgDir)).toBe(false);
  });

  it('replaces the file by rename (a reader holding the old file keeps the old contents)', async () => {
    writeFile({ readRetries: 1 });
    const fd = fs.openSync(cfgFile, 'r');
    try {
      await run('config', 'set', 'read_retries', '2');
      expect(JSON.parse(fs.readFileSync(fd, 'utf8'))).toEqual({ readRetries: 1 });
      expect(fileJson()).toEqual({ readRetries: 2 });
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('add and the policy', () => {
  const badFlags: [string[], string][] = [
    [['--read-retries', '99'], '--read-retries must be from 0 to 16, got 99'],
    [['--read-retries', 'lots'], '--read-retries must be a whole number, got "lots"'],
    [['--error-threshold', '0'], '--error-threshold must be from 1 to 65535, got 0'],
    [['--retry-backoff-ms', '10001'], '--retry-backoff-ms must be from 0 to 10000, got 10001'],
    [['--outage-hold-ms', '5'], '--outage-hold-ms must be from 100 to 600000, got 5'],
    [['--outage-regions', '65'], '--outage-regions must be from 1 to 64, got 65'],
    [['--write-outage-regions', '1'], '--write-outage-regions must be from 2 to 64, got 1'],
    [['--outage-window-ms', 'soon'], '--outage-window-ms must be a whole number, got "soon"'],
    [['--auto-remap', 'yes'], '--auto-remap must be on or off, got "yes"'],
    [['--auto-remap'], 'option --auto-remap needs a value'],
  ];
  for (const [flags, message] of badFlags) {
    it(`add ${flags.join(' ')} is refused (exit 2), nothing created`, async () => {
      expectOneLine(await run(...add(...flags)), 2, message);
      expect(w.runDirEntries()).toEqual([]);
      expect(w.devNodes()).toEqual([]);
    });
  }

  /** Runs add --foreground in this process and returns the DeviceConfig the daemon was started with. */
  async function startedWith(...extra: string[]): Promise<DeviceConfig> {
    let seen: DeviceConfig | undefined;
    vi.spyOn(Daemon, 'start').mockImplementation(async (cfg) => {
      seen = cfg;
      throw new DmrError('E_INTERNAL', 'stopped by the test');
    });
    const r = await run(...add('--foreground', ...extra));
    expect(r.stderr).toBe('dmremap-ublk: stopped by the test\n');
    if (seen === undefined) throw new Error('Daemon.start was not called');
    return seen;
  }

  it('the daemon gets DEFAULT_POLICY when there is no file and no flag', async () => {
    expect((await startedWith()).policy).toEqual(DEFAULT_POLICY);
  });

  it('the daemon gets flags over the device entry over the global values', async () => {
    writeFile({ readRetries: 5, retryBackoffMs: 100, devices: { vol: { readRetries: 2, autoRemap: false }, [w.main]: { errorThreshold: 50 } } });
    expect((await startedWith('--name', 'vol', '--retry-backoff-ms', '7')).policy).toEqual({
      autoRemap: false,
      errorThreshold: 1,
      readRetries: 2,
      retryBackoffMs: 7,
      ...OUTAGE_DEFAULTS,
    } satisfies FaultPolicy);
    vi.restoreAllMocks();
    expect((await startedWith()).policy).toEqual({ autoRemap: true, errorThreshold: 50, readRetries: 5, retryBackoffMs: 100, ...OUTAGE_DEFAULTS });
    vi.restoreAllMocks();
    expect((await startedWith('--auto-remap', 'off', '--error-threshold', '3', '--read-retries', '16')).policy).toEqual({
      autoRemap: false,
      errorThreshold: 3,
      readRetries: 16,
      retryBackoffMs: 100,
      ...OUTAGE_DEFAULTS,
    });
  });

  it('the detached daemon gets the resolved policy as flags and does not read the file again', () => {
    writeFile({ readRetries: 5, devices: { vol: { autoRemap: false } } });
    const env = { DMREMAP_CONFIG: cfgFile };
    const parse = (argv: string[]) => {
      const { values } = parseShape('add', argv, addOptions, false);
      return withPolicy(env, validate(addFlagsSchema, values));
    };
    const flags = parse(add('--name', 'vol', '--error-threshold', '4').slice(1));
    expect(flags.device.policy).toEqual({ autoRemap: false, errorThreshold: 4, readRetries: 5, retryBackoffMs: 10, ...OUTAGE_DEFAULTS });
    const args = daemonArgs(flags);
    expect(args).toEqual(expect.arrayContaining(['--auto-remap', 'off', '--error-threshold', '4', '--read-retries', '5', '--retry-backoff-ms', '10']));
    // The file changes (here: breaks) after add resolved the policy: the daemon still gets what add resolved.
    writeFile('{"readRetries": 99}');
    expect(parse([...args, '--foreground']).device).toEqual({ ...flags.device });
  });
});
