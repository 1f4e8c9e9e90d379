// Micro-benchmark (host, no kernel needed): the data path's remap lookup for one 4 KiB request against
// tables of 0, 1k, 100k and 1M remapped blocks spread over a 1 TiB device. The baseline beside each
// number is the empty table. Target: < 100 ns per lookup at 1M entries. Writes bench/results/lookup-*.json.
// The lookup runs in build/Release/lookup_bench, a bench-only executable built beside the addon.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const here = path.dirname(new URL(import.meta.url).pathname);
const exe = path.join(here, '..', 'build', 'Release', 'lookup_bench');
const lookups = Number(process.env.BENCH_LOOKUPS ?? 5_000_000);
const sizes = [0, 1_000, 100_000, 1_000_000];

const bench = (entries, n) => JSON.parse(execFileSync(exe, [String(entries), String(n)], { encoding: 'utf8' }));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = sizes.map((entries) => {
  const runs = [1, 2, 3].map(() => bench(entries, lookups).nsPerLookup);
  return { entries, nsPerLookup: Number(median(runs).toFixed(1)), runs };
});
const base = rows[0].nsPerLookup;
console.log(`${'entries'.padEnd(10)}${'ns/lookup'.padEnd(12)}vs empty`);
for (const r of rows) console.log(`${String(r.entries).padEnd(10)}${String(r.nsPerLookup).padEnd(12)}${(r.nsPerLookup / base).toFixed(1)}x`);
mkdirSync(path.join(here, 'results'), { recursive: true });
const file = path.join(here, 'results', `lookup-${new Date().toISOString().replace(/[:.]/g, '')}.json`);
writeFileSync(file, `${JSON.stringify({ lookups, rows }, null, 2)}\n`);
console.log(`bench: wrote ${file}`);
