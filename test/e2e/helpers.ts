// Helpers for the end-to-end suite. It runs as root on a kernel with ublk (usually the test VM, where only
// /tmp, /run and /root are writable): loop devices over files in /tmp, the CLI as a child process, fio,
// and a cleanup that removes every device, mount, loop device and file a test made.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(REPO, 'bin/dmremap-ublk.js');
export const RUN_DIR = '/run/dmremap-ublk';

export interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Where each command's wall time goes (one NDJSON line per command), for test/vm/command-times.mjs to sum up
 * after the run: the suite's time is mostly commands, and the CLI's start-up under TCG is a large part.
 */
export const COMMAND_TIMES = '/tmp/dmremap-e2e-commands.ndjson';
function noteCommandTime(cmd: string, args: readonly string[], ms: number): void {
  const what = cmd === process.execPath && args[0] === BIN ? `dmremap-ublk ${args[1] ?? ''}` : path.basename(cmd);
  try {
    fs.appendFileSync(COMMAND_TIMES, `${JSON.stringify({ what, ms: Math.round(ms) })}\n`);
  } catch {
    // a read-only /tmp: no record, the test goes on
  }
}

/** Runs a command to completion; never throws. */
export function sh(cmd: string, args: string[], timeoutMs = 300_000): Result {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 });
  noteCommandTime(cmd, args, performance.now() - t0);
  if (r.error) return { status: null, stdout: r.stdout ?? '', stderr: `${r.stderr ?? ''}${String(r.error)}` };
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs a command and returns its stdout; throws with its output if it fails. */
export function must(cmd: string, args: string[], timeoutMs?: number): string {
  const r = sh(cmd, args, timeoutMs);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** The CLI, as a user runs it. */
export function dmr(...args: string[]): Result {
  return sh(process.execPath, [BIN, ...args], 180_000);
}

export interface Added {
  devId: number;
  blockPath: string;
  name: string | null;
  pid: number;
}

export function addDevice(main: string, spare: string, ...extra: string[]): Added {
  const r = dmr('add', '--main', main, '--spare', spare, '--json', ...extra);
  if (r.status !== 0) throw new Error(`add failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Added;
}

/** A daemon run by addForeground(): its device, its process and the last 400 lines of its stderr. */
export interface ForegroundDaemon {
  dev: Added;
  child: ChildProcess;
  log: string[];
}

/**
 * `dmremap-ublk add --foreground --json` with its state directory in `stateDir` (the default, /var/lib, is
 * read-only in the VM); resolves once the device is live, rejects with the daemon's log if it is not in 120 s.
 */
export async function addForeground(main: string, spare: string, stateDir: string, extra: string[] = []): Promise<ForegroundDaemon> {
  const env = { ...process.env, DMREMAP_STATE_DIR: stateDir };
  const child = spawn(process.execPath, [BIN, 'add', '--main', main, '--spare', spare, '--json', '--foreground', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  const log: string[] = [];
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (t: string) => {
    log.push(...t.split('\n').filter((l) => l !== ''));
    if (log.length > 400) log.splice(0, log.length - 400);
  });
  const dev = await new Promise<Added>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`add did not report a device within 120 s: ${log.join('\n')}`)), 120_000);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (t: string) => {
      out += t;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out.slice(0, nl)) as Added);
      } catch (e) {
        reject(e as Error);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`add exited (${code}) before the device was live: ${log.join('\n')}`));
    });
  });
  child.stdout.resume();
  return { dev, child, log };
}

export function ublkNodes(): string[] {
  return fs
    .readdirSync('/dev')
    .filter((n) => /^ublk[bc]\d+$/.test(n))
    .sort();
}

export function registryFiles(): string[] {
  return fs.existsSync(RUN_DIR) ? fs.readdirSync(RUN_DIR).filter((n) => /\.(json|sock)$/.test(n)).sort() : [];
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function waitFor(what: string, cond: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** What one test made, undone in reverse by cleanup(). */
/** Filesystems a test mounted under its scratch directory, unmounted (lazily) at cleanup. */
export class Mounts {
  private readonly list: string[] = [];
  constructor(private readonly dir: string) {}

  mount(dev: string): string {
    const mnt = fs.mkdtempSync(path.join(this.dir, 'mnt-'));
    must('mount', [dev, mnt]);
    this.list.push(mnt);
    return mnt;
  }

  umount(mnt: string): void {
    must('umount', [mnt]);
    this.list.splice(this.list.indexOf(mnt), 1);
  }

  releaseAll(): void {
    for (const m of this.list.reverse()) sh('umount', ['-l', m]);
    this.list.length = 0;
  }
}

export class Scratch {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-e2e-'));
  private readonly loops: string[] = [];
  private readonly mounts = new Mounts(this.dir);
  private readonly children: ChildProcess[] = [];

  /** A loop device (direct I/O) over a new sparse file of `mib` MiB, with the given logical block size. */
  loop(mib: number, sectorSize: 512 | 4096 = 512): string {
    const file = path.join(this.dir, `backing-${this.loops.length}.img`);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, mib << 20);
    const dev = must('losetup', ['-f', '--show', '--direct-io=on', '--sector-size', String(sectorSize), file]).trim();
    this.loops.push(dev);
    return dev;
  }

  mount(dev: string): string {
    return this.mounts.mount(dev);
  }

  umount(mnt: string): void {
    this.mounts.umount(mnt);
  }

  spawn(cmd: string, args: string[]): ChildProcess {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    // Keep the pipes drained: a child blocked on a full pipe would look like a hang.
    c.stdout?.resume();
    c.stderr?.resume();
    this.children.push(c);
    return c;
  }

  /** Removes everything: child processes, mounts, dmremap-ublk devices, loop devices, files. */
  async cleanup(): Promise<void> {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    this.mounts.releaseAll();
    // Only when something is left: a CLI call costs seconds in the TCG VM, and most tests leave nothing.
    if (registryFiles().length > 0 || ublkNodes().length > 0) {
      const list = dmr('list', '--json');
      if (list.status === 0) {
        for (const d of JSON.parse(list.stdout) as Added[]) dmr('del', d.blockPath);
      }
    }
    for (const dev of this.loops.reverse()) sh('losetup', ['-d', dev]);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface FioResult {
  status: number | null;
  errors: number[];
  writeBytes: number;
  readBytes: number;
  raw: string;
}

/** Parses fio --output-format=json (fio may print warnings before the JSON). */
export function parseFio(status: number | null, stdout: string): FioResult {
  const start = stdout.indexOf('{');
  const json = JSON.parse(stdout.slice(start)) as {
    jobs: { error: number; read: { io_bytes: number }; write: { io_bytes: number } }[];
  };
  return {
    status,
    errors: json.jobs.map((j) => j.error),
    writeBytes: json.jobs.reduce((a, j) => a + j.write.io_bytes, 0),
    readBytes: json.jobs.reduce((a, j) => a + j.read.io_bytes, 0),
    raw: stdout,
  };
}

/** dmesg lines that show a task hung in the kernel or a kernel bug. */
export function kernelTrouble(): string[] {
  const r = sh('dmesg', []);
  return r.stdout.split('\n').filter((l) => /blocked for more than|BUG:|WARNING:|Oops|hung_task/.test(l));
}

/** The kernel log's clock now (seconds since boot, as dmesg stamps its lines). */
export function kernelLogNow(): number {
  return Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
}

/**
 * dmesg lines stamped after `since` (kernelLogNow()) that report an I/O error on `blockPath`: earlier tests
 * in the same VM use the same device names, and some make I/O errors on purpose.
 */
export function ioErrorLinesSince(since: number, blockPath: string): string[] {
  const name = path.basename(blockPath);
  return sh('dmesg', []).stdout.split('\n').filter((l) => {
    const t = /^\[\s*(\d+\.\d+)\]/.exec(l);
    return t !== null && Number(t[1]) > since && l.includes(name) && /I\/O error|critical|Buffer I\/O/.test(l);
  });
}

/** Reads `len` bytes at `offset` of a device or file (through the page cache). */
export { readAt } from '../../src/testing/file-bytes.js';

/** Makes the hung-task detector report within seconds, so a hang shows up during the suite. */
export function armHungTaskDetector(): void {
  const knob = '/proc/sys/kernel/hung_task_timeout_secs';
  if (fs.existsSync(knob)) fs.writeFileSync(knob, '10');
}
