// The daemon's end of the control socket: a unix socket (mode 0600, in the 0700 run directory) that reads
// newline-delimited JSON requests, runs them one at a time per connection, and writes one response line each.
// A `watch` request turns its connection into a stream of device events (watch-stream.ts) instead.
import fs from 'node:fs';
import net from 'node:net';
import type { Logger } from '../log.js';
import { DmrError, errorCodeOf, toDmrError } from '../errors.js';
import type { DeviceEventListener } from '../device/device-events.js';
import { WatchStream, type WatchLimits } from './watch-stream.js';
import {
  MAX_REQUEST_LINE_BYTES,
  parseRequestLine,
  type Command,
  type Handlers,
  type Request,
  type Response,
} from './protocol.js';

export interface ControlServerOptions {
  socketPath: string;
  handlers: Handlers;
  log: Logger;
  maxClients?: number;
  maxLineBytes?: number;
  /** A connection that sends nothing for this long is closed (a watching one is not). */
  idleTimeoutMs?: number;
  /** The device's events, for `watch` (without it, watch is refused). */
  events?: { on(fn: DeviceEventListener): () => void };
  /** The exported device, named in a watcher's `missed` events. */
  device?: () => string;
  watchLimits?: WatchLimits;
  /**
   * Watchers at most (default 32). A connection that subscribes leaves the clients' count (maxClients): idle
   * watchers, which never time out, can never lock `status`, `shutdown` or `del` out of the socket.
   */
  maxWatchers?: number;
}

export class ControlServer {
  private readonly server: net.Server;
  private readonly clients = new Set<net.Socket>();
  private readonly watcherSocks = new Set<net.Socket>();
  private readonly maxWatchers: number;
  private readonly maxClients: number;
  private readonly maxLineBytes: number;
  private readonly idleTimeoutMs: number;
  private watchers = 0;

  constructor(private readonly opts: ControlServerOptions) {
    this.maxClients = opts.maxClients ?? 16;
    this.maxLineBytes = opts.maxLineBytes ?? MAX_REQUEST_LINE_BYTES;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
    this.maxWatchers = opts.maxWatchers ?? 32;
    this.server = net.createServer((sock) => this.accept(sock));
  }

