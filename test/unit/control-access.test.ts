// The control socket's access check (src/control/access.ts) and bounds (src/control/server.ts): peers told
// apart by their credentials (the fake addon's, chosen per test; the real addon's SO_PEERCRED on a real
// socket), every command classified, the socket's mode and group, the run directory's modes, and a client
// that pipelines 100,000 requests without reading.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { accessOf, commandRefusal, socketFd } from '../../src/control/access.js';
import { request } from '../../src/control/client.js';
import { COMMAND_ACCESS, COMMANDS, READ_ONLY_COMMANDS, type Handlers } from '../../src/control/protocol.js';
import { ADMIN_RESERVED_CLIENTS, ADMIN_RESERVED_WATCHERS, ControlServer, MAX_QUEUED_REQUESTS, MAX_UNSENT_BYTES } from '../../src/control/server.js';
import { DmrError } from '../../src/errors.js';
import { loadNative } from '../../src/native.js';
import { ensureRunDir, requireRunDirOwner } from '../../src/paths.js';
import { FakeNative } from '../../src/testing/fake-native.js';
import { makeWorld, quietLog, type World } from './helpers.js';

const MY_UID = process.geteuid?.() ?? 0;
const MY_GID = process.getegid?.() ?? 0;
const STRANGER = { pid: 1, uid: MY_UID + 1000, gid: MY_GID + 1000, groups: [] };

let w: World;
let fake: FakeNative;
let server: ControlServer | null;
let sock: string;
let calls: string[];

const handlers = (): Handlers =>
  new Proxy({} as Handlers, {
    get: (_t, cmd: string) => () => {
      calls.push(cmd);
      return cmd === 'ping' ? 'pong' : { cmd };
    },
  });

async function start(controlGid: number | null, opts: Partial<ConstructorParameters<typeof ControlServer>[0]> = {}): Promise<ControlServer> {
  server = new ControlServer({
    socketPath: sock,
    handlers: handlers(),
    log: quietLog(),
    access: { peerCred: (fd) => fake.peerCred(fd), ownUid: MY_UID, controlGid },
    ...opts,
  });
  await server.listen();
  return server;
}

/** Sends `lines`, collects the reply lines until `count` arrived or the daemon closed the connection. */
function exchange(lines: string[], count: number): Promise<{ replies: Array<{ id: number | null; ok: boolean; result?: unknown; error?: { code: string; message: string } }>; closed: boolean }> {
  return new Promise((resolve) => {
    const c = net.createConnection(sock);
    let buf = '';
    const replies: Array<{ id: number | null; ok: boolean }> = [];
    const done = (closed: boolean): void => {
      c.destroy();
      resolve({ replies, closed } as never);
    };
    c.setEncoding('utf8');
    c.on('connect', () => c.write(lines.map((l) => `${l}\n`).join('')));
    c.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        replies.push(JSON.parse(buf.slice(0, nl)) as { id: number | null; ok: boolean });
        buf = buf.slice(nl + 1);
      }
      if (replies.length >= count) done(false);
    });
    c.on('error', () => undefined);
    c.on('close', () => done(true));
  });
}

beforeEach(() => {
  w = makeWorld();
  fs.mkdirSync(w.runDir);
  sock = path.join(w.runDir, 'test.sock');
  fake = new FakeNative({ devDir: w.devDir });
  server = null;
  calls = [];
});

afterEach(async () => {
  await server?.close();
  w.cleanup();
});

