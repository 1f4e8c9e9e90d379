// Telling systemd how a daemon run by a Type=notify unit is doing (sd_notify, through the addon: Node has no
// unix datagram sockets): READY=1 once the device is live and its stable name linked, STATUS= lines while it
// serves, STOPPING=1 when it begins to stop. Outside systemd (no NOTIFY_SOCKET) nothing is sent. A failed
// send is logged, never fatal: the device serves whether or not the service manager hears of it.
import type { Logger } from '../log.js';
import type { NativeAddon } from '../native.js';

/** How often a serving daemon under systemd refreshes its STATUS= line (remaps change while it runs). */
export const STATUS_INTERVAL_MS = 30_000;

export interface Notifier {
  /** Sends `state` if a service manager listens; returns whether it was sent. */
  send(state: string): boolean;
  readonly enabled: boolean;
}

export function notifier(native: NativeAddon, env: NodeJS.ProcessEnv, log: Logger): Notifier {
  const socket = env.NOTIFY_SOCKET;
  const enabled = socket !== undefined && socket !== '';
  return {
    enabled,
    send(state: string): boolean {
      if (!enabled) return false;
      try {
        return native.sdNotify(state);
      } catch (e) {
        log.warn({ err: e instanceof Error ? e.message : String(e), socket }, 'sd_notify failed');
        return false;
      }
    },
  };
}

/** The STATUS= text of a serving device: "serving /dev/ublkb0 (data), 3 remaps". */
export function servingStatus(blockPath: string, name: string | null, remaps: number | null): string {
  const who = name === null ? blockPath : `${blockPath} (${name})`;
  return remaps === null ? `serving ${who}` : `serving ${who}, ${remaps} remap${remaps === 1 ? '' : 's'}`;
}

/** The message sent once the device is live: READY=1, the daemon's pid and its status line. */
export function readyMessage(pid: number, status: string): string {
  return `READY=1\nMAINPID=${pid}\nSTATUS=${status}`;
}
