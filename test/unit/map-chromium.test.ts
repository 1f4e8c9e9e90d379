// The surface map as a person sees it: the SVG and the HTML page rendered by headless Chromium (Debian's
// `chromium` package) to PNG, and the pixels read back (png.ts): the centre of each region's cell has its
// bin's colour (a region with a read error in the error colour, a healthy one in its grey), an unread one
// the not-read colour, and a pending block's corner mark its colour. One Chromium launch per picture.
// Where chromium is not installed the test is skipped with a message, unless CI is set: then it fails.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SurfaceModel } from '../../src/control/protocol.js';
import { renderHtml } from '../../src/map/html.js';
import { cellOrigin } from '../../src/map/layout.js';
import { BIN_SWATCHES, MARKS, NOT_READ } from '../../src/map/palette.js';
import { cellCentre, mapGeometry, renderSvg } from '../../src/map/svg.js';
import { binsModel, blockOf } from './map-fixtures.js';
import { decodePng, pixelHex, type Png } from './png.js';

const CHROMIUM_TIMEOUT_MS = 60_000;

/** The chromium binary on PATH, or null. */
function findChromium(): string | null {
  for (const name of ['chromium', 'chromium-browser']) {
    const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
    if (r.status === 0 && r.stdout.trim() !== '') return r.stdout.trim();
  }
  return null;
}

const chromium = findChromium();
const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';
if (chromium === null && !inCi) {
  console.warn('map-chromium.test.ts: skipped: no chromium on PATH (apt-get install chromium); with CI set this test fails instead');
}

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-map-'));
});
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** The page's DOM after its scripts ran, as Chromium serialises it. */
function dumpDom(url: string): string {
  if (chromium === null) throw new Error('chromium is not installed (Debian: apt-get install chromium); CI needs it for this test');
  const r = spawnSync(
    chromium,
    ['--headless', '--no-sandbox', '--disable-gpu', `--user-data-dir=${path.join(dir, 'profile-dom')}`, '--dump-dom', url],
    { encoding: 'utf8', timeout: CHROMIUM_TIMEOUT_MS - 5000, env: { ...process.env, HOME: dir }, maxBuffer: 64 << 20 },
  );
  if (r.status !== 0) throw new Error(`chromium failed (status ${r.status}, ${r.error?.message ?? ''}): ${r.stderr.slice(-2000)}`);
  return r.stdout;
}

/** Renders `file` in a window the size of the map and returns the screenshot. */
function screenshot(file: string, model: SurfaceModel): Png {
  if (chromium === null) throw new Error('chromium is not installed (Debian: apt-get install chromium); CI needs it for this test');
  const g = mapGeometry(model);
  const png = `${file}.png`;
  const r = spawnSync(
    chromium,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--hide-scrollbars',
      '--force-device-scale-factor=1',
      `--user-data-dir=${path.join(dir, `profile-${path.basename(file)}`)}`,
      `--window-size=${g.width},${g.height}`,
      `--screenshot=${png}`,
      `file://${file}`,
    ],
    { encoding: 'utf8', timeout: CHROMIUM_TIMEOUT_MS - 5000, env: { ...process.env, HOME: dir } },
  );
  if (r.status !== 0 || !fs.existsSync(png)) throw new Error(`chromium failed (status ${r.status}, ${r.error?.message ?? ''}): ${r.stderr.slice(-2000)}`);
  const pic = decodePng(fs.readFileSync(png));
  expect([pic.width, pic.height]).toEqual([g.width, g.height]);
  return pic;
}

/** What a person would check: every cell's centre in its colour, and the pending mark in its corner. */
function checkPixels(pic: Png, model: SurfaceModel): void {
  const errorCell = cellCentre(model, 6);
  expect(pixelHex(pic, errorCell.x, errorCell.y), 'the region with a read error').toBe(BIN_SWATCHES[6]?.colour);
  const healthy = cellCentre(model, 0);
  expect(pixelHex(pic, healthy.x, healthy.y), 'a healthy region').toBe(BIN_SWATCHES[0]?.colour);
  expect(BIN_SWATCHES[6]?.colour).not.toBe(BIN_SWATCHES[0]?.colour);
  for (const r of model.regions) {
    const c = cellCentre(model, r.index);
    const want = r.worstBin === null ? NOT_READ.colour : BIN_SWATCHES[r.worstBin]?.colour;
    expect(pixelHex(pic, c.x, c.y), `region ${r.index}'s cell centre`).toBe(want);
  }
  // The pending mark: a triangle in the top-right corner of region 6's cell, 2 px in from each edge.
  const g = mapGeometry(model);
  const o = cellOrigin(g.grid, 6);
  expect(pixelHex(pic, g.gridX + o.x + g.grid.cell - 3, g.gridY + o.y + 2), 'the pending mark').toBe(MARKS.pending.colour);
}

const model = binsModel(40, [[blockOf(6, 3), { state: 'lost', origin: 'scan' }]]);

describe.skipIf(chromium === null && !inCi)('the map in Chromium', () => {
  it('the SVG: cells in their colours at their centres, the pending mark in its corner', { timeout: CHROMIUM_TIMEOUT_MS }, () => {
    const file = path.join(dir, 'map.svg');
    fs.writeFileSync(file, renderSvg(model));
    checkPixels(screenshot(file, model), model);
  });

  it('the HTML page: the same pixels', { timeout: CHROMIUM_TIMEOUT_MS }, () => {
    const file = path.join(dir, 'map.html');
    fs.writeFileSync(file, renderHtml(model));
    checkPixels(screenshot(file, model), model);
  });

  it("the HTML page's script: a region's details (here named in the address, as a click keeps them)", { timeout: CHROMIUM_TIMEOUT_MS }, () => {
    const file = path.join(dir, 'details.html');
    fs.writeFileSync(file, renderHtml(model));
    const dom = dumpDom(`file://${file}#region=6`);
    const detail = /<pre id="detail">([\s\S]*?)<\/pre>/.exec(dom)?.[1];
    expect(detail?.split('\n')).toEqual([
      'Region 6 of 40 (kept: click again to release)',
      'Bytes 6291456 to 7340031 (6.0 MiB to 7.0 MiB, 1.0 MiB)',
      'Slowest read: read error',
      'Reads of the latest pass: &lt; 5 ms: 1, &lt; 20 ms: 0, &lt; 50 ms: 0, &lt; 150 ms: 0, &lt; 500 ms: 0, &gt;= 500 ms: 0, read error: 1',
      'Blocks: 1 pending, 0 remapped, 0 relocated',
    ]);
    // The selected cell is outlined.
    expect(dom).toMatch(/<rect id="selected" x="[\d.]+" y="[\d.]+" width="[\d.]+" height="[\d.]+" [^>]*visibility="visible"/);
  });
});