describe('who may send what', () => {
  it('classifies every command: the read-only ones are the status queries, table, verify, scan status, the map and watch', () => {
    expect(Object.keys(COMMAND_ACCESS).sort()).toEqual([...COMMANDS].sort());
    expect([...READ_ONLY_COMMANDS].sort()).toEqual(['health', 'ping', 'scan', 'scan_map', 'stats', 'status', 'table', 'verify', 'watch']);
    for (const cmd of COMMANDS) {
      expect(commandRefusal('admin', cmd)).toBeNull();
      const refusal = commandRefusal('read', cmd);
      if (COMMAND_ACCESS[cmd] === 'read') expect(refusal).toBeNull();
      else expect(refusal).toMatchObject({ code: 'E_PERMISSION', message: `${cmd} needs root: the control group may use only ${READ_ONLY_COMMANDS.join(', ')}` });
    }
  });

  it('root and the daemon’s own uid do everything; the control group (primary or supplementary) reads; anyone else nothing', () => {
    const policy = { ownUid: 1234, controlGid: 50 };
    expect(accessOf({ pid: 1, uid: 0, gid: 0, groups: [] }, policy)).toBe('admin');
    expect(accessOf({ pid: 1, uid: 1234, gid: 7, groups: [] }, policy)).toBe('admin');
    expect(accessOf({ pid: 1, uid: 1000, gid: 50, groups: [] }, policy)).toBe('read');
    expect(accessOf({ pid: 1, uid: 1000, gid: 1000, groups: [4, 50] }, policy)).toBe('read');
    expect(accessOf({ pid: 1, uid: 1000, gid: 1000, groups: [4, 51] }, policy)).toBeNull();
    expect(accessOf({ pid: 1, uid: 1000, gid: 50, groups: [50] }, { ownUid: 1234, controlGid: null })).toBeNull();
  });

  it('refuses a stranger at connect with one E_PERMISSION line and closes, running nothing', async () => {
    await start(MY_GID + 7);
    fake.peer = STRANGER;
    const r = await exchange(['{"id":1,"cmd":"ping"}'], 2);
    expect(r).toEqual({
      replies: [{ id: null, ok: false, error: { code: 'E_PERMISSION', message: `uid ${STRANGER.uid} may not use this control socket: not root, nor in the control group (gid ${MY_GID + 7})` } }],
      closed: true,
    });
    expect(calls).toEqual([]);
  });

  it('without a control group, says so to the stranger', async () => {
    await start(null);
    fake.peer = STRANGER;
    const r = await exchange(['{"id":1,"cmd":"status"}'], 2);
    expect(r.replies[0]?.error?.message).toBe(`uid ${STRANGER.uid} may not use this control socket: not root (no control group is configured)`);
    expect(r.closed).toBe(true);
  });

  it('a control group member gets answers to the read-only commands and E_PERMISSION for the rest, on a connection that stays open', async () => {
    await start(4711);
    fake.peer = { pid: 1, uid: MY_UID + 1000, gid: MY_GID + 1000, groups: [4711] };
    const r = await exchange(['{"id":1,"cmd":"status"}', '{"id":2,"cmd":"remap","sector":8}', '{"id":3,"cmd":"shutdown"}', '{"id":4,"cmd":"table","limit":5}', '{"id":5,"cmd":"message","words":["ping"]}', '{"id":6,"cmd":"ping"}'], 6);
    expect(r.closed).toBe(false);
    expect(r.replies.map((x) => (x.ok ? 'ok' : x.error?.code))).toEqual(['ok', 'E_PERMISSION', 'E_PERMISSION', 'ok', 'E_PERMISSION', 'ok']);
    expect(r.replies[1]).toEqual({ id: 2, ok: false, error: { code: 'E_PERMISSION', message: `remap needs root: the control group may use only ${READ_ONLY_COMMANDS.join(', ')}` } });
    expect(calls).toEqual(['status', 'table', 'ping']);
  });

  it('the client reports the refusal as the daemon’s E_PERMISSION', async () => {
    await start(4711);
    fake.peer = { pid: 1, uid: MY_UID + 1000, gid: 4711, groups: [] };
    await expect(request(sock, 'ping', {})).resolves.toBe('pong');
    await expect(request(sock, 'clear_stats', {})).rejects.toMatchObject({ code: 'E_PERMISSION' });
  });

  it('fails closed: a peer whose credentials cannot be read is refused', async () => {
    await start(null);
    fake.failPeerCred = 'EINVAL';
    const r = await exchange(['{"id":1,"cmd":"ping"}'], 2);
    expect(r.replies).toEqual([{ id: null, ok: false, error: { code: 'E_PERMISSION', message: "cannot read the peer's credentials (EINVAL): refused" } }]);
    expect(r.closed).toBe(true);
    expect(calls).toEqual([]);
  });

  it('fails closed: a socket without a file descriptor has no peer to check', () => {
    const s = new net.Socket();
    expect(() => socketFd(s)).toThrow(DmrError);
    expect(() => socketFd(s)).toThrow('cannot tell who is connected (the socket has no file descriptor): refused');
  });

  it('asks the addon about the accepted connection’s own fd', async () => {
    await start(null);
    await expect(request(sock, 'ping', {})).resolves.toBe('pong');
    expect(fake.peerCredCalls).toHaveLength(1);
    expect(fake.peerCredCalls[0]).toBeGreaterThan(2);
  });
});

