// A device whose daemon is gone while the kernel keeps it (ublk user recovery: its I/O waits, QUIESCED):
// what `list` and `status` show for it. The reason comes from the registry entry (the supervisor writes it
// when its daemon dies or when it gives up); a daemon that had no supervisor leaves none.
import { escapeControls } from '../terminal-text.js';
import { entryState, type RegistryEntry } from '../control/registry.js';
import { PROG } from './context.js';

export interface QuiescedView {
  devId: number;
  name: string | null;
  blockPath: string;
  charPath: string;
  state: 'quiesced';
  /** No daemon serves it; the pid of the last one. */
  pid: null;
  lastPid: number;
  since: string | null;
  reason: string;
  action: string;
}

/** The view of an entry whose device is quiesced (registry.ts entryState); null otherwise. */
export function quiescedView(e: RegistryEntry): QuiescedView | null {
  if (e.version !== 2 || entryState(e) !== 'quiesced') return null;
  return {
    devId: e.devId,
    name: e.name,
    blockPath: e.blockPath,
    charPath: e.charPath,
    state: 'quiesced',
    pid: null,
    lastPid: e.pid,
    since: e.quiesced?.since ?? null,
    reason: e.quiesced?.reason ?? `daemon pid ${e.pid} is gone (no supervisor)`,
    action: `run "${PROG} recover ${e.devId}" to serve it again, or "${PROG} del ${e.devId}" to remove it`,
  };
}

export function formatQuiesced(q: QuiescedView): string {
  const title = q.name === null ? q.blockPath : `${q.blockPath} (${q.name})`;
  const since = q.since === null ? '' : ` since ${q.since}`;
  // The reason (a registry file's, an error text) comes from outside: its control characters escaped.
  return [
    `${title}: quiesced, device id ${q.devId}, no daemon (last pid ${q.lastPid}): I/O waits`,
    `  reason ${q.reason}${since}`,
    `  action ${q.action}`,
  ]
    .map((l) => `${escapeControls(l)}\n`)
    .join('');
}
