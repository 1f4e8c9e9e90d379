// Micro-benchmark (host, no kernel needed): the control socket's `table` command on a 1,000,000-entry remap
// table, 100 requests of 1000 entries each at spread offsets. "before": the key set sorted per request (what
// `table` did until the sorted index was kept: src/remap/table.ts sortedBlocks); "after": RemapQueries.table
// on the table's kept index (sorted once after a change, then O(page) a request). Also one `table` right
// after a change (the rebuild). Prints the times and the ratio; writes bench/results/table-page-*.json.
// Needs `npm run build:ts` (it imports dist/).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { RemapTable } from '../dist/remap/table.js';
import { RemapQueries } from '../dist/device/remap-queries.js';

const here = path.dirname(new URL(import.meta.url).pathname);
const ENTRIES = Number(process.env.BENCH_TABLE_ENTRIES ?? 1_000_000);
const REQUESTS = 100;
const LIMIT = 1000;

const table = new RemapTable();
// Blocks spread over a 1 TiB device of 4 KiB blocks, inserted in a scattered order (as errors arrive).
let x = 12345;
for (let i = 0; i < ENTRIES; i++) {
  x = (Math.imul(x, 1103515245) + 12345) >>> 0;
  table.set(i * 268 + (x % 268), { slot: i, state: i % 97 === 0 ? 'lost' : 'mapped', origin: i % 3 === 0 ? 'manual' : 'auto', time: i, errorCount: 0, dataOnMain: false });
}
const queries = new RemapQueries({ store: { table }, sectorOf: (b) => b * 8 });
const offsets = Array.from({ length: REQUESTS }, (_, i) => Math.floor((i * (ENTRIES - LIMIT)) / REQUESTS));

/** The per-request path as it was: every key copied and sorted, then the page. */
function tableBefore(offset, limit) {
  const keys = new Float64Array(table.size);
  let i = 0;
  for (const k of table.entries()) keys[i++] = k[0];
  keys.sort();
  const entries = [];
  for (let j = offset; j < Math.min(keys.length, offset + limit); j++) {
    const e = table.get(keys[j]);
    entries.push({ block: keys[j], sector: keys[j] * 8, slot: e.slot, state: e.state, origin: e.origin, time: e.time, errorCount: e.errorCount });
  }
  return { total: keys.length, offset, entries };
}

const time = (fn) => {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
};
// The two must agree.
for (const off of [0, offsets[37], ENTRIES - LIMIT]) {
  if (JSON.stringify(tableBefore(off, LIMIT)) !== JSON.stringify(queries.table(off, LIMIT))) throw new Error(`pages differ at offset ${off}`);
}
const firstAfterChange = time(() => {
  table.set(7, { slot: ENTRIES, state: 'mapped', origin: 'manual', time: 0, errorCount: 0, dataOnMain: false });
  queries.table(0, LIMIT);
});
const beforeMs = time(() => offsets.forEach((o) => tableBefore(o, LIMIT)));
const afterMs = time(() => offsets.forEach((o) => queries.table(o, LIMIT)));
const row = {
  entries: table.size,
  requests: REQUESTS,
  limit: LIMIT,
  beforeMs: Number(beforeMs.toFixed(1)),
  afterMs: Number(afterMs.toFixed(1)),
  ratio: Number((beforeMs / afterMs).toFixed(1)),
  firstRequestAfterChangeMs: Number(firstAfterChange.toFixed(1)),
};
console.log(`table: ${row.entries} entries, ${REQUESTS} requests of ${LIMIT}`);
console.log(`  before (sort per request): ${row.beforeMs} ms (${(beforeMs / REQUESTS).toFixed(2)} ms a request)`);
console.log(`  after (kept index):        ${row.afterMs} ms (${(afterMs / REQUESTS).toFixed(3)} ms a request)`);
console.log(`  ratio ${row.ratio}x; the first request after a change (index rebuilt): ${row.firstRequestAfterChangeMs} ms`);
mkdirSync(path.join(here, 'results'), { recursive: true });
const file = path.join(here, 'results', `table-page-${new Date().toISOString().replace(/[:.]/g, '')}.json`);
writeFileSync(file, `${JSON.stringify(row, null, 2)}\n`);
console.log(`bench: wrote ${file}`);
