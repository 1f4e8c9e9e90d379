// The control socket on a real unix socket: request/response framing, validation of every request,
// limits, and the client's error handling.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import type { DeviceStatus, Handlers } from '../../src/control/protocol.js';
import { parseRequestLine } from '../../src/control/protocol.js';
import { ControlServer } from '../../src/control/server.js';
import { DmrError } from '../../src/errors.js';
import { makeWorld, quietLog, testAccess, type World } from './helpers.js';

let w: World;
let sock: string;
let server: ControlServer;
let calls: string[];

const notUnderTest = (): never => {
  throw new DmrError('E_INTERNAL', 'not under test');
};

function startServer(overrides: Partial<Handlers> = {}, opts: { maxClients?: number; maxLineBytes?: number } = {}): Promise<void> {
  calls = [];
  const handlers: Handlers = {
    ping: () => (calls.push('ping'), 'pong'),
    status: () => {
      calls.push('status');
      throw new DmrError('E_KERNEL', 'GET_DEV_INFO failed');
    },
    shutdown: () => (calls.push('shutdown'), { stopping: true }),
    restart: () => (calls.push('restart'), { restarting: true, supervised: false }),
    remap: () => {
      throw new DmrError('E_INTERNAL', 'not under test');
    },
    unremap: () => {
      throw new DmrError('E_INTERNAL', 'not under test');
    },
    verify: () => {
      throw new DmrError('E_INTERNAL', 'not under test');
    },
    table: () => ({ total: 0, offset: 0, entries: [] }),
    message: () => ({ reply: '' }),
    recheck: () => {
      throw new DmrError('E_INTERNAL', 'not under test');
    },
    stats: () => {
      throw new DmrError('E_INTERNAL', 'not under test');
    },
    clear_stats: () => ({ cleared: true }),
    set_auto_remap: (req) => ({ autoRemap: req.enabled }),
    scan_read: notUnderTest,
    scan: notUnderTest,
    scan_start: notUnderTest,
    scan_pause: notUnderTest,
    scan_resume: notUnderTest,
    scan_stop: notUnderTest,
    scan_map: notUnderTest,
    health: notUnderTest,
    health_reset: notUnderTest,
    ...overrides,
  };
  server = new ControlServer({ socketPath: sock, handlers, log: quietLog(), access: testAccess(), ...opts });
  return server.listen();
}

/** Sends raw bytes, collects response lines until `count` arrived or the server closed. */
function raw(payload: string, count: number): Promise<{ lines: unknown[]; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(sock);
    let buf = '';
    const lines: unknown[] = [];
    const done = (closed: boolean): void => {
      c.destroy();
      resolve({ lines, closed });
    };
    c.setEncoding('utf8');
    c.on('connect', () => c.write(payload));
    c.on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
      }
      if (lines.length >= count) done(false);
    });
    c.on('end', () => done(true));
    c.on('error', reject);
  });
}

beforeEach(() => {
  w = makeWorld();
  fs.mkdirSync(w.runDir, { mode: 0o700 });
  sock = path.join(w.runDir, '0.sock');
});
afterEach(async () => {
  await server?.close();
  w.cleanup();
});

