// The systemd units (scripts/systemd/): rendered for this installation, installed, and the per-device
// instances enabled or disabled. systemctl is only run when systemd is the running init (sd_booted: the
// directory /run/systemd/system exists); DMREMAP_SYSTEMCTL names another systemctl (tests use a fake one,
// and then systemd counts as running).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../atomic-file.js';
import { DmrError, errorCodeOf } from '../errors.js';
import { DAEMON_THREADPOOL_SIZE } from '../../bin/spawn-env.js';

export const DEFAULT_UNIT_DIR = '/etc/systemd/system';
export const DEFAULT_UDEV_DIR = '/etc/udev/rules.d';
export const UDEV_RULE = '90-dmremap-ublk.rules';
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

/** The directory of the udev rule: DMREMAP_UDEV_DIR (tests), else /etc/udev/rules.d. */
export function udevDir(env: NodeJS.ProcessEnv): string {
  const d = env.DMREMAP_UDEV_DIR;
  return d !== undefined && d !== '' ? path.resolve(d) : DEFAULT_UDEV_DIR;
}

/** The command that runs this installation: the node running now and bin/dmremap-ublk.js (absolute paths). */
export function thisProgram(): string[] {
  return [process.execPath, BIN];
}

/**
 * One path as an ExecStart word (systemd.service's command line rules): `%` is a specifier and `$` starts an
 * environment variable, so both are doubled; a path holding white space is put in double quotes, which keep
 * it one word. A quote, backslash or control character is refused (E_SYSTEMD): no path needs them.
 */
export function execWord(p: string): string {
  if (/["'\\\x00-\x1f\x7f]/.test(p)) {
    throw new DmrError('E_SYSTEMD', `cannot write a unit for a program whose path holds quotes, backslashes or control characters: ${JSON.stringify(p)}`);
  }
  const word = p.replace(/[%$]/g, (c) => c + c);
  return /\s/.test(word) ? `"${word}"` : word;
}

/** The template's line that gives the daemon its libuv pool size (replaced with DAEMON_THREADPOOL_SIZE). */
const POOL_LINE = /^Environment=UV_THREADPOOL_SIZE=\S*$/m;

/** The unit files' text for this installation: ExecStart runs `program` (its paths, each one word). */
export function renderUnits(program: readonly string[] = thisProgram()): Record<(typeof UNIT_FILES)[number], string> {
  const exec = program.map(execWord).join(' ');
  const read = (f: string): string => fs.readFileSync(path.join(SOURCE_DIR, f), 'utf8');
  const template = read(TEMPLATE_UNIT);
  if (!template.includes(`ExecStart=${SHIPPED_EXEC} `)) throw new DmrError('E_INTERNAL', `${TEMPLATE_UNIT} has no ExecStart=${SHIPPED_EXEC}`);
  // The daemon's pool size comes from the one place that sets it for every daemon (bin/spawn-env.js), not
  // from the shipped file's copy of the number.
  if (!POOL_LINE.test(template)) throw new DmrError('E_INTERNAL', `${TEMPLATE_UNIT} has no Environment=UV_THREADPOOL_SIZE= line`);
  const unit = template.replace(`ExecStart=${SHIPPED_EXEC} `, `ExecStart=${exec} `).replace(POOL_LINE, `Environment=UV_THREADPOOL_SIZE=${DAEMON_THREADPOOL_SIZE}`);
  return { [TEMPLATE_UNIT]: unit, [TARGET_UNIT]: read(TARGET_UNIT) };
}

export interface Systemctl {
  /** Whether systemd runs (so systemctl can be asked anything). */
  running: boolean;
  /** Runs systemctl with `args`; E_SYSTEMD with its message when it fails. */
  run(args: string[]): void;
  /** Runs systemctl with `args` for its exit status alone (`is-enabled --quiet`): whether it exited 0. */
  succeeds(args: string[]): boolean;
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
    succeeds(args: string[]): boolean {
      const r = spawnSync(bin, args, { stdio: 'ignore', timeout: 60_000 });
      return r.error === undefined && r.status === 0;
    },
  };
}

/**
 * Whether systemd runs `name`'s device: systemd is running, the units are installed and the instance is
 * enabled (`systemctl is-enabled`). Then `up` starts and `down` stops the unit, so that one device never has
 * two managers (a detached supervisor beside the unit, or a unit restart adding back what `down` deleted).
 */
