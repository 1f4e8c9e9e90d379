// `dmremap-ublk health <device> [--json] [--history]` and `health <device> reset [--json]`: the health
// model's judgement of a device (docs/HEALTH.md), from its daemon over the control socket.
import { request } from '../control/client.js';
import { usageError } from '../errors.js';
import { describeHealth } from '../health/report.js';
import { printJson, type CliContext } from './context.js';
import type { HealthFlags } from './schemas.js';
import { liveEntry } from './status.js';

export const HEALTH_ACTIONS = ['reset'] as const;
export type HealthAction = (typeof HEALTH_ACTIONS)[number];

/** `<device> [reset]`: the device, and the action (none: show the health). */
export function healthTarget(positionals: string[]): { target: string; action: HealthAction | null } {
  const [target, action, ...rest] = positionals;
  if (target === undefined || target === '') throw usageError('missing device: dmremap-ublk health <device> [--json] [--history] | health <device> reset');
  if (rest.length > 0) throw usageError(`health takes a device and at most one action, got ${positionals.length} arguments`);
  if (action === undefined) return { target, action: null };
  if (!(HEALTH_ACTIONS as readonly string[]).includes(action)) {
    throw usageError(`unknown health action ${JSON.stringify(action)} (actions: ${HEALTH_ACTIONS.join(', ')})`);
  }
  return { target, action: action as HealthAction };
}

export async function runHealth(ctx: CliContext, target: string, action: HealthAction | null, flags: HealthFlags): Promise<number> {
  if (flags.history && action !== null) throw usageError('--history goes with "health <device>", not with reset');
  const sock = liveEntry(ctx, target).socket;
  const h = action === 'reset' ? await request(sock, 'health_reset', {}) : await request(sock, 'health', flags.history ? { history: true } : {});
  if (flags.json) printJson(ctx, h);
  else ctx.stdout.write(`${action === 'reset' ? 'health history reset: a new series begins now\n' : ''}${describeHealth(h)}`);
  return 0;
}
