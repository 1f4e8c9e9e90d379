// The CLI dispatcher. `main` parses the command line, runs one command and returns the exit code; every
// failure is printed as one line "dmremap-ublk: <what is wrong>" on stderr (and, with --json, as
// {"error":{"code","message"}} on stdout). `run` is what bin/dmremap-ublk.js calls.
import fs from 'node:fs';
import { toDmrError, usageError } from '../errors.js';
import { selectNative } from '../native-select.js';
import { escapeControls } from '../terminal-text.js';
import { oneTarget, parseShape, validate } from './args.js';
import { PROG, printJson, type CliContext, type EarlyDaemon } from './context.js';
import { HELP } from './help.js';
import {
  addFlagsSchema,
  addOptions,
  configFlagsSchema,
  configOptions,
  delFlagsSchema,
  delOptions,
  healthFlagsSchema,
  healthOptions,
  jsonFlagSchema,
  listOptions,
  mapFlagsSchema,
  mapOptions,
  messageOptions,
  recoverFlagsSchema,
  recoverOptions,
  scanFlagsSchema,
  scanOptions,
  sectorCommandOptions,
  statusOptions,
  tableFlagsSchema,
  tableOptions,
  watchOptions,
  downOptions,
  enableOptions,
  installSystemdFlagsSchema,
  installSystemdOptions,
  upFlagsSchema,
  upOptions,
} from './schemas.js';

// Each command's module is imported when that command runs: a CLI call loads only what it needs (the daemon,
// its engine and logger are for `add` and `supervise` alone), which keeps `list` or `status` quick to start.
const COMMANDS = ['add', 'list', 'status', 'del', 'recover', 'restart', 'remap', 'unremap', 'verify', 'table', 'stats', 'recheck', 'scan', 'health', 'watch', 'map', 'message', 'config', 'exporter', 'enable', 'disable', 'up', 'down', 'install-systemd', 'demo', 'logs'] as const;
type CommandName = (typeof COMMANDS)[number];

