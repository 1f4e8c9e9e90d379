// The daemon's end of the control socket: a unix socket that reads newline-delimited JSON requests, runs them
// one at a time per connection, and writes one response line each. A `watch` request turns its connection
// into a stream of device events (watch-stream.ts) instead.
//
// Who may connect and what they may send is decided on the peer's kernel credentials (access.ts): root and
// the daemon's own user everything, the control group (when configured: the socket is then 0660 with that
// group, else 0600) the read-only commands, anyone else nothing (refused at connect, one line).
//
// Bounds per connection, so that no client can grow the daemon's memory: a request line is at most
// maxLineBytes; at most maxQueued requests are parsed and not yet answered (then the socket is not read
// until one is answered: the rest waits in the kernel and in the client); while more than maxUnsentBytes of
// replies wait to be sent (a client that does not read), nothing more is read or run, and a connection that
// stays so for stallTimeoutMs is closed. A connection that sends nothing for idleTimeoutMs is closed.
import fs from 'node:fs';
import net from 'node:net';
import type { Logger } from '../log.js';
import { DmrError, errorCodeOf, toDmrError, type ErrorCode } from '../errors.js';
import type { DeviceEventListener } from '../device/device-events.js';
import { WatchStream, type WatchLimits } from './watch-stream.js';
import { checkPeer, commandRefusal, type AccessPolicy, type PeerAccess } from './access.js';
import {
  MAX_REQUEST_LINE_BYTES,
  parseRequestLine,
  type Command,
  type Handlers,
  type Request,
  type Response,
} from './protocol.js';

/** Requests of one connection parsed and not yet answered, at most (default). */
export const MAX_QUEUED_REQUESTS = 64;
/** Reply bytes waiting to be sent to one connection above which it is neither read nor served (default). */
export const MAX_UNSENT_BYTES = 1 << 20;
/** How long a connection may stay over MAX_UNSENT_BYTES before it is closed (default). */
export const STALL_TIMEOUT_MS = 30_000;
/** Client slots only admin peers (root, the daemon's user) may take: read-only peers get maxClients minus these. */
export const ADMIN_RESERVED_CLIENTS = 4;
/** Watcher slots only admin peers may take: read-only watchers get maxWatchers minus these. */
export const ADMIN_RESERVED_WATCHERS = 8;

export interface ControlServerOptions {
  socketPath: string;
  handlers: Handlers;
  log: Logger;
  /** Who may connect and what they may send (access.ts); the socket's mode and group follow controlGid. */
  access: AccessPolicy;
  /**
   * Clients at most (default 16); read-only peers may hold at most maxClients - ADMIN_RESERVED_CLIENTS of them,
   * so that control group members holding connections open can never lock root's `shutdown` or `del` out.
   */
  maxClients?: number;
  maxLineBytes?: number;
  /** A connection that sends nothing for this long is closed (a watching one is not). */
  idleTimeoutMs?: number;
  maxQueued?: number;
  maxUnsentBytes?: number;
  stallTimeoutMs?: number;
  /** The device's events, for `watch` (without it, watch is refused). */
  events?: { on(fn: DeviceEventListener): () => void };
  /** The exported device, named in a watcher's `missed` events. */
  device?: () => string;
  watchLimits?: WatchLimits;
  /**
   * Watchers at most (default 32). A connection that subscribes leaves the clients' count (maxClients): idle
   * watchers, which never time out, can never lock `status`, `shutdown` or `del` out of the socket.
   * Read-only peers may hold at most maxWatchers - ADMIN_RESERVED_WATCHERS of them.
   */
  maxWatchers?: number;
}

/** What the server holds for its connections now (tests, and the fuzz run's memory check). */
export interface ControlServerLoad {
  clients: number;
  /** Of those, read-only peers' (the control group's). */
  readOnlyClients: number;
  watchers: number;
  /** Of those, read-only peers'. */
  readOnlyWatchers: number;
  /** Requests parsed and not yet answered, all connections. */
  queued: number;
  /** Received text not yet parsed into requests, all connections (characters). */
  unparsed: number;
  /** Reply bytes waiting to be sent, all connections (watchers' too). */
  unsentBytes: number;
  /** The most any one connection had queued, since start. */
  maxQueuedSeen: number;
}

export class ControlServer {
  private readonly server: net.Server;
  private readonly clients = new Set<net.Socket>();
  private readonly watcherSocks = new Set<net.Socket>();
  private readonly conns = new Set<Conn>();
  private readonly maxWatchers: number;
  private readonly maxClients: number;
  private readonly maxReadOnlyClients: number;
  private readonly maxReadOnlyWatchers: number;
  private readonly maxLineBytes: number;
  private readonly idleTimeoutMs: number;
  private readonly maxQueued: number;
  private readonly maxUnsentBytes: number;
  private readonly stallTimeoutMs: number;
  private watchers = 0;
  private maxQueuedSeen = 0;

