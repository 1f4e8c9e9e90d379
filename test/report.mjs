// Reads a vitest JSON report and prints one line `<label>: N passed, N failed, N skipped`,
// the closing line CI reads. Exit status: 0 when nothing failed and something ran.
import { readFileSync } from 'node:fs';

const [file, label = 'tests'] = process.argv.slice(2);
let r;
try {
  r = JSON.parse(readFileSync(file, 'utf8'));
} catch (e) {
  console.log(`${label}: 0 passed, 1 failed (no report: ${e.message})`);
  process.exit(1);
}
const passed = r.numPassedTests ?? 0;
// A file that failed before running any test (import error, failing hook) counts once; its tests are not
// double-counted.
const brokenFiles = (r.testResults ?? []).filter((f) => f.status === 'failed' && (f.assertionResults ?? []).length === 0).length;
const failed = (r.numFailedTests ?? 0) + brokenFiles;
const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
console.log(`${label}: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