describe('the socket and its directory', () => {
  it('is 0600 without a control group, 0660 with the group’s gid with one', async () => {
    await start(null);
    expect(fs.statSync(sock).mode & 0o777).toBe(0o600);
    await server?.close();
    await start(MY_GID);
    const st = fs.statSync(sock);
    expect({ mode: st.mode & 0o777, gid: st.gid }).toEqual({ mode: 0o660, gid: MY_GID });
  });

  it('ensureRunDir: 0700 without a group, 02750 and the group with one; a command that does not know keeps either', () => {
    const dir = path.join(w.root, 'rd');
    const mode = (): number => fs.statSync(dir).mode & 0o7777;
    ensureRunDir(dir, null);
    expect(mode()).toBe(0o700);
    ensureRunDir(dir, MY_GID);
    expect({ mode: mode(), gid: fs.statSync(dir).gid }).toEqual({ mode: 0o2750, gid: MY_GID });
    ensureRunDir(dir);
    expect(mode()).toBe(0o2750);
    // What is created in it gets its group (setgid).
    fs.writeFileSync(path.join(dir, 'f'), '');
    expect(fs.statSync(path.join(dir, 'f')).gid).toBe(MY_GID);
    ensureRunDir(dir, null);
    expect(mode()).toBe(0o700);
    fs.chmodSync(dir, 0o755);
    ensureRunDir(dir);
    expect(mode()).toBe(0o700);
    expect(() => requireRunDirOwner(dir, 'del')).not.toThrow();
  });
});

describe('del by someone who does not own the run directory', () => {
  it('of a device whose state file cannot be read: E_PERMISSION before anything is touched (the file stays)', async () => {
    const { cli } = await import('./helpers.js');
    ensureRunDir(w.runDir, MY_GID);
    const file = path.join(w.runDir, '7.json');
    fs.writeFileSync(file, '{');
    // Another owner (as for a control group member: root owns the run directory, the member only reads it).
    fs.chownSync(w.runDir, MY_UID + 12345, MY_GID);
    const del = cli(w, ['del', '7'], { features: '0xd8' });
    expect([del.status, del.stderr]).toEqual([1, expect.stringMatching(/^dmremap-ublk: del needs root/)]);
    expect(fs.readFileSync(file, 'utf8')).toBe('{');
  });
});

describe('the real addon', () => {
  it('peerCred reads SO_PEERCRED and SO_PEERGROUPS of a unix socket’s peer: this process', async () => {
    const native = loadNative();
    const got = await new Promise<ReturnType<typeof native.peerCred>>((resolve, reject) => {
      const srv = net.createServer((c) => {
        try {
          resolve(native.peerCred(socketFd(c)));
        } catch (e) {
          reject(e as Error);
        }
        c.destroy();
        srv.close();
      });
      srv.listen(sock, () => net.createConnection(sock).on('error', () => undefined));
    });
    expect(got).toEqual({ pid: process.pid, uid: MY_UID, gid: MY_GID, groups: expect.any(Array) as unknown });
    // Node's getgroups() always includes the effective gid; SO_PEERGROUPS lists the supplementary groups only.
    const sorted = (xs: Iterable<number>): number[] => [...new Set(xs)].sort((a, b) => a - b);
    expect(sorted([...got.groups, MY_GID])).toEqual(sorted([...(process.getgroups?.() ?? []), MY_GID]));
  });

  it('peerCred of something not a socket throws the addon’s error (ENOTSOCK, getsockopt); of a bad fd, a TypeError', () => {
    const native = loadNative();
    const fd = fs.openSync(path.join(w.root, 'main.img'), 'r');
    try {
      expect(() => native.peerCred(fd)).toThrow(expect.objectContaining({ code: 'ENOTSOCK', command: 'getsockopt' }) as Error);
    } finally {
      fs.closeSync(fd);
    }
    expect(() => native.peerCred(-1)).toThrow(TypeError);
  });
});

