// Sums up where an e2e run's command time went, from the NDJSON lines test/e2e/helpers.ts `sh` appends:
//   node test/vm/command-times.mjs [FILE]
// One line per kind of command (count, total, mean), the largest first, and the total. Prints nothing when
// the file is missing (a run on a host that kept no record).
import fs from 'node:fs';

const file = process.argv[2] ?? '/tmp/dmremap-e2e-commands.ndjson';
let text;
try {
  text = fs.readFileSync(file, 'utf8');
} catch {
  process.exit(0);
}
const by = new Map();
let all = 0;
let n = 0;
for (const line of text.split('\n')) {
  if (line.trim() === '') continue;
  const { what, ms } = JSON.parse(line);
  const e = by.get(what) ?? { count: 0, ms: 0 };
  e.count++;
  e.ms += ms;
  by.set(what, e);
  all += ms;
  n++;
}
console.log(`commands: ${n}, ${(all / 1000).toFixed(0)} s in all`);
for (const [what, e] of [...by].sort((a, b) => b[1].ms - a[1].ms).slice(0, 15)) {
  console.log(`  ${what.padEnd(28)} ${String(e.count).padStart(5)} x  ${(e.ms / 1000).toFixed(0).padStart(5)} s  mean ${(e.ms / e.count / 1000).toFixed(2)} s`);
}
