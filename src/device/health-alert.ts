// The alert command (config key alert_command): a program the daemon runs when a device's health changes
// state or a forecast alarm begins, like smartd's `-M exec`. It runs through /bin/sh -c (so it may carry
// arguments), with DMREMAP_DEVICE, DMREMAP_NAME, DMREMAP_STATE, DMREMAP_PREVIOUS_STATE, DMREMAP_SCORE,
// DMREMAP_REASON and DMREMAP_ALARM (the forecast alarm that began, empty for none) in its environment, stdin and stdout closed. It never blocks the daemon: spawned, not waited
// for on the JS thread; killed (its whole process group) after the timeout; its failure is logged, never fatal.
import { spawn } from 'node:child_process';
import type { Logger } from '../log.js';

/** An alert command still running after this long is killed. */
export const ALERT_TIMEOUT_MS = 30_000;
/** The end of its stderr kept for the log line of a failure. */
const STDERR_KEEP_BYTES = 1024;

export interface AlertEnv {
  device: string;
  name: string | null;
  state: string;
  previous: string;
  score: number;
  reason: string;
  /** The forecast alarm that began with this alert (acceleration, spare_forecast), null for none. */
  alarm?: string | null;
}

export interface AlertOutcome {
  ok: boolean;
  code: number | null;
  signal: string | null;
  timedOut: boolean;
  /** The spawn's own failure (no /bin/sh), else null. */
  error: string | null;
  stderr: string;
}

/** The environment the command sees: the daemon's, and the alert's variables. */
export function alertEnvironment(a: AlertEnv, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return {
    ...base,
    DMREMAP_DEVICE: a.device,
    DMREMAP_NAME: a.name ?? '',
    DMREMAP_STATE: a.state,
    DMREMAP_PREVIOUS_STATE: a.previous,
    DMREMAP_SCORE: String(a.score),
    DMREMAP_REASON: a.reason,
    DMREMAP_ALARM: a.alarm ?? '',
  };
}

/** Runs `command` for alert `a`; resolves (never rejects) when it ended, failed to start, or was killed. Logs the outcome. */
/** How long the output of an alert command that exited is still read (a job it left may hold the pipe). */
const EXIT_STDERR_GRACE_MS = 200;

export function runAlert(command: string, a: AlertEnv, log: Logger, timeoutMs = ALERT_TIMEOUT_MS): Promise<AlertOutcome> {
  return new Promise((resolve) => {
    let stderr = '';
    let timedOut = false;
    let settled = false;
    const finish = (o: Omit<AlertOutcome, 'stderr' | 'timedOut'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const out: AlertOutcome = { ...o, timedOut, stderr: stderr.trim() };
      const fields = { command, state: a.state, previous: a.previous, code: out.code, signal: out.signal, ...(out.stderr !== '' ? { stderr: out.stderr } : {}) };
      if (out.ok) log.info(fields, 'alert command ran');
      else if (timedOut) log.error({ ...fields, timeoutMs }, 'alert command did not finish in time: killed');
      else if (out.error !== null) log.error({ ...fields, err: out.error }, 'alert command could not be started');
      else log.error(fields, 'alert command failed');
      resolve(out);
    };
    let child: ReturnType<typeof spawn>;
    try {
      // Its own process group: a timeout kills what the shell started too.
      child = spawn('/bin/sh', ['-c', command], { env: alertEnvironment(a), stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    } catch (e) {
      settled = true;
      const out: AlertOutcome = { ok: false, code: null, signal: null, timedOut: false, error: e instanceof Error ? e.message : String(e), stderr: '' };
      log.error({ command, err: out.error }, 'alert command could not be started');
      resolve(out);
      return;
    }
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString('utf8')).slice(-STDERR_KEEP_BYTES);
    });
    child.on('error', (e) => finish({ ok: false, code: null, signal: null, error: e.message }));
    // The shell's exit decides, not the end of its stderr: a job it left behind (`mail ... &`, or one that
    // left the process group with setsid) may hold stderr open for as long as it runs. What stderr says
    // within EXIT_STDERR_GRACE_MS of the exit is kept; then the pipe is let go.
    child.on('exit', (code, signal) => {
      const done = (): void => {
        finish({ ok: code === 0 && !timedOut, code, signal, error: null });
        child.stderr?.destroy();
      };
      if (child.stderr === null || child.stderr.readableEnded) done();
      else {
        const grace = setTimeout(done, EXIT_STDERR_GRACE_MS);
        child.stderr.once('close', () => {
          clearTimeout(grace);
          done();
        });
      }
    });
  });
}