describe('bounds under abuse', () => {
  it('a client that pipelines 100,000 requests and reads nothing: the server holds a bounded amount, answers others, and closes it after the stall timeout', async () => {
    await start(null, { stallTimeoutMs: 3000, idleTimeoutMs: 60_000 });
    const stuck = net.createConnection(sock);
    stuck.pause();
    let closed = false;
    stuck.on('close', () => (closed = true));
    stuck.on('error', () => undefined);
    await new Promise<void>((r) => stuck.on('connect', () => r()));
    const payload = Array.from({ length: 100_000 }, (_, i) => `{"id":${i},"cmd":"ping"}\n`).join('');
    stuck.write(payload);
    const heapBefore = process.memoryUsage().heapUsed;
    let peak = { queued: 0, unparsed: 0, unsentBytes: 0 };
    const t0 = Date.now();
    while (Date.now() - t0 < 1500) {
      const l = (server as ControlServer).load();
      peak = { queued: Math.max(peak.queued, l.queued), unparsed: Math.max(peak.unparsed, l.unparsed), unsentBytes: Math.max(peak.unsentBytes, l.unsentBytes) };
      await new Promise((r) => setTimeout(r, 20));
    }
    const answered = calls.length;
    // Stopped: far fewer than the 100,000 ran (replies fill the socket, then the server waits).
    expect(answered).toBeLessThan(100_000);
    expect(peak.queued).toBeLessThanOrEqual(MAX_QUEUED_REQUESTS);
    expect((server as ControlServer).load().maxQueuedSeen).toBe(MAX_QUEUED_REQUESTS);
    // One reply beyond the bound at most (a ping's is 36 bytes), and at most a read's worth of text unparsed.
    expect(peak.unsentBytes).toBeLessThanOrEqual(MAX_UNSENT_BYTES + 64);
    expect(peak.unparsed).toBeLessThanOrEqual(2 * 65_536);
    // Another client is answered meanwhile.
    await expect(request(sock, 'ping', {}, 3000)).resolves.toBe('pong');
    // This process's heap (the client's unsent 100,000 requests are in its socket buffer) grew by less than the requests' size twice.
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(2 * payload.length);
    await new Promise((r) => setTimeout(r, 3500));
    expect(closed).toBe(true);
    expect((server as ControlServer).load()).toMatchObject({ clients: 0, queued: 0, unsentBytes: 0 });
  }, 30_000);

  it('peers that connect and go at once while they are turned away (at the client limit, or strangers) do not bring the server down', async () => {
    await start(null, { maxClients: 1 });
    const keep = net.createConnection(sock);
    await new Promise<void>((r) => keep.on('connect', () => r()));
    const burst = (): Promise<void[]> =>
      Promise.all(
        Array.from({ length: 300 }, () =>
          new Promise<void>((resolve) => {
            const c = net.createConnection(sock);
            c.on('error', () => resolve());
            c.on('close', () => resolve());
            c.on('connect', () => c.destroy());
          }),
        ),
      );
    await burst();
    fake.peer = STRANGER;
    await burst();
    fake.peer = null;
    keep.destroy();
    await new Promise((r) => setTimeout(r, 200));
    await expect(request(sock, 'ping', {}, 3000)).resolves.toBe('pong');
  }, 30_000);

  it('control group members holding every client slot do not lock root out: shutdown still gets through', async () => {
    await start(4711);
    fake.peer = { pid: 1, uid: MY_UID + 1000, gid: MY_GID + 1000, groups: [4711] };
    // Sixteen (the default maxClients) read-only connections, each answered once and kept open (a ping
    // every minute keeps them past the idle timeout).
    const held: net.Socket[] = [];
    for (let i = 0; i < 16; i++) {
      const c = net.createConnection(sock);
      c.setEncoding('utf8');
      await new Promise<void>((resolve) => {
        c.on('connect', () => c.write('{"id":1,"cmd":"ping"}\n'));
        c.once('data', () => resolve());
      });
      held.push(c);
    }
    fake.peer = null; // this process: the daemon's own uid, admin
    try {
      // Raw, not through request(): this file's handlers answer { cmd }, which the client's result schema for
      // shutdown rejects; what is tested is that the server let root in and ran it.
      const { replies } = await exchange(['{"id":1,"cmd":"shutdown"}'], 1);
      expect(replies[0]).toEqual({ id: 1, ok: true, result: { cmd: 'shutdown' } });
      expect(calls).toContain('shutdown');
    } finally {
      for (const c of held) c.destroy();
    }
  });

  it('control group members get at most maxClients - ADMIN_RESERVED_CLIENTS connections; the next is told so, root still gets in', async () => {
    await start(4711, { maxClients: 6 });
    fake.peer = { pid: 1, uid: MY_UID + 1000, gid: MY_GID + 1000, groups: [4711] };
    const held: net.Socket[] = [];
    const open = (): Promise<string> =>
      new Promise((resolve) => {
        const c = net.createConnection(sock);
        held.push(c);
        c.setEncoding('utf8');
        c.on('connect', () => c.write('{"id":1,"cmd":"ping"}\n'));
        c.once('data', (d: string) => resolve(d));
        c.on('error', () => resolve('error'));
      });
    try {
      for (let i = 0; i < 6 - ADMIN_RESERVED_CLIENTS; i++) expect(await open()).toContain('"pong"');
      expect((server as ControlServer).load()).toMatchObject({ clients: 2, readOnlyClients: 2 });
      const refused = await open();
      expect(refused).toContain('too many clients: the control group may hold 2 connections');
      expect(refused.trim().split('\n')).toHaveLength(1);
      fake.peer = null;
      // Root fills the rest: the read-only cap does not count root's connections against itself.
      for (let i = 0; i < ADMIN_RESERVED_CLIENTS; i++) expect(await open()).toContain('"pong"');
      expect(await open()).toContain('"too many clients"');
    } finally {
      for (const c of held) c.destroy();
    }
  });

  it('control group members get at most maxWatchers - ADMIN_RESERVED_WATCHERS watchers; root still subscribes', async () => {
    const { DeviceEvents } = await import('../../src/device/device-events.js');
    await start(4711, { maxWatchers: ADMIN_RESERVED_WATCHERS + 1, events: new DeviceEvents({ device: () => '/dev/ublkb9' }), device: () => '/dev/ublkb9' });
    fake.peer = { pid: 1, uid: MY_UID + 1000, gid: MY_GID + 1000, groups: [4711] };
    const held: net.Socket[] = [];
    const subscribe = (): Promise<string> =>
      new Promise((resolve) => {
        const c = net.createConnection(sock);
        held.push(c);
        c.setEncoding('utf8');
        c.on('connect', () => c.write('{"id":1,"cmd":"watch"}\n'));
        c.once('data', (d: string) => resolve(d));
        c.on('error', () => resolve('error'));
      });
    try {
      expect(await subscribe()).toContain('"watching":true');
      expect(await subscribe()).toContain('too many watchers: the control group may hold 1');
      expect((server as ControlServer).load()).toMatchObject({ watchers: 1, readOnlyWatchers: 1 });
      fake.peer = null;
      for (let i = 0; i < ADMIN_RESERVED_WATCHERS; i++) expect(await subscribe()).toContain('"watching":true');
      expect(await subscribe()).toContain(`too many watchers (${ADMIN_RESERVED_WATCHERS + 1})`);
    } finally {
      for (const c of held) c.destroy();
    }
  });

  it('a client that reads slowly is served in full: 5,000 pipelined pings, all answered in order', async () => {
    await start(null);
    const lines = Array.from({ length: 5000 }, (_, i) => `{"id":${i + 1},"cmd":"ping"}`);
    const r = await exchange(lines, 5000);
    expect(r.replies.map((x) => x.id)).toEqual(lines.map((_, i) => i + 1));
    expect((server as ControlServer).load().maxQueuedSeen).toBeLessThanOrEqual(MAX_QUEUED_REQUESTS);
  }, 30_000);
});