describe('control server', () => {
  it('answers ping with pong, echoing the id, on a socket of mode 0600', async () => {
    await startServer();
    expect(fs.statSync(sock).mode & 0o777).toBe(0o600);
    const { lines } = await raw('{"id":7,"cmd":"ping"}\n', 1);
    expect(lines).toEqual([{ id: 7, ok: true, result: 'pong' }]);
  });

  it('answers pipelined requests in order on one connection', async () => {
    await startServer();
    const { lines } = await raw('{"id":1,"cmd":"ping"}\n{"id":2,"cmd":"ping"}\n\n{"id":3,"cmd":"ping"}\n', 3);
    expect(lines.map((l) => (l as { id: number }).id)).toEqual([1, 2, 3]);
  });

  it('handles a request split across writes', async () => {
    await startServer();
    const c = net.createConnection(sock);
    const got = new Promise<string>((r) => c.once('data', (d) => r(d.toString())));
    c.write('{"id":4,"cm');
    await new Promise((r) => setTimeout(r, 30));
    c.write('d":"ping"}\n');
    expect(JSON.parse(await got)).toEqual({ id: 4, ok: true, result: 'pong' });
    c.destroy();
  });

  const bad: [string, string, number | null, RegExp][] = [
    ['invalid JSON', '{"id":1,"cmd":', null, /^request is not valid JSON$/],
    ['a JSON array', '[1,2]', null, /^invalid request: /],
    ['an unknown command', '{"id":5,"cmd":"format"}', 5, /^unknown command "format" \(known: ping, status, shutdown, restart, remap, unremap, verify, table, message, stats, clear_stats, set_auto_remap, recheck, scan_read, scan, scan_start, scan_pause, scan_resume, scan_stop, scan_map, health, health_reset, watch\)$/],
    ['a missing id', '{"cmd":"shutdown"}', null, /^invalid request: id: /],
    ['a negative id', '{"id":-1,"cmd":"shutdown"}', null, /^invalid request: id: /],
    ['a missing cmd', '{"id":6}', 6, /^invalid request: cmd: /],
    ['an extra field', '{"id":8,"cmd":"shutdown","force":true}', 8, /^invalid request: request: .*force/],
    ['a non-string cmd', '{"id":9,"cmd":3}', 9, /^invalid request: cmd: /],
  ];
  for (const [what, line, id, message] of bad) {
    it(`rejects ${what} with E_PROTOCOL and runs nothing`, async () => {
      await startServer();
      const { lines } = await raw(`${line}\n{"id":99,"cmd":"ping"}\n`, 2);
      const [first, second] = lines as [Record<string, unknown>, Record<string, unknown>];
      expect(first).toMatchObject({ id, ok: false, error: { code: 'E_PROTOCOL' } });
      expect((first.error as { message: string }).message).toMatch(message);
      expect(second).toEqual({ id: 99, ok: true, result: 'pong' }); // the connection survives a bad line
      expect(calls).toEqual(['ping']);
    });
  }

  it('closes a connection whose line exceeds the limit without running it', async () => {
    await startServer({}, { maxLineBytes: 1024 });
    const big = `{"id":1,"cmd":"shutdown","pad":"${'x'.repeat(2000)}"}\n`;
    const { lines, closed } = await raw(big, 2);
    expect(closed).toBe(true);
    expect(lines).toEqual([{ id: null, ok: false, error: { code: 'E_PROTOCOL', message: 'request line longer than 1024 bytes' } }]);
    expect(calls).toEqual([]);
  });

  it('closes an over-long line even before its newline arrives', async () => {
    await startServer({}, { maxLineBytes: 1024 });
    const { lines, closed } = await raw('x'.repeat(5000), 1);
    expect(closed).toBe(false);
    expect(lines[0]).toMatchObject({ ok: false, error: { code: 'E_PROTOCOL' } });
  });

  it('turns away clients beyond the limit', async () => {
    await startServer({}, { maxClients: 2 });
    const held = [net.createConnection(sock), net.createConnection(sock)];
    await Promise.all(held.map((c) => new Promise((r) => c.on('connect', r))));
    await new Promise((r) => setTimeout(r, 20));
    const { lines, closed } = await raw('{"id":1,"cmd":"ping"}\n', 1);
    expect(lines[0]).toEqual({ id: null, ok: false, error: { code: 'E_PROTOCOL', message: 'too many clients' } });
    expect(closed || lines.length === 1).toBe(true);
    for (const c of held) c.destroy();
    await new Promise((r) => setTimeout(r, 20));
    expect((await raw('{"id":2,"cmd":"ping"}\n', 1)).lines[0]).toEqual({ id: 2, ok: true, result: 'pong' });
  });

  it('passes a handler’s typed error to the client', async () => {
    await startServer();
    const { lines } = await raw('{"id":3,"cmd":"status"}\n', 1);
    expect(lines[0]).toEqual({ id: 3, ok: false, error: { code: 'E_KERNEL', message: 'GET_DEV_INFO failed' } });
  });

  it('replaces a stale socket file and removes the socket on close', async () => {
    fs.writeFileSync(sock, 'stale');
    await startServer();
    expect(fs.statSync(sock).isSocket()).toBe(true);
    await server.close();
    expect(fs.existsSync(sock)).toBe(false);
  });
});

describe('control client', () => {
  it('returns the validated result', async () => {
    await startServer();
    expect(await request(sock, 'ping', {})).toBe('pong');
    expect(await request(sock, 'shutdown', {})).toEqual({ stopping: true });
  });

  it('raises the daemon’s error code', async () => {
    await startServer();
    await expect(request(sock, 'status', {})).rejects.toMatchObject({ code: 'E_KERNEL', message: 'GET_DEV_INFO failed' });
  });

  it('rejects a result that does not match the command’s schema', async () => {
    await startServer({ status: () => ({ devId: 'zero' }) as unknown as DeviceStatus });
    await expect(request(sock, 'status', {})).rejects.toMatchObject({ code: 'E_PROTOCOL', message: /malformed status result/ });
  });

  it('reports a daemon that is not running', async () => {
    await expect(request(sock, 'ping', {})).rejects.toMatchObject({ code: 'E_DAEMON', message: `daemon at ${sock} is not running` });
  });

  it('times out on a daemon that does not answer', async () => {
    const silent = net.createServer((c) => c.resume());
    await new Promise<void>((r) => silent.listen(sock, r));
    await expect(request(sock, 'ping', {}, 200)).rejects.toMatchObject({ code: 'E_TIMEOUT' });
    await new Promise((r) => silent.close(r));
  });
});

describe('parseRequestLine', () => {
  it('accepts each known command', () => {
    for (const cmd of ['ping', 'status', 'shutdown']) {
      expect(parseRequestLine(JSON.stringify({ id: 1, cmd }))).toEqual({ ok: true, request: { id: 1, cmd } });
    }
  });
});
