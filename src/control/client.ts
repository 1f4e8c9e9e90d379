// The CLI's end of the control socket: connect, send one request, wait for its response (with a timeout),
// validate it against the command's result schema.
import net from 'node:net';
import { DmrError, errorCodeOf, isErrorCode } from '../errors.js';
import { describeIssues, resultSchemas, responseSchema, type Command, type RequestOf, type ResultOf } from './protocol.js';

export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

type Args<C extends Command> = Omit<RequestOf<C>, 'id' | 'cmd'>;

let nextId = 1;

export async function request<C extends Command>(
  socketPath: string,
  cmd: C,
  args: Args<C>,
  timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS,
): Promise<ResultOf<C>> {
  const id = nextId++;
  const line = await exchange(socketPath, `${JSON.stringify({ ...args, id, cmd })}\n`, timeoutMs);
  return parseResponse(socketPath, line, cmd, id);
}

/** A line the daemon at `socketPath` sent, as JSON (E_PROTOCOL when it is not). */
export function parseJsonLine(socketPath: string, line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    throw new DmrError('E_PROTOCOL', `daemon at ${socketPath} sent invalid JSON`);
  }
}

/**
 * The result of request `id` for `cmd` in the daemon's response `line`: the daemon's own error when it
 * refused, E_PROTOCOL for a line that is not a response to that request with a valid `cmd` result.
 */
export function parseResponse<C extends Command>(socketPath: string, line: string, cmd: C, id: number): ResultOf<C> {
  const resp = responseSchema.safeParse(parseJsonLine(socketPath, line));
  if (!resp.success) {
    throw new DmrError('E_PROTOCOL', `daemon at ${socketPath} sent a malformed response: ${describeIssues(resp.error)}`);
  }
  const r = resp.data;
  if (!r.ok) throw new DmrError(isErrorCode(r.error.code) ? r.error.code : 'E_PROTOCOL', r.error.message);
  if (r.id !== id) throw new DmrError('E_PROTOCOL', `daemon answered request ${r.id}, expected ${id}`);
  const result = resultSchemas[cmd].safeParse(r.result);
  if (!result.success) {
    throw new DmrError('E_PROTOCOL', `daemon sent a malformed ${cmd} result: ${describeIssues(result.error)}`);
  }
  return result.data as ResultOf<C>;
}

/** Writes `payload`, resolves with the first complete line the peer sends back. */
function exchange(socketPath: string, payload: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(socketPath);
    let buf = '';
    let done = false;
    const finish = (err: Error | null, line?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(line as string);
    };
    const timer = setTimeout(
      () => finish(new DmrError('E_TIMEOUT', `daemon at ${socketPath} did not answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(payload));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl >= 0) finish(null, buf.slice(0, nl));
    });
    sock.on('end', () => finish(new DmrError('E_DAEMON', `daemon at ${socketPath} closed the connection`)));
    sock.on('error', (e) => {
      const code = errorCodeOf(e);
      const why = code === 'ENOENT' || code === 'ECONNREFUSED' ? 'is not running' : `is not reachable (${code ?? e.message})`;
      finish(new DmrError('E_DAEMON', `daemon at ${socketPath} ${why}`, { cause: e }));
    });
  });
}
