// The addon's sdNotify (native/sd_notify.cc) against a unix datagram socket bound by python3 (Node cannot
// receive on one): a path and an abstract @name both receive the datagram whole; unset NOTIFY_SOCKET sends
// nothing (false); a socket nobody binds, or a relative name, is an error with its errno.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isNativeError, loadNative } from '../../src/native.js';
import { makeWorld, REPO, waitFor, type World } from './helpers.js';

let w: World;
const saved = process.env.NOTIFY_SOCKET;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => {
  if (saved === undefined) delete process.env.NOTIFY_SOCKET;
  else process.env.NOTIFY_SOCKET = saved;
  w.cleanup();
});

async function receive(name: string, send: () => boolean): Promise<{ sent: boolean; got: string[] }> {
  const recv = spawn('python3', [path.join(REPO, 'test/unit/notify-receiver.py'), name, '/nonexistent', '2'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  recv.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => out.startsWith('bound\n'));
  const sent = send();
  await new Promise((r) => recv.on('exit', r));
  return { sent, got: out.split('\n').slice(1).filter((l) => l !== '').map((l) => (JSON.parse(l) as { text: string }).text) };
}

describe('native sdNotify', () => {
  const native = loadNative();

  it('sends one datagram to a socket path', async () => {
    const sock = path.join(w.root, 'n.sock');
    process.env.NOTIFY_SOCKET = sock;
    expect(await receive(sock, () => native.sdNotify('READY=1\nSTATUS=serving /dev/ublkb0'))).toEqual({ sent: true, got: ['READY=1\nSTATUS=serving /dev/ublkb0'] });
  });

  it('sends to an abstract socket (@name)', async () => {
    const name = `@dmremap-test-${process.pid}-${Date.now()}`;
    process.env.NOTIFY_SOCKET = name;
    expect(await receive(name, () => native.sdNotify('STOPPING=1'))).toEqual({ sent: true, got: ['STOPPING=1'] });
  });

  it('returns false without NOTIFY_SOCKET; throws with the errno when it cannot send', () => {
    delete process.env.NOTIFY_SOCKET;
    expect(native.sdNotify('READY=1')).toBe(false);
    process.env.NOTIFY_SOCKET = '';
    expect(native.sdNotify('READY=1')).toBe(false);
    const codeOf = (f: () => unknown): string => {
      try {
        f();
      } catch (e) {
        return isNativeError(e) ? `${e.code} ${e.command}` : String(e);
      }
      return 'no error';
    };
    process.env.NOTIFY_SOCKET = path.join(w.root, 'nobody.sock');
    expect(codeOf(() => native.sdNotify('READY=1'))).toBe('ENOENT sendto');
    process.env.NOTIFY_SOCKET = 'relative.sock';
    expect(codeOf(() => native.sdNotify('READY=1'))).toBe('EINVAL sd_notify');
    process.env.NOTIFY_SOCKET = `/${'x'.repeat(200)}`;
    expect(codeOf(() => native.sdNotify('READY=1'))).toBe('ENAMETOOLONG sd_notify');
  });
});