  constructor(private readonly opts: ControlServerOptions) {
    this.maxClients = opts.maxClients ?? 16;
    this.maxLineBytes = opts.maxLineBytes ?? MAX_REQUEST_LINE_BYTES;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
    this.maxWatchers = opts.maxWatchers ?? 32;
    this.maxReadOnlyClients = Math.max(0, this.maxClients - ADMIN_RESERVED_CLIENTS);
    this.maxReadOnlyWatchers = Math.max(0, this.maxWatchers - ADMIN_RESERVED_WATCHERS);
    this.maxQueued = opts.maxQueued ?? MAX_QUEUED_REQUESTS;
    this.maxUnsentBytes = opts.maxUnsentBytes ?? MAX_UNSENT_BYTES;
    this.stallTimeoutMs = opts.stallTimeoutMs ?? STALL_TIMEOUT_MS;
    this.server = net.createServer((sock) => this.accept(sock));
  }

  /**
   * Binds the socket: mode 0600, or 0660 with the control group as its group when one is configured. A file
   * already at the path is removed first: the caller owns that path.
   */
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
    const gid = this.opts.access.controlGid;
    try {
      if (gid !== null) fs.chownSync(p, fs.statSync(p).uid, gid);
      fs.chmodSync(p, gid === null ? 0o600 : 0o660);
    } catch (e) {
      this.server.close();
      throw new DmrError('E_RUN_DIR', `cannot set the mode of ${p}: ${errorCodeOf(e) ?? String(e)}`, { cause: e });
    }
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

  load(): ControlServerLoad {
    let queued = 0;
    let unparsed = 0;
    let unsentBytes = 0;
    let readOnlyClients = 0;
    let readOnlyWatchers = 0;
    for (const c of this.conns) {
      if (c.access === 'read') {
        if (this.clients.has(c.sock)) readOnlyClients++;
        if (this.watcherSocks.has(c.sock)) readOnlyWatchers++;
      }
      queued += c.pending;
      unparsed += c.buf.length - c.pos;
      unsentBytes += c.sock.writableLength;
    }
    return { clients: this.clients.size, readOnlyClients, watchers: this.watcherSocks.size, readOnlyWatchers, queued, unparsed, unsentBytes, maxQueuedSeen: this.maxQueuedSeen };
  }

  /** How many of `socks` are read-only peers' connections. */
  private countRead(socks: Set<net.Socket>): number {
    let n = 0;
    for (const c of this.conns) if (c.access === 'read' && socks.has(c.sock)) n++;
    return n;
  }

  private accept(sock: net.Socket): void {
    let access: PeerAccess;
    try {
      const peer = checkPeer(sock, this.opts.access);
      access = peer.access;
      this.opts.log.debug({ uid: peer.cred.uid, pid: peer.cred.pid, access }, 'control client connected');
    } catch (e) {
      const err = toDmrError(e);
      this.opts.log.warn({ err: err.message }, 'control client refused');
      refuse(sock, err.code, err.message);
      return;
    }
    if (this.clients.size >= this.maxClients) {
      refuse(sock, 'E_PROTOCOL', 'too many clients');
      return;
    }
    if (access === 'read' && this.countRead(this.clients) >= this.maxReadOnlyClients) {
      refuse(sock, 'E_PROTOCOL', `too many clients: the control group may hold ${this.maxReadOnlyClients} connections (the rest are kept for root)`);
      return;
    }
    this.clients.add(sock);
    sock.setEncoding('utf8');
    sock.setTimeout(this.idleTimeoutMs, () => sock.destroy());
    const conn: Conn = { sock, access, watch: null, buf: '', pos: 0, pending: 0, queue: Promise.resolve(), stallTimer: null, closed: false };
    this.conns.add(conn);
    sock.on('close', () => {
      conn.closed = true;
      if (conn.stallTimer !== null) clearTimeout(conn.stallTimer);
      this.conns.delete(conn);
      this.clients.delete(sock);
      this.watcherSocks.delete(sock);
    });
    sock.on('error', (e) => this.opts.log.debug({ err: e }, 'control client error'));
    sock.on('drain', () => this.pump(conn));
    sock.on('data', (chunk: string) => {
      conn.buf = conn.pos === 0 ? conn.buf + chunk : conn.buf.slice(conn.pos) + chunk;
      conn.pos = 0;
      this.pump(conn);
      // The unterminated tail may not outgrow a line either (checked as it grows, not at every reply).
      if (!conn.closed) this.checkLength(conn, conn.buf.slice(Math.max(conn.pos, conn.buf.lastIndexOf('\n') + 1)));
    });
  }

