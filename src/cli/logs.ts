// `dmremap-ublk logs reopen [--json]`: what logrotate's postrotate runs (scripts/logrotate/dmremap-ublk).
// Sends SIGHUP to every running daemon in the registry; each reopens its log file by name (a new file after
// logrotate moved the old one away) and passes the signal on to its supervisor, which reopens its own.
import { readEntries } from '../control/registry.js';
import { usageError } from '../errors.js';
import { runDir } from '../paths.js';
import { escapeControls } from '../terminal-text.js';
import { printJson, type CliContext } from './context.js';

export interface Reopened {
  devId: number;
  name: string | null;
  pid: number;
  logFile: string | null;
  /** Whether the signal was delivered (false: the daemon exited meanwhile). */
  signalled: boolean;
}

/** `logs <action>`: the one action there is. */
export function logsAction(positionals: string[]): 'reopen' {
  if (positionals.length !== 1 || positionals[0] !== 'reopen') {
    throw usageError(`logs takes one action, "reopen" (got ${positionals.length === 0 ? 'none' : JSON.stringify(positionals.join(' '))})`);
  }
  return 'reopen';
}

export function runLogsReopen(ctx: CliContext, json: boolean, kill: (pid: number, sig: NodeJS.Signals) => void = process.kill): number {
  const { live } = readEntries(runDir(ctx.env));
  const done: Reopened[] = live.map((e) => {
    let signalled = true;
    try {
      kill(e.pid, 'SIGHUP');
    } catch {
      signalled = false;
    }
    return { devId: e.devId, name: e.name, pid: e.pid, logFile: e.logFile, signalled };
  });
  if (json) {
    printJson(ctx, done);
    return 0;
  }
  if (done.length === 0) ctx.stdout.write('no running dmremap-ublk daemons\n');
  for (const r of done) {
    const who = escapeControls(r.name ?? `device ${r.devId}`);
    const where = r.logFile === null ? 'stderr (no log file)' : escapeControls(r.logFile);
    ctx.stdout.write(r.signalled ? `${who}: pid ${r.pid} told to reopen ${where}\n` : `${who}: pid ${r.pid} is gone\n`);
  }
  return 0;
}