export function version(): string {
  const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function dispatch(ctx: CliContext, command: CommandName, argv: string[]): Promise<number> {
  switch (command) {
    case 'add': {
      const { values } = parseShape(command, argv, addOptions, false);
      if (values.help) return help(ctx, command);
      const { requireControlGroup, runDetached, runForeground, withPolicy } = await import('./add.js');
      const flags = withPolicy(ctx.env, validate(addFlagsSchema, values));
      if (flags.foreground) return runForeground(ctx, flags);
      requireControlGroup(ctx.env);
      return runDetached(ctx, flags, flags.persist);
    }
    case 'list': {
      const { values } = parseShape(command, argv, listOptions, false);
      if (values.help) return help(ctx, command);
      const { runList } = await import('./list.js');
      return runList(ctx, validate(jsonFlagSchema, values).json);
    }
    case 'status': {
      const { values, positionals } = parseShape(command, argv, statusOptions, true);
      if (values.help) return help(ctx, command);
      const { runStatus } = await import('./status.js');
      return runStatus(ctx, oneTarget(command, positionals), validate(jsonFlagSchema, values).json);
    }
    case 'del': {
      const { values, positionals } = parseShape(command, argv, delOptions, true);
      if (values.help) return help(ctx, command);
      const { runDel } = await import('./del.js');
      return runDel(ctx, oneTarget(command, positionals), validate(delFlagsSchema, values));
    }
    case 'recover': {
      const { values, positionals } = parseShape(command, argv, recoverOptions, true);
      if (values.help) return help(ctx, command);
      const { runRecover } = await import('./recover.js');
      return runRecover(ctx, oneTarget(command, positionals), validate(recoverFlagsSchema, values));
    }
    case 'restart': {
      const { values, positionals } = parseShape(command, argv, statusOptions, true);
      if (values.help) return help(ctx, command);
      const { runRestart } = await import('./restart.js');
      return runRestart(ctx, oneTarget(command, positionals), validate(jsonFlagSchema, values).json);
    }
    case 'remap':
    case 'unremap':
    case 'verify': {
      const { values, positionals } = parseShape(command, argv, sectorCommandOptions, true);
      if (values.help) return help(ctx, command);
      const json = validate(jsonFlagSchema, values).json;
      const { deviceAndSector, runSectorCommand } = await import('./remap.js');
      const { target, sector } = deviceAndSector(command, positionals);
      return runSectorCommand(ctx, command, target, sector, json);
    }
    case 'table': {
      const { values, positionals } = parseShape(command, argv, tableOptions, true);
      if (values.help) return help(ctx, command);
      const flags = validate(tableFlagsSchema, values);
      const { runTable } = await import('./remap.js');
      return runTable(ctx, oneTarget(command, positionals), flags);
    }
    case 'stats': {
      const { values, positionals } = parseShape(command, argv, statusOptions, true);
      if (values.help) return help(ctx, command);
      const { runStats } = await import('./remap.js');
      return runStats(ctx, oneTarget(command, positionals), validate(jsonFlagSchema, values).json);
    }
    case 'recheck': {
      const { values, positionals } = parseShape(command, argv, sectorCommandOptions, true);
      if (values.help) return help(ctx, command);
      const json = validate(jsonFlagSchema, values).json;
      const { deviceAndSectors, runRecheck } = await import('./remap.js');
      const { target, sectors } = deviceAndSectors(command, positionals);
      return runRecheck(ctx, target, sectors, json);
    }
    case 'scan': {
      const { values, positionals } = parseShape(command, argv, scanOptions, true);
      if (values.help) return help(ctx, command);
      const flags = validate(scanFlagsSchema, values);
      const { runScan, scanTarget } = await import('./scan.js');
      const { target, action } = scanTarget(positionals);
      if (!flags.watch && !flags.wait) return runScan(ctx, target, action, flags);
      // The progress display ends on Ctrl-C (the scan goes on).
      const stop = new AbortController();
      const onInt = (): void => stop.abort();
      process.once('SIGINT', onInt);
      try {
        return await runScan(ctx, target, action, flags, { signal: stop.signal });
      } finally {
        process.off('SIGINT', onInt);
      }
    }
    case 'health': {
      const { values, positionals } = parseShape(command, argv, healthOptions, true);
      if (values.help) return help(ctx, command);
      const flags = validate(healthFlagsSchema, values);
      const { healthTarget, runHealth } = await import('./health.js');
      const { target, action } = healthTarget(positionals);
      return runHealth(ctx, target, action, flags);
    }
    case 'watch': {
      const { values, positionals } = parseShape(command, argv, watchOptions, true);
      if (values.help) return help(ctx, command);
      const json = validate(jsonFlagSchema, values).json;
      const target = oneTarget(command, positionals);
      const { runWatch } = await import('./watch.js');
      // The watch ends on Ctrl-C or SIGTERM, with exit 0, and when its reader goes away (`watch | head`:
      // EPIPE on stdout), also with exit 0; another error writing stdout ends it with one line and exit 1.
      const stop = new AbortController();
      const onSignal = (): void => stop.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      let outError: NodeJS.ErrnoException | null = null;
      // Left attached: a write already under way may still report the closed pipe after the watch ended.
      (ctx.stdout as Partial<NodeJS.EventEmitter>).on?.('error', (e: NodeJS.ErrnoException) => {
        if (e.code !== 'EPIPE' && outError === null) outError = e;
        stop.abort();
      });
      try {
        const code = await runWatch(ctx, target, json, { signal: stop.signal });
        if (outError !== null) {
          ctx.stderr.write(`${PROG}: cannot write the events: ${(outError as NodeJS.ErrnoException).message}\n`);
          return 1;
        }
        return code;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    }
    case 'map': {
      const { values, positionals } = parseShape(command, argv, mapOptions, true);
      if (values.help) return help(ctx, command);
      const flags = validate(mapFlagsSchema, values);
      const { runMap } = await import('./map.js');
      return runMap(ctx, oneTarget(command, positionals), flags);
    }
    case 'message': {
      const { values, positionals } = parseShape(command, argv, messageOptions, true);
      if (values.help) return help(ctx, command);
      const { runMessage } = await import('./remap.js');
      return runMessage(ctx, positionals);
    }
    case 'exporter': {
      const { exporterFlagsSchema, exporterOptions, runExporter } = await import('./exporter.js');
      const { values } = parseShape(command, argv, exporterOptions, false);
      if (values.help) return help(ctx, command);
      return runExporter(ctx, validate(exporterFlagsSchema, values));
    }
    case 'demo': {
      const { values } = parseShape(command, argv, listOptions, false);
      if (values.help) return help(ctx, command);
      const { runDemoCommand } = await import('./demo.js');
      return runDemoCommand(ctx, validate(jsonFlagSchema, values).json);
    }
    case 'logs': {
      const { values, positionals } = parseShape(command, argv, listOptions, true);
      if (values.help) return help(ctx, command);
      const { logsAction, runLogsReopen } = await import('./logs.js');
      logsAction(positionals);
      return runLogsReopen(ctx, validate(jsonFlagSchema, values).json);
    }
    case 'enable':
    case 'disable': {
      const { values, positionals } = parseShape(command, argv, enableOptions, true);
      if (values.help) return help(ctx, command);
      const { runDisable, runEnable } = await import('./enable.js');
      const run = command === 'enable' ? runEnable : runDisable;
      return run(ctx, oneTarget(command, positionals), validate(jsonFlagSchema, values).json);
    }
    case 'up': {
      const { values, positionals } = parseShape(command, argv, upOptions, true);
      if (values.help) return help(ctx, command);
      const { runUp } = await import('./up.js');
      return runUp(ctx, positionals, validate(upFlagsSchema, values));
    }
    case 'down': {
      const { values, positionals } = parseShape(command, argv, downOptions, true);
      if (values.help) return help(ctx, command);
      const { runDown } = await import('./up.js');
      return runDown(ctx, positionals, validate(delFlagsSchema, values));
    }
    case 'install-systemd': {
      const { values } = parseShape(command, argv, installSystemdOptions, false);
      if (values.help) return help(ctx, command);
      const { runInstallSystemd } = await import('./install-systemd.js');
      return runInstallSystemd(ctx, validate(installSystemdFlagsSchema, values));
    }
    case 'config': {
      const { values, positionals } = parseShape(command, argv, configOptions, true);
      if (values.help) return help(ctx, command);
      const { runConfig } = await import('./config.js');
      return runConfig(ctx, positionals, validate(configFlagsSchema, values));
    }
  }
}

function help(ctx: CliContext, topic: keyof typeof HELP): number {
  ctx.stdout.write(HELP[topic]);
  return 0;
}

export async function main(argv: string[], ctx: CliContext): Promise<number> {
  try {
    const [first, ...rest] = argv;
    if (first === undefined) throw usageError(`missing command (${COMMANDS.join(', ')}); see ${PROG} --help`);
    if (first === '--help' || first === '-h' || first === 'help') return help(ctx, 'main');
    if (first === '--version' || first === '-V') {
      ctx.stdout.write(`${version()}\n`);
      return 0;
    }
    // Internal: the process `add` detaches, which runs and restarts the daemon (not in the help).
    if (first === 'supervise') return await (await import('./supervise.js')).runSupervise(ctx, rest);
    if (!(COMMANDS as readonly string[]).includes(first)) {
      const what = first.startsWith('-') ? `unknown option ${first}` : `unknown command ${JSON.stringify(first)}`;
      throw usageError(`${what} (commands: ${COMMANDS.join(', ')}; see ${PROG} --help)`);
    }
    return await dispatch(ctx, first as CommandName, rest);
  } catch (e) {
    const err = toDmrError(e);
    ctx.stderr.write(`${PROG}: ${escapeControls(err.message.replace(/\s*\n\s*/g, ' '))}\n`);
    if (argv.includes('--json')) printJson(ctx, { error: err.toJSON() });
    return err.exitCode;
  }
}

/** The CLI's entry point (bin/dmremap-ublk.js); `earlyDaemon`: a supervisor's daemon it started before loading this. */
export async function run(opts: { earlyDaemon?: EarlyDaemon | null } = {}): Promise<void> {
  const ctx: CliContext = {
    earlyDaemon: opts.earlyDaemon ?? null,
    env: process.env,
    stdout: process.stdout,
    stderr: process.stderr,
    stderrIsTTY: process.stderr.isTTY === true,
    stdoutIsTTY: process.stdout.isTTY === true,
    loadNative: () => selectNative(process.env),
    exitsAfter: true,
  };
  const code = await main(process.argv.slice(2), ctx);
  // Let stdout drain (it may be a pipe), then exit: native threads or sockets must not keep us alive.
  process.stdout.write('', () => process.exit(code));
}
