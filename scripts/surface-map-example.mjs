#!/usr/bin/env node
// Draws the README's example surface map from the synthetic model of src/map/example.ts (not a real disk):
// docs/surface-map.svg, and docs/surface-map.png rendered by headless chromium (Debian's `chromium`).
// Run after `npm run build:ts` (it uses dist/): `node scripts/surface-map-example.mjs`.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(repo, 'dist/map');
if (!fs.existsSync(path.join(dist, 'example.js'))) {
  console.error('surface-map-example: dist/map/example.js is missing: run "npm run build:ts" first');
  process.exit(1);
}
const { exampleModel } = await import(path.join(dist, 'example.js'));
const { renderSvg, mapGeometry } = await import(path.join(dist, 'svg.js'));

const model = exampleModel();
const svg = path.join(repo, 'docs/surface-map.svg');
const png = path.join(repo, 'docs/surface-map.png');
fs.writeFileSync(svg, renderSvg(model));
console.log(`wrote ${path.relative(repo, svg)}`);

const chromium = spawnSync('sh', ['-c', 'command -v chromium || command -v chromium-browser'], { encoding: 'utf8' }).stdout.trim();
if (chromium === '') {
  console.error('surface-map-example: no chromium on PATH (apt-get install chromium): the PNG was not made');
  process.exit(1);
}
const g = mapGeometry(model);
const profile = fs.mkdtempSync(path.join(fs.realpathSync('/tmp'), 'dmr-map-example-'));
try {
  const r = spawnSync(
    chromium,
    ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--force-device-scale-factor=1', `--user-data-dir=${profile}`,
      `--window-size=${g.width},${g.height}`, `--screenshot=${png}`, `file://${svg}`],
    { encoding: 'utf8', timeout: 60_000, env: { ...process.env, HOME: profile } },
  );
  if (r.status !== 0) {
    console.error(`surface-map-example: chromium failed (status ${r.status}): ${r.stderr.slice(-1000)}`);
    process.exit(1);
  }
} finally {
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(`wrote ${path.relative(repo, png)} (${g.width}x${g.height})`);
