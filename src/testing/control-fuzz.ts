// Generated abuse of the control socket, for the fuzz tests (test/unit/control-fuzz.test.ts on the fake addon,
// test/e2e/control-socket.test.ts against a live daemon through test/e2e/tools/control-fuzz.mjs). Seeded
// (seeded-random.ts): the same seed sends the same messages. Every message is one line of at most
// MAX_REQUEST_LINE_BYTES (the over-long lines are sent apart: they close their connection), never blank, so
// the daemon answers each with exactly one line.
import net from 'node:net';
import * as z from 'zod';
import { COMMAND_ACCESS, MAX_REQUEST_LINE_BYTES, requestSchema, responseSchema, type Command } from '../control/protocol.js';
import { seededRandom } from './seeded-random.js';

export type Rand = () => number;

/** Values of every JSON type and the edges of numbers, for fields of the wrong type or out of range. */
const ODD_VALUES: readonly unknown[] = [
  null, true, false, 0, -1, -0, 1.5, -1.5, 2 ** 53, 2 ** 64, -(2 ** 63), 1e308, -1e308, Number.MAX_SAFE_INTEGER + 2, 0.1,
  '', '0', '1234', 'ping', '__proto__', 'x'.repeat(300), '\u0000', '\ud800', [], [1], ['remap', '1'], [[[]]], {}, { a: 1 }, { __proto__: null },
];

/** Raw JSON texts of numbers JSON.stringify cannot write (overflowing to Infinity, exponents, negative zero). */
const RAW_NUMBERS = ['1e999', '-1e999', '1e-999', '-0', '123456789012345678901234567890', '0.0000000000000000000001', '9007199254740993'];

/**
 * Each command and its fields (besides id and cmd), from the request schemas. Without `watch`: a valid one
 * would turn the connection into an event stream (its own tests cover it).
 */
export const COMMAND_FIELDS: ReadonlyArray<{ cmd: Command; fields: string[] }> = requestSchema.options
  .map((o) => ({ cmd: o.shape.cmd.value as Command, fields: Object.keys(o.shape).filter((k) => k !== 'id' && k !== 'cmd') }))
  .filter((c) => c.cmd !== 'watch');

const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
const int = (r: Rand, n: number): number => Math.floor(r() * n);

/** A plausible value for `field` of `cmd` (valid often, not always: the daemon decides). */
function goodValue(r: Rand, cmd: Command, field: string): unknown {
  switch (field) {
    case 'sector':
      return int(r, 4096);
    case 'sectors':
      return Array.from({ length: 1 + int(r, 3) }, () => int(r, 4096));
    case 'offset':
      return cmd === 'scan_read' ? int(r, 16) * 4096 : int(r, 10);
    case 'limit':
      return 1 + int(r, 50);
    case 'bytes':
      return 4096 * (1 + int(r, 4));
    case 'words':
      return pick(r, [['ping'], ['status'], ['table'], ['remap', '8'], ['unremap', '8'], ['verify', '0'], ['bogus']]);
    case 'enabled':
    case 'narrow':
    case 'history':
      return r() < 0.5;
    case 'rateMib':
      return 1 + int(r, 64);
    default:
      return int(r, 10);
  }
}

/** A request of `cmd` with plausible fields (each optional one present half the time). */
export function validRequest(r: Rand, cmd: Command, id: number): Record<string, unknown> {
  const fields = COMMAND_FIELDS.find((c) => c.cmd === cmd)?.fields ?? [];
  const out: Record<string, unknown> = { id, cmd };
  for (const f of fields) if (r() < 0.7) out[f] = goodValue(r, cmd, f);
  return out;
}

/**
 * Nesting thousands deep; one message in 20 up to 21,000 deep (past any recursive walk's stack). Parsing them is
 * most of the run's time under TCG: the rest stay under 2,200 levels, which a recursive walk survives as well.
 */