  /**
   * Takes the complete lines received so far into the connection's queue while it has room and its replies
   * are not piling up, and reads the socket only while both hold.
   */
  private pump(conn: Conn): void {
    const { sock } = conn;
    if (conn.closed || sock.destroyed) return;
    while (conn.pending < this.maxQueued && !this.stalled(conn)) {
      const nl = conn.buf.indexOf('\n', conn.pos);
      if (nl < 0) break;
      const line = conn.buf.slice(conn.pos, nl);
      conn.pos = nl + 1;
      if (!this.checkLength(conn, line)) return;
      if (line.trim() === '') continue;
      conn.pending++;
      if (conn.pending > this.maxQueuedSeen) this.maxQueuedSeen = conn.pending;
      conn.queue = conn.queue.then(() => this.run(conn, line));
    }
    if (conn.pos > 0 && conn.pos === conn.buf.length) {
      conn.buf = '';
      conn.pos = 0;
    }
    const full = conn.pending >= this.maxQueued || this.stalled(conn) || conn.buf.indexOf('\n', conn.pos) >= 0;
    if (full) sock.pause();
    else sock.resume();
  }

  /** Whether the connection's unsent replies are over the bound; starts its stall timer when they are. */
  private stalled(conn: Conn): boolean {
    // A watcher's stream bounds its own backlog (it drops events and says how many): never stalled.
    const over = conn.watch === null && conn.sock.writableLength > this.maxUnsentBytes;
    if (over && conn.stallTimer === null) {
      conn.stallTimer = setTimeout(() => {
        if (conn.sock.writableLength > this.maxUnsentBytes) {
          this.opts.log.warn({ unsent: conn.sock.writableLength }, 'control client reads nothing: closed');
          conn.sock.destroy();
        }
        conn.stallTimer = null;
      }, this.stallTimeoutMs);
    } else if (!over && conn.stallTimer !== null) {
      clearTimeout(conn.stallTimer);
      conn.stallTimer = null;
    }
    return over;
  }

  /** Runs one queued request once the connection's replies are under the bound again. */
  private async run(conn: Conn, line: string): Promise<void> {
    try {
      if (this.stalled(conn)) await this.drained(conn);
      if (!conn.closed) await this.handleLine(conn, line);
    } finally {
      conn.pending--;
      this.pump(conn);
    }
  }

  /** Resolves on the socket's 'drain' or its close. */
  private drained(conn: Conn): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        conn.sock.off('drain', done);
        conn.sock.off('close', done);
        resolve();
      };
      conn.sock.on('drain', done);
      conn.sock.on('close', done);
    });
  }

  /** A line over the limit gets one error reply and the connection is closed; nothing more is executed. */
  private checkLength(conn: Conn, line: string): boolean {
    if (line.length <= this.maxLineBytes && Buffer.byteLength(line) <= this.maxLineBytes) return true;
    conn.closed = true;
    conn.sock.removeAllListeners('data');
    conn.buf = '';
    conn.pos = 0;
    refuse(conn.sock, 'E_PROTOCOL', `request line longer than ${this.maxLineBytes} bytes`);
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
    const refusal = parsed.ok ? commandRefusal(conn.access, parsed.request.cmd) : null;
    if (!parsed.ok) {
      response = { id: parsed.id, ok: false, error: { code: 'E_PROTOCOL', message: parsed.message } };
    } else if (refusal !== null) {
      response = { id: parsed.request.id, ok: false, error: refusal.toJSON() };
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
    if (conn.access === 'read' && this.countRead(this.watcherSocks) >= this.maxReadOnlyWatchers) {
      return { id, ok: false, error: { code: 'E_PROTOCOL', message: `too many watchers: the control group may hold ${this.maxReadOnlyWatchers} (the rest are kept for root)` } };
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
  access: PeerAccess;
  /** Set once the connection watches: it then only streams events. */
  watch: WatchStream | null;
  /** Received text; what is before `pos` was taken already. */
  buf: string;
  pos: number;
  /** Requests taken and not yet answered. */
  pending: number;
  /** The chain that runs them one at a time, in order. */
  queue: Promise<void>;
  stallTimer: NodeJS.Timeout | null;
  closed: boolean;
}

/**
 * Sends one error line and closes the connection once it is flushed, whatever the peer does (a peer that is
 * already gone makes the write fail: that error is the end of it, not the daemon's).
 */
function refuse(sock: net.Socket, code: 'E_PROTOCOL' | ErrorCode, message: string): void {
  sock.on('error', () => sock.destroy());
  sock.end(reply({ id: null, ok: false, error: { code, message } }), () => sock.destroy());
}

function reply(r: Response): string {
  return `${JSON.stringify(r)}\n`;
}