  /** Binds the socket. A file already at the path is removed first: the caller owns that path. */
  async listen(): Promise<void> {
    const p = this.opts.socketPath;
    try {
      fs.unlinkSync(p);
    } catch (e) {
      if (errorCodeOf(e) !== 'ENOENT') throw new DmrError('E_RUN_DIR', `cannot remove old socket ${p}: ${String(e)}`);
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error): void => reject(new DmrError('E_RUN_DIR', `cannot listen on ${p}: ${e.message}`));
      this.server.once('error', onError);
      this.server.listen(p, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    fs.chmodSync(p, 0o600);
    this.server.on('error', (e) => this.opts.log.error({ err: e }, 'control socket error'));
  }

  /** Stops accepting, lets clients read what was already written, closes them, and removes the socket file. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of [...this.clients, ...this.watcherSocks]) c.end();
    const t = setTimeout(() => {
      for (const c of [...this.clients, ...this.watcherSocks]) c.destroy();
    }, 1000);
    await closed;
    clearTimeout(t);
    try {
      fs.unlinkSync(this.opts.socketPath);
    } catch (e) {
      if (errorCodeOf(e) !== 'ENOENT') this.opts.log.warn({ err: e }, 'cannot remove control socket');
    }
  }

  private accept(sock: net.Socket): void {
    if (this.clients.size >= this.maxClients) {
      refuse(sock, 'too many clients');
      return;
    }
    this.clients.add(sock);
    sock.setEncoding('utf8');
    sock.setTimeout(this.idleTimeoutMs, () => sock.destroy());
    sock.on('close', () => {
      this.clients.delete(sock);
      this.watcherSocks.delete(sock);
    });
    sock.on('error', (e) => this.opts.log.debug({ err: e }, 'control client error'));

    let buf = '';
    let queue = Promise.resolve();
    const conn: Conn = { sock, watch: null };
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!this.checkLength(sock, line)) return;
        if (line.trim() === '') continue;
        queue = queue.then(() => this.handleLine(conn, line));
      }
      this.checkLength(sock, buf);
    });
  }

  /** A line over the limit gets one error reply and the connection is closed; nothing is executed. */
  private checkLength(sock: net.Socket, line: string): boolean {
    if (Buffer.byteLength(line) <= this.maxLineBytes) return true;
    sock.removeAllListeners('data');
    refuse(sock, `request line longer than ${this.maxLineBytes} bytes`);
    return false;
  }

  private async handleLine(conn: Conn, line: string): Promise<void> {
    const { sock } = conn;
    const parsed = parseRequestLine(line);
    if (conn.watch !== null) {
      const id = parsed.ok ? parsed.request.id : parsed.id;
      conn.watch.sendLine(reply({ id, ok: false, error: { code: 'E_PROTOCOL', message: 'this connection is watching: it takes no more requests (open another)' } }));
      return;
    }
    let response: Response;
    if (!parsed.ok) {
      response = { id: parsed.id, ok: false, error: { code: 'E_PROTOCOL', message: parsed.message } };
    } else if (parsed.request.cmd === 'watch') {
      response = this.watch(conn, parsed.request.id);
    } else {
      response = await this.dispatch(parsed.request);
    }
    if (conn.watch === null) {
      if (!sock.destroyed && sock.writable) sock.write(reply(response));
    }
  }

  /**
   * Subscribes the connection to the device's events: the reply first, then the events; no idle timeout
   * from now on. The subscription ends with the connection (close() ends every connection at stop).
   */
  private watch(conn: Conn, id: number): Response {
    const events = this.opts.events;
    if (events === undefined) return { id, ok: false, error: { code: 'E_PROTOCOL', message: 'this daemon has no events to watch' } };
    const { sock } = conn;
    if (this.watcherSocks.size >= this.maxWatchers) {
      return { id, ok: false, error: { code: 'E_PROTOCOL', message: `too many watchers (${this.maxWatchers}): this one is refused` } };
    }
    if (sock.destroyed || !sock.writable) return { id, ok: true, result: { watching: true } };
    // From now on a watcher, not a client: it leaves the clients' count (see maxWatchers).
    this.clients.delete(sock);
    this.watcherSocks.add(sock);
    sock.write(reply({ id, ok: true, result: { watching: true } }));
    sock.setTimeout(0);
    const stream = new WatchStream(sock, this.opts.device ?? (() => ''), this.opts.watchLimits);
    conn.watch = stream;
    const off = events.on((ev) => stream.send(ev));
    this.watchers++;
    this.opts.log.info({ watchers: this.watchers }, 'a watcher subscribed');
    sock.once('close', () => {
      off();
      stream.close();
      this.watchers--;
      this.opts.log.info({ watchers: this.watchers, missed: stream.missedNow }, 'a watcher left');
    });
    return { id, ok: true, result: { watching: true } };
  }

  private async dispatch(req: Exclude<Request, { cmd: 'watch' }>): Promise<Response> {
    try {
      const handler = this.opts.handlers[req.cmd] as (r: Request) => unknown;
      const result = await handler(req);
      return { id: req.id, ok: true, result };
    } catch (e) {
      const err = toDmrError(e);
      this.opts.log.warn({ cmd: req.cmd satisfies Command, code: err.code, err: err.message }, 'control request failed');
      return { id: req.id, ok: false, error: err.toJSON() };
    }
  }
}

interface Conn {
  sock: net.Socket;
  /** Set once the connection watches: it then only streams events. */
  watch: WatchStream | null;
}

/** Sends one E_PROTOCOL error and closes the connection once it is flushed, whatever the peer does. */
function refuse(sock: net.Socket, message: string): void {
  sock.end(reply({ id: null, ok: false, error: { code: 'E_PROTOCOL', message } }), () => sock.destroy());
}

function reply(r: Response): string {
  return `${JSON.stringify(r)}\n`;
}
