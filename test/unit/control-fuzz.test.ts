// The control socket's fuzz run on the fake addon (the VM runs the same generator against a live daemon:
// test/e2e/control-socket.test.ts): a daemon with a control group, fuzzed by a member with 20,000 seeded
// messages over four pipelined connections, over-long lines, a connection flood beyond the limit and a client
// that never reads. Nothing may change: the table, the counters and the status line are as before, and no
// valid mutating command gets through. The seed is printed; DMREMAP_FUZZ_SEED=N repeats a run.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { Daemon } from '../../src/device/daemon.js';
import { connectionFlood, fuzzConnection, fuzzMessages, MESSAGE_KIND_NAMES, neverReads, overlongLine } from '../../src/testing/control-fuzz.js';
import { deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

const MY_UID = process.geteuid?.() ?? 0;
const MY_GID = process.getegid?.() ?? 0;
const MESSAGES = 20_000;

let w: World;
let daemon: Daemon | null = null;
let savedConfig: string | undefined;
beforeEach(() => {
  w = makeWorld();
  savedConfig = process.env.DMREMAP_CONFIG;
});
afterEach(async () => {
  await daemon?.shutdown('test');
  daemon = null;
  process.env.DMREMAP_CONFIG = savedConfig;
  w.cleanup();
});

it(`${MESSAGES} generated messages from a control group member change nothing, and the daemon stays bounded and answering`, async () => {
  const cfg = path.join(w.root, 'config.json');
  fs.writeFileSync(cfg, JSON.stringify({ controlGroup: MY_GID, scanIntervalDays: 0 }));
  process.env.DMREMAP_CONFIG = cfg;
  const native = fakeFor(w);
  daemon = await Daemon.start(deviceConfig(w, { alertCommand: null }), { native, runDir: w.runDir, log: quietLog(), logFile: null });
  const sock = path.join(w.runDir, `${daemon.info.devId}.sock`);
  // As the daemon's own user (admin): a table to keep.
  for (const sector of [8, 800, 4000]) await request(sock, 'remap', { sector });
  const snapshot = async (): Promise<unknown> => ({
    line: (await request(sock, 'status', {})).remap.line,
    table: await request(sock, 'table', {}),
    stats: await request(sock, 'stats', {}),
  });
  const before = await snapshot();
  expect(before).toMatchObject({ table: { total: 3 } });

  native.peer = { pid: 1, uid: MY_UID + 1000, gid: MY_GID + 1000, groups: [MY_GID] };
  const seed = Number(process.env.DMREMAP_FUZZ_SEED ?? Date.now() % 1_000_000);
  console.log(`control socket fuzz (fake addon): seed ${seed} (DMREMAP_FUZZ_SEED=${seed} repeats it)`);
  const all = [...fuzzMessages(seed, MESSAGES)];
  expect(new Set(all.map((m) => m.kind))).toEqual(new Set(MESSAGE_KIND_NAMES));
  const stuck = neverReads(sock, 100_000, 2000);
  const reports = await Promise.all([0, 1, 2, 3].map((k) => fuzzConnection(sock, all.filter((_, i) => i % 4 === k))));
  const whileStuck = await request(sock, 'ping', {}, 5000);
  const never = await stuck;
  const overlong = await overlongLine(sock, 256 << 10);
  const flood = await connectionFlood(sock, 40);

  const total = { replies: 0, adminAllowed: 0, malformed: [] as string[], codes: {} as Record<string, number> };
  for (const r of reports) {
    total.replies += r.replies;
    total.adminAllowed += r.adminAllowed;
    total.malformed.push(...r.malformed);
    for (const [k, v] of Object.entries(r.codes)) total.codes[k] = (total.codes[k] ?? 0) + v;
  }
  console.log(`control socket fuzz (fake addon): ${JSON.stringify({ total, never, flood })}`);
  expect(total.replies).toBe(MESSAGES);
  expect(total.malformed).toEqual([]);
  expect(total.adminAllowed).toBe(0);
  expect(total.codes.E_INTERNAL).toBeUndefined();
  expect(total.codes.E_PERMISSION).toBeGreaterThan(0);
  expect(total.codes.ok).toBeGreaterThan(0);
  expect(whileStuck).toBe('pong');
  expect(never.written).toBeGreaterThan(0);
  expect(overlong.closed).toBe(true);
  expect(flood.other).toEqual([]);
  expect(flood.pong + flood.refused).toBe(40);
  expect(flood.refused).toBeGreaterThanOrEqual(40 - 16);

  native.peer = null;
  // The flood's connections are closed on this side; the daemon lets go of them a moment later.
  const deadline = Date.now() + 10_000;
  while ((await request(sock, 'ping', {}).catch(() => null)) !== 'pong' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  expect(await snapshot()).toEqual(before);
}, 180_000);
