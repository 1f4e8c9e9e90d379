// `dmremap-ublk demo`, the work: a failing disk made from a sparse file (a loop device under a dm table of
// `linear` segments with a few `error` segments), a spare from another file, a dmremap-ublk device over
// them; data written through it (over the bad sectors too: those writes fail on main and are remapped),
// read back and compared; status, table, health, a short scan with `watch` beside it, the surface map; then
// everything it made is removed again, in reverse order, whatever happened (a failed step, Ctrl-C).
// Each step prints the command a user would type and what it printed, like a tutorial. The external tools
// (truncate, losetup, dmsetup, dd, sha256sum) and the dmremap-ublk commands run through DemoIo, which the
// unit tests replace.
import path from 'node:path';
import { DmrError } from '../errors.js';
import { shellQuote } from './shell-quote.js';

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export interface DemoIo {
  /** Runs an external program to its end (killed when `signal` aborts); never throws. */
  exec(cmd: string, args: string[], signal?: AbortSignal): Promise<RunResult>;
  /** Runs `dmremap-ublk <args>` as a user would; `signal` ends a command that runs until told (watch). */
  cli(args: string[], signal?: AbortSignal): Promise<RunResult>;
  /** A fresh directory for the demo's files. */
  makeTempDir(): string;
  writeFile(file: string, text: string): void;
  removeDir(dir: string): void;
  /** Waits `ms` (less if `signal` aborts). */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The demo's sizes and bad sectors: small, so that it runs in seconds even in the emulated test VM. */
export const DEMO_LAYOUT = {
  mainMib: 32,
  spareMib: 16,
  /** The first writeMib MiB are written and read back; every bad range lies inside them. */
  writeMib: 8,
  /** 512-byte sectors that fail every read and write (dm `error` segments). */
  bad: [
    { start: 2048, sectors: 4 },
    { start: 5000, sectors: 3 },
    { start: 12288, sectors: 4 },
  ],
  name: 'dmremap-demo',
  /** How long `watch` runs beside the scan after it finished, ms. */
  watchTailMs: 1000,
} as const;

export interface DemoStep {
  command: string;
  status: number | null;
  output: string;
  /** How long it took, ms. */
  ms: number;
}

export interface DemoResult {
  ok: boolean;
  /** sha256 of the data written and of what was read back (null: not got that far). */
  written: string | null;
  readBack: string | null;
  blockPath: string | null;
  steps: DemoStep[];
  cleanup: DemoStep[];
  /** Why it failed (null when ok). */
  error: { code: string; message: string } | null;
}

/** A dm table over `mainDev` of `sectors` sectors: `linear` segments with the `bad` ranges as `error` ones. */
export function dmTable(mainDev: string, sectors: number, bad: ReadonlyArray<{ start: number; sectors: number }>): string {
  const lines: string[] = [];
  let at = 0;
  const sorted = [...bad].sort((a, b) => a.start - b.start);
  for (const b of sorted) {
    if (b.start < at || b.start + b.sectors > sectors) throw new DmrError('E_INTERNAL', `bad range ${b.start}+${b.sectors} overlaps or lies outside the device`);
    if (b.start > at) lines.push(`${at} ${b.start - at} linear ${mainDev} ${at}`);
    lines.push(`${b.start} ${b.sectors} error`);
    at = b.start + b.sectors;
  }
  if (at < sectors) lines.push(`${at} ${sectors - at} linear ${mainDev} ${at}`);
  return `${lines.join('\n')}\n`;
}

/** The first hex word of each line of sha256sum's output, in order. */
export function parseSha256sum(out: string): string[] {
  return out
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => l.trim().split(/\s+/)[0] ?? '');
}

/** The loop devices in `losetup -j FILE`'s output ("/dev/loop0: [2049]:12 (/tmp/x/main.img)" a line). */
export function parseLosetupJ(out: string): string[] {
  return out
    .split('\n')
    .filter((l) => l.includes(':'))
    .map((l) => l.slice(0, l.indexOf(':')).trim())
    .filter((d) => d.startsWith('/dev/'));
}

export interface DemoOptions {
  /** Where the tutorial goes (null: --json, nothing is printed along the way). */
  out: { write(s: string): unknown } | null;
  /** Aborted by Ctrl-C / SIGTERM: the demo stops after the current step and cleans up. */
  signal: AbortSignal;
  /** A suffix that keeps the dm device's name unique (the process id). */
  tag: string;
}