function deepNesting(r: Rand): string {
  const depth = r() < 0.05 ? 1000 + int(r, 20_000) : 200 + int(r, 2000);
  switch (int(r, 3)) {
    case 0:
      return `${'['.repeat(depth)}${']'.repeat(depth)}`;
    case 1:
      return `{"id":1,"cmd":"message","words":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    default: {
      const d = Math.min(depth, 9000);
      return `{"id":2,"cmd":"status","x":${'{"a":'.repeat(d)}1${'}'.repeat(d)}}`;
    }
  }
}

function randomBytes(r: Rand): Buffer {
  const b = Buffer.alloc(1 + int(r, 300));
  for (let i = 0; i < b.length; i++) {
    let v = int(r, 256);
    if (v === 0x0a) v = 0x0b; // one line per message
    b[i] = v;
  }
  return b;
}

/** The kinds of message the fuzzer sends, each a function of the generator and a request id. */
export const MESSAGE_KINDS = {
  randomBytes: (r: Rand): Buffer => randomBytes(r),
  truncatedJson: (r: Rand, id: number): string => {
    const s = JSON.stringify(validRequest(r, pick(r, COMMAND_FIELDS).cmd, id));
    return s.slice(0, 1 + int(r, s.length - 1));
  },
  deepNesting: (r: Rand): string => deepNesting(r),
  oddNumber: (r: Rand, id: number): string => {
    const c = pick(r, COMMAND_FIELDS.filter((x) => x.fields.length > 0));
    const req = validRequest(r, c.cmd, id);
    const field = pick(r, [...c.fields, 'id']);
    const raw = pick(r, RAW_NUMBERS);
    return JSON.stringify({ ...req, [field]: '@@N@@' }).replace('"@@N@@"', raw);
  },
  wrongType: (r: Rand, id: number): string => {
    const c = pick(r, COMMAND_FIELDS);
    const req = validRequest(r, c.cmd, id);
    const field = pick(r, [...c.fields, 'id', 'cmd']);
    return JSON.stringify({ ...req, [field]: pick(r, ODD_VALUES) });
  },
  protoKeys: (r: Rand, id: number): string => {
    const req = validRequest(r, pick(r, COMMAND_FIELDS).cmd, id);
    const key = pick(r, ['__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString']);
    const value = JSON.stringify(pick(r, [{ cmd: 'remap', sector: 8 }, { admin: true }, null, 1, 'x']));
    const body = JSON.stringify(req).slice(1, -1);
    // Written as text: JSON.parse makes "__proto__" an own key (what an attacker's JSON does).
    return r() < 0.5 ? `{"${key}":${value},${body}}` : `{${body},"${key}":${value}}`;
  },
  unknownCommand: (r: Rand, id: number): string => JSON.stringify({ id, cmd: pick(r, ['', 'PING', 'rm', 'eval', '__proto__', 'x'.repeat(100)]) }),
  valid: (r: Rand, id: number): string => JSON.stringify(validRequest(r, pick(r, COMMAND_FIELDS).cmd, id)),
  wrongShape: (r: Rand, id: number): string => pick(r, ['null', '1', '"ping"', 'true', '[]', `[{"id":${id},"cmd":"ping"}]`, '{}', `{"id":${id}}`, '{"cmd":"ping"}']),
} as const;
export type MessageKind = keyof typeof MESSAGE_KINDS;
export const MESSAGE_KIND_NAMES = Object.keys(MESSAGE_KINDS) as MessageKind[];

export interface FuzzMessage {
  kind: MessageKind;
  /** The line without its newline. */
  data: Buffer;
}

/** `count` messages from `seed`, every kind in turn with random content. */
export function* fuzzMessages(seed: number, count: number): Generator<FuzzMessage> {
  const r = seededRandom(seed);
  for (let i = 0; i < count; i++) {
    const kind = MESSAGE_KIND_NAMES[i % MESSAGE_KIND_NAMES.length] as MessageKind;
    const m = MESSAGE_KINDS[kind](r, 1 + i);
    let data = typeof m === 'string' ? Buffer.from(m, 'utf8') : m;
    if (data.toString('utf8').trim() === '') data = Buffer.concat([Buffer.from('x'), data]);
    if (data.length > MAX_REQUEST_LINE_BYTES) data = data.subarray(0, MAX_REQUEST_LINE_BYTES);
    yield { kind, data };
  }
}

/** What one connection's fuzz run saw. */
export interface FuzzReport {
  sent: number;
  replies: number;
  /** Replies by error code ('ok' for a success). */
  codes: Record<string, number>;
  /** Successful replies to commands the peer may not send (must stay 0 for a control-group peer). */
  adminAllowed: number;
  /** Reply lines that are not a valid response. */
  malformed: string[];
}

/**
 * Sends `messages` down one connection (pipelined up to `window` unanswered) and checks each reply line is a
 * valid response; a success of an admin command is counted in adminAllowed.
 */
export function fuzzConnection(socketPath: string, messages: Iterable<FuzzMessage>, window = 32, timeoutMs = 120_000): Promise<FuzzReport> {
  const list = [...messages];
  const report: FuzzReport = { sent: 0, replies: 0, codes: {}, adminAllowed: 0, malformed: [] };
  // The messages that name an admin command at the top level (valid or not), by their place: the daemon
  // answers a connection's requests in order (ids repeat among the generated messages).
  const adminAt = new Set<number>();
  for (const [i, m] of list.entries()) {
    let v: unknown;
    try {
      v = JSON.parse(m.data.toString('utf8'));
    } catch {
      continue;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) continue;
    const { id, cmd } = v as { id?: unknown; cmd?: unknown };
    if (typeof id === 'number' && typeof cmd === 'string' && Object.hasOwn(COMMAND_ACCESS, cmd) && COMMAND_ACCESS[cmd as Command] === 'admin') adminAt.add(i);
  }
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`fuzz: ${report.replies} of ${list.length} replies within ${timeoutMs} ms`));
    }, timeoutMs);
    const sendMore = (): void => {
      while (report.sent < list.length && report.sent - report.replies < window) {
        sock.write(Buffer.concat([(list[report.sent] as FuzzMessage).data, Buffer.from('\n')]));
        report.sent++;
      }
    };
    sock.on('connect', sendMore);
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const at = report.replies++;
        let parsed: z.infer<typeof responseSchema> | null = null;
        try {
          const r = responseSchema.safeParse(JSON.parse(line));
          if (r.success) parsed = r.data;
        } catch {
          // counted below
        }
        if (parsed === null) {
          if (report.malformed.length < 10) report.malformed.push(line.slice(0, 200));
          continue;
        }
        const code = parsed.ok ? 'ok' : parsed.error.code;
        report.codes[code] = (report.codes[code] ?? 0) + 1;
        if (parsed.ok && adminAt.has(at)) report.adminAllowed++;
      }
      if (report.replies >= list.length) {
        clearTimeout(timer);
        sock.end();
        resolve(report);
      } else {
        sendMore();
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      if (report.replies < list.length) reject(new Error(`fuzz: the daemon closed the connection after ${report.replies} of ${list.length} replies`));
    });
  });
}

/**
 * Sends one line of `bytes` bytes (over the line limit): the daemon answers one E_PROTOCOL line and closes.
 * When the line is larger than the socket buffers, this client's write may fail (EPIPE) before it reads that
 * line (Node then drops what was received): `lines` is empty then, `closed` still true.
 */
export function overlongLine(socketPath: string, bytes: number, timeoutMs = 30_000): Promise<{ lines: string[]; closed: boolean }> {
  return new Promise((resolve) => {
    const sock = net.createConnection(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ lines: buf.split('\n').filter((l) => l !== ''), closed: false });
    }, timeoutMs);
    sock.on('connect', () => sock.write(`{"id":1,"cmd":"ping","pad":"${'a'.repeat(bytes)}"}\n`));
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => (buf += d));
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(timer);
      resolve({ lines: buf.split('\n').filter((l) => l !== ''), closed: true });
    });
  });
}

/**
 * Opens `count` connections at once, each sending a ping: how many got pong, how many were turned away
 * (E_PROTOCOL too many clients), and any other outcome.
 */
export async function connectionFlood(socketPath: string, count: number, timeoutMs = 30_000): Promise<{ pong: number; refused: number; other: string[] }> {
  const socks: net.Socket[] = [];
  const connected: Array<Promise<void>> = [];
  const answers = Array.from({ length: count }, () => {
    const sock = net.createConnection(socketPath);
    socks.push(sock);
    sock.setEncoding('utf8');
    connected.push(new Promise((resolve) => {
      sock.once('connect', () => resolve());
      sock.once('error', () => resolve());
    }));
    return new Promise<string>((resolve) => {
      let buf = '';
      const timer = setTimeout(() => resolve('timeout'), timeoutMs);
      sock.on('data', (d: string) => {
        buf += d;
        if (buf.includes('\n')) {
          clearTimeout(timer);
          resolve(buf.slice(0, buf.indexOf('\n')));
        }
      });
      sock.on('error', (e) => {
        clearTimeout(timer);
        resolve(`error ${e.message}`);
      });
    });
  });
  // Every connection is open before any sends (those turned away get their line first: a ping written to
  // a connection the daemon closed would fail with EPIPE and lose that line), then all send a ping at once.
  await Promise.all(connected);
  await new Promise((r) => setTimeout(r, 1000));
  for (const s of socks) if (!s.destroyed && s.readableLength === 0 && !s.readableEnded) s.write('{"id":1,"cmd":"ping"}\n', () => undefined);
  const got = await Promise.all(answers);
  for (const s of socks) s.destroy();
  const out = { pong: 0, refused: 0, other: [] as string[] };
  for (const a of got) {
    if (a.includes('"result":"pong"')) out.pong++;
    else if (a.includes('too many clients')) out.refused++;
    else out.other.push(a.slice(0, 200));
  }
  return out;
}

/**
 * A client that pipelines `count` pings and reads nothing for `holdMs`, then closes. Resolves with whether
 * the daemon closed it first.
 */
export function neverReads(socketPath: string, count: number, holdMs: number): Promise<{ closedByDaemon: boolean; written: number }> {
  return new Promise((resolve) => {
    const sock = net.createConnection(socketPath);
    let closedByDaemon = false;
    let written = 0;
    const finish = (): void => {
      const byDaemon = closedByDaemon;
      sock.destroy();
      resolve({ closedByDaemon: byDaemon, written });
    };
    sock.on('connect', () => {
      sock.pause();
      const write = (): void => {
        while (written < count) {
          written++;
          if (!sock.write(`{"id":${written},"cmd":"ping"}\n`)) {
            sock.once('drain', write);
            return;
          }
        }
      };
      write();
      // Held from the connection on (the caller's event loop may be busy before it).
      setTimeout(finish, holdMs);
    });
    sock.on('error', () => finish());
    sock.on('close', () => (closedByDaemon = true));
  });
}