export function unitManaged(env: NodeJS.ProcessEnv, name: string): boolean {
  if (!unitsInstalled(unitDir(env))) return false;
  const ctl = systemctl(env);
  return ctl.running && ctl.succeeds(['is-enabled', '--quiet', instanceUnit(name)]);
}

/** What install-systemd did with one file. */
export type InstallAction =
  /** Written: it was missing, or held what this program wrote before (unedited), or --force. */
  | 'written'
  /** It holds this version's text already. */
  | 'unchanged'
  /** Edited here (it differs from what install-systemd wrote): left as it is; --force replaces it. */
  | 'kept';

export interface InstallResult {
  files: Array<{ file: string; changed: boolean; action: InstallAction }>;
  /** The files left as they are because they were edited here (without --force). */
  kept: string[];
  /** Whether systemctl daemon-reload and enable of the target ran (systemd running, no --prefix). */
  reloaded: boolean;
}

const sha256 = (text: string): string => createHash('sha256').update(text, 'utf8').digest('hex');

/**
 * Every file install-systemd writes starts with this line, which holds the SHA-256 of the rest of the file:
 * a file whose rest no longer has that hash was edited here, and the next install-systemd keeps it.
 */
const MARK_PREFIX = '# Written by dmremap-ublk install-systemd; sha256 of the lines below: ';
const MARK_RE = /^# Written by dmremap-ublk install-systemd; sha256 of the lines below: ([0-9a-f]{64})\b[^\n]*\n/;

/** `body` as install-systemd writes it: the mark line first. */
export function markedText(body: string): string {
  return `${MARK_PREFIX}${sha256(body)} (edited, it is kept by install-systemd; --force replaces it)\n${body}`;
}

/**
 * The SHA-256 of each file as the versions before the mark line shipped it (scripts/systemd/ at each commit
 * that changed it; the template's ExecStart as shipped, see unmarkedShipped): such a file, unmarked but
 * unedited, is this program's to replace. Frozen: every later version writes the mark.
 */
const EARLIER_SHIPPED: Record<string, readonly string[]> = {
  [TEMPLATE_UNIT]: [
    '9669b85b1983c8c3abcadd890e70d22f4c65545971410a669ca8b0274168f2f1', // cadb1ba
    'e3d1db5e3990f37802c777d27d0a1b631387b246c8846e7438b9ee3b0722aeaa', // b1c24b4
    '5720c07c761480a926effbd2b3ca24a3323b92d46e5adbe811b7fd9ef82b7324', // 7d3a2fd
    '5adb5fdc02b2e1e5bcbc063e2806c5b37f067d26120af574f44077324424781c', // 8855ced
  ],
  [TARGET_UNIT]: ['42a311061ce6621c4e254f56409f5ee24304031a5a98897466378ada5d9831c6'], // cadb1ba
  [UDEV_RULE]: ['ba193c2664c7a54e8a3ba06818b916b6d8ad37302906bb442a3a3850c8741fb4'], // 7240ab8
};

/** The two ExecStart words of an earlier rendering: each a double-quoted word (no quote inside) or a bare one. */
const RENDERED_EXEC = /^ExecStart=("[^"]*"|[^\s"]+) ("[^"]*"|[^\s"]+) up --foreground %i$/m;
/** The program file every installation's ExecStart runs (thisProgram's second word ends so). */
const BIN_TAIL = '/bin/dmremap-ublk.js';

/**
 * Whether `words` (an ExecStart's text before " up --foreground %i") is exactly what an earlier install-systemd
 * rendered for some node and program path: before 5fde8c4 the two absolute paths as they are, separated by
 * one space (neither held white space, a quote, a backslash or %); since then each one execWord (`%` and `$`
 * doubled, double-quoted when it holds white space). The first names node (file name node, nodejs or either with
 * a version number: node22, node-20 (Fedora's), nodejs20.17), the second
 * this program's bin/dmremap-ublk.js. Anything else (another word, an option, a wrapper, other quoting) is an
 * admin's edit.
 */