export async function runDemo(io: DemoIo, opts: DemoOptions): Promise<DemoResult> {
  const L = DEMO_LAYOUT;
  const { out, signal } = opts;
  const result: DemoResult = { ok: false, written: null, readBack: null, blockPath: null, steps: [], cleanup: [], error: null };
  const say = (s: string): void => void out?.write(s);
  /**
   * Things to undo, last made first. Each is registered before the command that makes it runs, and looks at
   * clean-up time whether there is something to remove (a command killed half-way may have made its device
   * without saying so): its steps, none when there was nothing.
   */
  const undo: Array<{ what: string; run: () => Promise<DemoStep[]> }> = [];

  const show = (command: string, r: RunResult, into: DemoStep[], since: number): DemoStep => {
    const output = `${r.stdout}${r.stderr}`;
    say(`\n$ ${command}\n${output}`);
    if (output !== '' && !output.endsWith('\n')) say('\n');
    const step = { command, status: r.status, output, ms: Math.round(performance.now() - since) };
    into.push(step);
    return step;
  };
  const interrupted = (): void => {
    if (signal.aborted) throw new DmrError('E_INTERRUPTED', 'interrupted: everything the demo made is being removed');
  };
  /**
   * Runs an external command as a step; a failure ends the demo. `abortable` false: Ctrl-C does not kill it
   * (losetup, dmsetup: short, and killed half-way they may leave a device made); the demo stops after it.
   */
  const tool = async (cmd: string, args: string[], abortable = true): Promise<RunResult> => {
    interrupted();
    const t0 = performance.now();
    const r = await io.exec(cmd, args, abortable ? signal : undefined);
    show(shellQuote([cmd, ...args]), r, result.steps, t0);
    // A command that succeeded made what it made (a loop or dm device) even when Ctrl-C came meanwhile: the
    // caller registers its removal, and the next step stops the demo.
    if (r.status !== 0) interrupted();
    if (r.status !== 0) throw new DmrError('E_DEMO', `${cmd} failed (exit ${r.status})${r.stderr.trim() !== '' ? `: ${r.stderr.trim().split('\n')[0]}` : ''}`);
    return r;
  };
  const dmr = async (args: string[]): Promise<RunResult> => {
    interrupted();
    const t0 = performance.now();
    const r = await io.cli(args, signal);
    show(shellQuote(['dmremap-ublk', ...args]), r, result.steps, t0);
    if (r.status !== 0) throw new DmrError('E_DEMO', `dmremap-ublk ${args[0]} failed (exit ${r.status}): ${r.stderr.trim().split('\n')[0] ?? ''}`);
    return r;
  };
  const note = (s: string): void => say(`\n# ${s}\n`);

  const dir = io.makeTempDir();
  undo.push({
    what: 'files',
    run: async () => {
      io.removeDir(dir);
      const step = { command: shellQuote(['rm', '-r', dir]), status: 0, output: '', ms: 0 };
      say(`\n$ ${step.command}\n`);
      return [step];
    },
  });
  const mainImg = path.join(dir, 'main.img');
  const spareImg = path.join(dir, 'spare.img');
  const tableFile = path.join(dir, 'main.table');
  const pattern = path.join(dir, 'pattern');
  const readBack = path.join(dir, 'read-back');
  const mapFile = path.join(dir, 'surface.svg');
  const dmName = `dmremap-demo-main-${opts.tag}`;
  const mainDev = `/dev/mapper/${dmName}`;

  try {
    note(`A failing disk: a ${L.mainMib} MiB sparse file on a loop device, under a device-mapper table whose error segments fail every read and write of ${L.bad.length} sector ranges. And a ${L.spareMib} MiB spare.`);
    await tool('truncate', ['-s', `${L.mainMib}M`, mainImg]);
    await tool('truncate', ['-s', `${L.spareMib}M`, spareImg]);
    undo.push({ what: `the loop devices of ${mainImg}`, run: () => detachLoops(mainImg) });
    const mainLoop = (await tool('losetup', ['--find', '--show', mainImg], false)).stdout.trim();
    undo.push({ what: `the loop devices of ${spareImg}`, run: () => detachLoops(spareImg) });
    const spareLoop = (await tool('losetup', ['--find', '--show', spareImg], false)).stdout.trim();
    const table = dmTable(mainLoop, L.mainMib * 2048, L.bad);
    io.writeFile(tableFile, table);
    note(`The table (written to ${tableFile}): start, length (sectors), target, device, offset.`);
    await tool('cat', [tableFile]);
    undo.push({ what: dmName, run: () => removeDm(dmName) });
    await tool('dmsetup', ['create', dmName, tableFile], false);

    note('The dmremap-ublk device over them (automatic remapping on: a block whose write fails on main goes to the spare).');
    const added = await dmr(['add', '--main', mainDev, '--spare', spareLoop, '--name', L.name, '--auto-remap', 'on', '--log-file', path.join(dir, 'daemon.log')]);
    undo.push({ what: L.name, run: async () => [await cleanupCli(['del', L.name])] });
    const blockPath = added.stdout.trim();
    result.blockPath = blockPath;
    await dmr(['list']);

    note(`${L.writeMib} MiB of random data written through it, over the bad sectors too; then read back and compared.`);
    await tool('dd', ['if=/dev/urandom', `of=${pattern}`, 'bs=1M', `count=${L.writeMib}`, 'status=none']);
    await tool('dd', [`if=${pattern}`, `of=${blockPath}`, 'bs=1M', 'oflag=direct', 'conv=fsync', 'status=none']);
    await tool('dd', [`if=${blockPath}`, `of=${readBack}`, 'bs=1M', `count=${L.writeMib}`, 'iflag=direct', 'status=none']);
    const sums = parseSha256sum((await tool('sha256sum', [pattern, readBack])).stdout);
    result.written = sums[0] ?? null;
    result.readBack = sums[1] ?? null;
    const same = result.written !== null && result.written === result.readBack;
    say(same ? '# the same: the bad sectors are hidden\n' : '# NOT the same: the data read back differs from what was written\n');
    if (!same) throw new DmrError('E_DEMO', 'the data read back differs from what was written');

    note('What the device did: its status, the remapped blocks, the disk\'s health.');
    await dmr(['status', L.name]);
    await dmr(['table', L.name]);
    await dmr(['health', L.name]);

    note('A surface scan reads the whole disk; `watch` streams the device\'s events meanwhile (here for the scan and a moment after).');
    const stopWatch = new AbortController();
    const onAbort = (): void => stopWatch.abort();
    signal.addEventListener('abort', onAbort);
    const watchStart = performance.now();
    const watching = io.cli(['watch', L.name], stopWatch.signal);
    try {
      await dmr(['scan', L.name, 'start', '--wait']);
      await io.sleep(L.watchTailMs, signal);
    } finally {
      stopWatch.abort();
      signal.removeEventListener('abort', onAbort);
      const w = await watching;
      show(`${shellQuote(['dmremap-ublk', 'watch', L.name])}    # (stopped with Ctrl-C after the scan)`, w, result.steps, watchStart);
    }
    interrupted();

    note('The surface map: regions by read latency, the bad blocks marked.');
    await dmr(['map', L.name, '--out', mapFile]);
    result.ok = true;
  } catch (e) {
    const err = e instanceof DmrError ? e : new DmrError('E_DEMO', e instanceof Error ? e.message : String(e));
    result.error = { code: err.code, message: err.message };
  } finally {
    note(signal.aborted ? 'Interrupted: removing everything the demo made.' : 'Removing everything the demo made.');
    for (const u of undo.reverse()) {
      try {
        result.cleanup.push(...(await u.run()));
      } catch (e) {
        result.cleanup.push({ command: `(remove ${u.what})`, status: null, output: e instanceof Error ? e.message : String(e), ms: 0 });
      }
    }
    const left = result.cleanup.filter((c) => c.status !== 0);
    if (left.length > 0) {
      result.ok = false;
      result.error ??= { code: 'E_DEMO', message: `could not remove everything: ${left.map((c) => c.command).join('; ')}` };
    }
  }
  if (result.ok) say(`\n# Done: the data read back was right (sha256 ${result.readBack}), and nothing is left behind.\n`);
  return result;

  async function cleanupTool(argv: string[]): Promise<DemoStep> {
    const [cmd, ...args] = argv as [string, ...string[]];
    const t0 = performance.now();
    return show(shellQuote(argv), await io.exec(cmd, args), [], t0);
  }
  /** Detaches every loop device `losetup -j` finds on `img` (a question, not shown; none: nothing to do). */
  async function detachLoops(img: string): Promise<DemoStep[]> {
    const t0 = performance.now();
    const found = await io.exec('losetup', ['-j', img]);
    if (found.status !== 0) return [show(shellQuote(['losetup', '-j', img]), found, [], t0)];
    const steps: DemoStep[] = [];
    for (const dev of parseLosetupJ(found.stdout)) steps.push(await cleanupTool(['losetup', '-d', dev]));
    return steps;
  }
  /** Removes the dm device if `dmsetup info` finds it (a question, not shown; not there: nothing to do). */
  async function removeDm(name: string): Promise<DemoStep[]> {
    const info = await io.exec('dmsetup', ['info', name]);
    return info.status === 0 ? [await cleanupTool(['dmsetup', 'remove', '--retry', name])] : [];
  }
  async function cleanupCli(args: string[]): Promise<DemoStep> {
    const t0 = performance.now();
    return show(shellQuote(['dmremap-ublk', ...args]), await io.cli(args), [], t0);
  }
}
