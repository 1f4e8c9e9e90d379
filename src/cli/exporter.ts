// `dmremap-ublk exporter [--listen HOST:PORT] [--json]`: serves Prometheus metrics of every device on this
// host at http://HOST:PORT/metrics until SIGINT or SIGTERM (src/exporter/). Prints where it listens (a JSON
// line with --json); a device that goes down (or comes back) is one line on stderr, once per change.
import * as z from 'zod';
import { runDir } from '../paths.js';
import { printJson, PROG, type CliContext } from './context.js';
import { DEFAULT_LISTEN, formatAddress, listenSchema } from '../exporter/listen.js';
import type { DeviceSnapshot } from '../exporter/collect.js';
import { escapeControls } from '../terminal-text.js';

export const exporterOptions = {
  listen: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const exporterFlagsSchema = z.object({
  listen: listenSchema.default(listenSchema.parse(DEFAULT_LISTEN)),
  json: z.boolean().default(false),
  help: z.boolean().optional(),
});
export type ExporterFlags = z.output<typeof exporterFlagsSchema>;

/**
 * The stderr line for a device that is down. Its path, name and reason come from the registry and the
 * errors met (a socket path, a kernel's error text): control characters in them are escaped
 * (terminal-text.ts), so one line stays one line and never drives the terminal.
 */
export function downLine(s: Pick<DeviceSnapshot, 'device' | 'name' | 'error'>): string {
  const why = s.error ?? 'down';
  return `${PROG} exporter: ${escapeControls(s.device)}${s.name === '' ? '' : ` (${escapeControls(s.name)})`} is down: ${escapeControls(why)}\n`;
}

export async function runExporter(ctx: CliContext, flags: ExporterFlags, stop?: AbortSignal): Promise<number> {
  const { Exporter } = await import('../exporter/server.js');
  const lastDown = new Map<string, string>();
  const onDown = (s: DeviceSnapshot): void => {
    const why = s.error ?? 'down';
    if (lastDown.get(s.device) === why) return;
    lastDown.set(s.device, why);
    ctx.stderr.write(downLine(s));
  };
  const exporter = await Exporter.listen(flags.listen, { runDir: runDir(ctx.env), onDown });
  const where = formatAddress(flags.listen.host, exporter.address.port);
  if (flags.json) printJson(ctx, { listening: where, url: `http://${where}/metrics`, pid: process.pid });
  else ctx.stdout.write(`serving metrics at http://${where}/metrics\n`);
  await new Promise<void>((resolve) => {
    const done = (): void => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
    stop?.addEventListener('abort', done, { once: true });
  });
  await exporter.close();
  return 0;
}