function renderedExec(node: string, bin: string, words: string): boolean {
  const paths = [node, bin];
  // process.execPath: node's own file (node, nodejs, node22, ...); not a wrapper put before the program, even
  // one whose name starts with node (node-with-limits, nodeenv-exec).
  if (!paths.every((p) => p.startsWith('/')) || !/^node(js)?(-?\d+(\.\d+)*)?$/.test(path.posix.basename(node)) || !bin.endsWith(BIN_TAIL)) return false;
  if (words === paths.join(' ') && !paths.some((p) => /[\s"'\\%]/.test(p))) return true;
  try {
    return words === paths.map(execWord).join(' ');
  } catch {
    return false;
  }
}

/** The path an ExecStart word names, as execWord encoded it: its quotes off, `%%` and `$$` undoubled. */
const unword = (w: string): string => (w.startsWith('"') ? w.slice(1, -1) : w).replace(/%%|\$\$/g, (d) => d.slice(1));

/**
 * An unmarked installed file as it shipped: its ExecStart put back to the shipped one, but only when it is
 * exactly as an earlier install-systemd rendered it (renderedExec); an ExecStart edited here stays, so the
 * file's hash is no shipped one and it is kept.
 */
function unmarkedShipped(text: string): string {
  const m = RENDERED_EXEC.exec(text);
  if (m === null) return text;
  const [line, w1, w2] = m as unknown as [string, string, string];
  const words = `${w1} ${w2}`;
  // Before 5fde8c4 a word was the path itself (no quotes, no doubling): try it as it is, then as execWord's.
  const shipped = renderedExec(w1, w2, words) || renderedExec(unword(w1), unword(w2), words);
  return shipped ? text.replace(line, `ExecStart=${SHIPPED_EXEC} up --foreground %i`) : text;
}

/**
 * Whether the installed `old` is as install-systemd wrote it (this version or an earlier one), so that it
 * may be replaced: its mark's hash holds, or, unmarked, it is a file an earlier version shipped.
 */
export function unedited(name: string, old: string): boolean {
  const m = MARK_RE.exec(old);
  if (m !== null) return sha256(old.slice(m[0].length)) === m[1];
  return (EARLIER_SHIPPED[name] ?? []).includes(sha256(unmarkedShipped(old)));
}

/**
 * Writes `text` (marked) to `file` unless it holds it already, or it was edited here and not `force` (kept;
 * the directory is made if missing).
 */
function installFile(file: string, body: string, force: boolean): { file: string; changed: boolean; action: InstallAction } {
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  } catch (e) {
    throw new DmrError('E_SYSTEMD', `cannot create ${path.dirname(file)} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
  }
  const text = markedText(body);
  let old: string | null = null;
  try {
    old = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (errorCodeOf(e) !== 'ENOENT') throw new DmrError('E_SYSTEMD', `cannot read ${file} (${errorCodeOf(e) ?? String(e)})`, { cause: e });
    old = null;
  }
  if (old === text) return { file, changed: false, action: 'unchanged' };
  if (old !== null && !force && !unedited(path.basename(file), old)) return { file, changed: false, action: 'kept' };
  writeFileAtomic(file, text, { mode: 0o644, errorCode: 'E_SYSTEMD' });
  return { file, changed: true, action: 'written' };
}

/**
 * Writes the units into `units` and the udev rule into `udev`, keeping a file edited here unless `force`;
 * then, when `reload` (systemd runs and this is the live system, not a --prefix tree), reloads systemd and
 * udev and enables the target.
 */
export function installUnits(units: string, udev: string, ctl: Systemctl, reload: boolean, program?: readonly string[], force = false): InstallResult {
  const rendered = renderUnits(program);
  const files = UNIT_FILES.map((f) => installFile(path.join(units, f), rendered[f], force));
  files.push(installFile(path.join(udev, UDEV_RULE), fs.readFileSync(path.join(SOURCE_DIR, UDEV_RULE), 'utf8'), force));
  const reloaded = reload && ctl.running;
  if (reloaded) {
    ctl.run(['daemon-reload']);
    ctl.run(['enable', TARGET_UNIT]);
    // udev reads its rules again by itself too; this makes it now. No udevadm (a container): nothing to tell.
    spawnSync('udevadm', ['control', '--reload'], { stdio: 'ignore', timeout: 30_000 });
  }
  return { files, kept: files.filter((f) => f.action === 'kept').map((f) => f.file), reloaded };
}

/** Whether the template unit is installed in `dir`. */
export const unitsInstalled = (dir: string): boolean => fs.existsSync(path.join(dir, TEMPLATE_UNIT));
