// The CLI's end of a `watch` subscription: connect, send the watch request, check its reply, then hand over
// each event line (checked against DeviceEvent's schema) until the caller aborts. The daemon closing the
// connection, or going away, is an error (E_DAEMON), as for any request.
import net from 'node:net';
import { DmrError, errorCodeOf } from '../errors.js';
import { deviceEventSchema, type DeviceEvent } from '../device/device-events.js';
import { parseJsonLine, parseResponse } from './client.js';
import { describeIssues } from './protocol.js';

/** How long the daemon has to answer the watch request itself. */
export const WATCH_REPLY_TIMEOUT_MS = 10_000;

/** The id of the one request a watch connection sends. */
const WATCH_REQUEST_ID = 1;

export type EventHandler = (ev: DeviceEvent, line: string) => void;

/**
 * Resolves when `signal` aborts (the connection is closed then); rejects with a DmrError when the daemon
 * refuses the request, is not there, sends something that is not an event, or closes the connection.
 */
export function watchEvents(socketPath: string, onEvent: EventHandler, signal?: AbortSignal, replyTimeoutMs = WATCH_REPLY_TIMEOUT_MS): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      resolve();
      return;
    }
    const sock = net.createConnection(socketPath);
    let buf = '';
    let replied = false;
    let done = false;
    const finish = (err: Error | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      sock.destroy();
      if (err) reject(err);
      else resolve();
    };
    const onAbort = (): void => finish(null);
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => finish(new DmrError('E_TIMEOUT', `daemon at ${socketPath} did not answer within ${replyTimeoutMs} ms`)), replyTimeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify({ id: WATCH_REQUEST_ID, cmd: 'watch' })}\n`));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while (!done && (nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          if (!replied) {
            parseResponse(socketPath, line, 'watch', WATCH_REQUEST_ID);
            replied = true;
            clearTimeout(timer);
          } else {
            onEvent(parseEvent(socketPath, line), line);
          }
        } catch (e) {
          finish(e instanceof Error ? e : new Error(String(e)));
        }
      }
    });
    sock.on('end', () => finish(new DmrError('E_DAEMON', `daemon at ${socketPath} closed the connection`)));
    sock.on('close', () => finish(new DmrError('E_DAEMON', `daemon at ${socketPath} closed the connection`)));
    sock.on('error', (e) => {
      const code = errorCodeOf(e);
      // Once watching, any failure of the connection is the daemon going away (a stop can reset it).
      const why = replied
        ? `closed the connection (${code ?? e.message})`
        : code === 'ENOENT' || code === 'ECONNREFUSED'
          ? 'is not running'
          : `is not reachable (${code ?? e.message})`;
      finish(new DmrError('E_DAEMON', `daemon at ${socketPath} ${why}`, { cause: e }));
    });
  });
}

function parseEvent(socketPath: string, line: string): DeviceEvent {
  const ev = deviceEventSchema.safeParse(parseJsonLine(socketPath, line));
  if (!ev.success) throw new DmrError('E_PROTOCOL', `daemon at ${socketPath} sent a malformed event: ${describeIssues(ev.error)}`);
  return ev.data;
}