describe('what a read-only command costs the daemon', () => {
  it('verify requests on many connections at once run at most one read of main at a time (each holds a libuv pool thread, which the journal commits need)', async () => {
    const { Daemon } = await import('../../src/device/daemon.js');
    const { deviceConfig, fakeFor } = await import('./helpers.js');
    const native = fakeFor(w);
    const daemon = await Daemon.start(deviceConfig(w, { alertCommand: null }), { native, runDir: w.runDir, log: quietLog(), logFile: null });
    try {
      const dev = native.devices.at(-1);
      if (dev === undefined) throw new Error('no device');
      // A main that hangs on reads (an outage, a dying disk's error recovery): each read stays in flight.
      let inFlight = 0;
      let most = 0;
      const release: Array<() => void> = [];
      const orig = dev.readRange.bind(dev);
      dev.readRange = async (from, offset, bytes) => {
        if (from !== 'main') return orig(from, offset, bytes);
        inFlight++;
        most = Math.max(most, inFlight);
        await new Promise<void>((r) => release.push(r));
        inFlight--;
        return orig(from, offset, bytes);
      };
      const devSock = path.join(w.runDir, `${daemon.info.devId}.sock`);
      // Eight connections (under the 16-client limit), each with one verify: what a control group member may send.
      expect(COMMAND_ACCESS.verify).toBe('read');
      const asked = Array.from({ length: 8 }, (_, i) => request(devSock, 'verify', { sector: 8 * i }).catch(() => null));
      await new Promise((r) => setTimeout(r, 300));
      const seen = most;
      // Let them all finish, one read at a time if need be.
      for (let i = 0; i < 50 && (release.length > 0 || inFlight > 0); i++) {
        release.splice(0).forEach((r) => r());
        await new Promise((r) => setTimeout(r, 20));
      }
      await Promise.all(asked);
      expect(seen).toBeLessThanOrEqual(1);
    } finally {
      await daemon.shutdown('test over');
    }
  });
});
