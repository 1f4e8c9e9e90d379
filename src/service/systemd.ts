// The systemd units (scripts/systemd/): rendered for this installation, installed, and the per-device
// instances enabled or disabled. systemctl is only run when systemd is the running init (sd_booted: the
// directory /run/systemd/system exists); DMREMAP_SYSTEMCTL names another systemctl (tests use a fake one,
// and then systemd counts as running).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../atomic-file.js';
import { DmrError, errorCodeOf } from '../errors.js';

export const DEFAULT_UNIT_DIR = '/etc/systemd/system';
export const TEMPLATE_UNIT = 'dmremap-ublk@.service';
export const TARGET_UNIT = 'dmremap-ublk.target';
export const UNIT_FILES = [TEMPLATE_UNIT, TARGET_UNIT] as const;
/** The ExecStart the shipped template names; install replaces it with this installation's program. */
export const SHIPPED_EXEC = '/usr/local/bin/dmremap-ublk';

const SOURCE_DIR = fileURLToPath(new URL('../../scripts/systemd/', import.meta.url));
const BIN = fileURLToPath(new URL('../../bin/dmremap-ublk.js', import.meta.url));

export const instanceUnit = (name: string): string => `dmremap-ublk@${name}.service`;

/** The directory units are installed to and looked for in: DMREMAP_UNIT_DIR (tests), else /etc/systemd/system. */
export function unitDir(env: NodeJS.ProcessEnv): string {
  const d = env.DMREMAP_UNIT_DIR;
  return d !== undefined && d !== '' ? path.resolve(d) : DEFAULT_UNIT_DIR;
}

/** The command line that runs this installation: the node running now and bin/dmremap-ublk.js (absolute paths). */
export function thisProgram(): string {
  return `${process.execPath} ${BIN}`;
}

/** The unit files' text for this installation: ExecStart runs `exec` (a command line without spaces in its parts). */
export function renderUnits(exec: string = thisProgram()): Record<(typeof UNIT_FILES)[number], string> {
  if (/[\s"'\\%]/.test(exec.split(' ').join(''))) {
    throw new DmrError('E_SYSTEMD', `cannot write a unit for a program whose path holds spaces, quotes, backslashes or %: ${exec}`);
  }
  const read = (f: string): string => fs.readFileSync(path.join(SOURCE_DIR, f), 'utf8');
  const template = read(TEMPLATE_UNIT);
  if (!template.includes(`ExecStart=${SHIPPED_EXEC} `)) throw new DmrError('E_INTERNAL', `${TEMPLATE_UNIT} has no ExecStart=${SHIPPED_EXEC}`);
  return { [TEMPLATE_UNIT]: template.replace(`ExecStart=${SHIPPED_EXEC} `, `ExecStart=${exec} `), [TARGET_UNIT]: read(TARGET_UNIT) };
}

export interface Systemctl {
  /** Whether systemd runs (so systemctl can be asked anything). */
  running: boolean;
  /** Runs systemctl with `args`; E_SYSTEMD with its message when it fails. */
  run(args: string[]): void;
}

export function systemctl(env: NodeJS.ProcessEnv): Systemctl {
  const fake = env.DMREMAP_SYSTEMCTL;
  const bin = fake !== undefined && fake !== '' ? fake : 'systemctl';
  const running = bin !== 'systemctl' || fs.existsSync('/run/systemd/system');
  return {
    running,
    run(args: string[]): void {
      const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 60_000 });
      if (r.error !== undefined) throw new DmrError('E_SYSTEMD', `cannot run ${bin}: ${errorCodeOf(r.error) ?? r.error.message}`);
      if (r.status !== 0) {
        const why = (r.stderr || r.stdout).trim().split('\n')[0] ?? '';
        throw new DmrError('E_SYSTEMD', `${bin} ${args.join(' ')} failed (exit ${r.status ?? r.signal}): ${why}`);
      }
    },
  };
}

export interface InstallResult {
  dir: string;
  files: Array<{ file: string; changed: boolean }>;
  /** Whether systemctl daemon-reload and enable of the target ran (systemd running). */
  reloaded: boolean;
}

/** Writes the units into `dir` (made if missing; a file already holding the same text is left alone), then reloads. */
export function installUnits(dir: string, ctl: Systemctl, exec?: string): InstallResult {
  const units = renderUnits(exec);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw new DmrError('E_SYSTEMD', `cannot create ${dir} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  }
  const files = UNIT_FILES.map((f) => {
    const file = path.join(dir, f);
    let old: string | null = null;
    try {
      old = fs.readFileSync(file, 'utf8');
    } catch {
      old = null;
    }
    if (old === units[f]) return { file, changed: false };
    writeFileAtomic(file, units[f], { mode: 0o644, errorCode: 'E_SYSTEMD' });
    return { file, changed: true };
  });
  if (ctl.running) {
    ctl.run(['daemon-reload']);
    ctl.run(['enable', TARGET_UNIT]);
  }
  return { dir, files, reloaded: ctl.running };
}

/** Whether the template unit is installed in `dir`. */
export const unitsInstalled = (dir: string): boolean => fs.existsSync(path.join(dir, TEMPLATE_UNIT));
