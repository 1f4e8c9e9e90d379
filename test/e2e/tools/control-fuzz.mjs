#!/usr/bin/env node
// @ts-check
// The control socket's fuzz run against a live daemon (test/e2e/control-socket.test.ts runs it as a member of
// the control group, through setpriv): src/testing/control-fuzz.ts's seeded messages over a few pipelined
// connections, over-long lines, a flood of connections beyond the limit, and a client that never reads while
// another one is answered. Prints one JSON report on stdout.
//
//   node test/e2e/tools/control-fuzz.mjs <socket> <seed> <messages>
import { performance } from 'node:perf_hooks';

// The built generator (dist/: this runs under plain node, as another uid, in the VM); typed in its source.
/** @type {typeof import('../../../src/testing/control-fuzz.js')} */
const { connectionFlood, fuzzConnection, fuzzMessages, neverReads, overlongLine } = await import(new URL('../../../dist/testing/control-fuzz.js', import.meta.url).href);

const [socketPath, seedArg, countArg] = process.argv.slice(2);
if (socketPath === undefined || seedArg === undefined || countArg === undefined) {
  process.stderr.write('usage: control-fuzz.mjs <socket> <seed> <messages>\n');
  process.exit(2);
}
const seed = Number(seedArg);
const count = Number(countArg);
const CONNECTIONS = 4;
const t0 = performance.now();
const all = [...fuzzMessages(seed, count)];
const parts = Array.from({ length: CONNECTIONS }, (_, i) => all.filter((_, j) => j % CONNECTIONS === i));
// A client that never reads, the fuzz connections and, meanwhile, a ping on a connection of its own.
const stuck = neverReads(socketPath, 20_000, 3000);
const reports = await Promise.all(parts.map((p) => fuzzConnection(socketPath, p)));
const pingWhileStuck = await fuzzConnection(socketPath, [{ kind: 'valid', data: Buffer.from('{"id":1,"cmd":"ping"}') }]);
const never = await stuck;
const overlong = [];
for (const bytes of [256 << 10, 65 << 10]) overlong.push(await overlongLine(socketPath, bytes));
const flood = await connectionFlood(socketPath, 40);
const merged = { sent: 0, replies: 0, codes: /** @type {Record<string, number>} */ ({}), adminAllowed: 0, malformed: /** @type {string[]} */ ([]) };
for (const r of reports) {
  merged.sent += r.sent;
  merged.replies += r.replies;
  merged.adminAllowed += r.adminAllowed;
  merged.malformed.push(...r.malformed);
  for (const [k, v] of Object.entries(r.codes)) merged.codes[k] = (merged.codes[k] ?? 0) + v;
}
process.stdout.write(
  `${JSON.stringify({ seed, messages: count, fuzz: merged, pingWhileStuck: pingWhileStuck.codes, neverReads: never, overlong, flood, seconds: Math.round((performance.now() - t0) / 100) / 10 })}\n`,
);
