// The surface map's renderer and model: one cell per region in reading order, its colour by the worst
// latency bin, the marks of pending / relocated / remapped blocks counted from the table, hostile names
// shown as text, and an HTML page that needs no network and whose data cannot end its script.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { surfaceModelSchema, type SurfaceModel } from '../../src/control/protocol.js';
import { escapeXml, jsonForScript } from '../../src/map/escape.js';
import { exampleModel, EXAMPLE_ERROR_REGIONS } from '../../src/map/example.js';
import { renderHtml } from '../../src/map/html.js';
import { gridLayout } from '../../src/map/layout.js';
import { BIN_SWATCHES, MARKS, NOT_READ } from '../../src/map/palette.js';
import { surfaceModel } from '../../src/map/surface.js';
import { renderSvg } from '../../src/map/svg.js';
import { MIB, RegionRecord } from '../../src/scan/regions.js';
import { REPO } from './helpers.js';
import { binsModel, blockOf, BLOCK } from './map-fixtures.js';

/** Every cell's fill, by region index. */
function cellFills(svg: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const m of svg.matchAll(/<rect class="cell" data-i="(\d+)" x="[\d.]+" y="[\d.]+" width="[\d.]+" height="[\d.]+" fill="(#[0-9a-f]{6})"\/>/g)) {
    out.set(Number(m[1]), m[2] as string);
  }
  return out;
}
/** The colours of the marks on region `i`'s cell. */
function markColours(svg: string, i: number): string[] {
  return [...svg.matchAll(new RegExp(`<polygon data-i="${i}" points="[^"]*" fill="(#[0-9a-f]{6})"`, 'g'))].map((m) => m[1] as string);
}

describe('the surface model', () => {
  it('counts pending (lost), remapped (mapped) and relocated (mapped, origin auto or scan) blocks per region', () => {
    const m = binsModel(16, [
      [blockOf(2, 1), { state: 'lost', origin: 'auto' }],
      [blockOf(2, 2), { state: 'lost', origin: 'manual' }],
      [blockOf(2, 3), { state: 'mapped', origin: 'scan' }],
      [blockOf(9, 0), { state: 'mapped', origin: 'manual' }],
      [blockOf(9, 255), { state: 'mapped', origin: 'auto' }],
      [blockOf(15, 255), { state: 'lost', origin: 'scan' }],
    ]);
    const counts = m.regions.map((r) => [r.pending, r.remapped, r.relocated]);
    expect(counts[2]).toEqual([2, 1, 1]);
    expect(counts[9]).toEqual([0, 2, 1]);
    expect(counts[15]).toEqual([1, 0, 0]);
    expect(counts.filter((_, i) => ![2, 9, 15].includes(i)).every((c) => c.every((v) => v === 0))).toBe(true);
    expect(surfaceModelSchema.safeParse(m).success).toBe(true);
  });

  it('walks the table once and leaves the scanner\'s record as it was', () => {
    const record = RegionRecord.forDevice(4 * MIB);
    record.addRead({ offset: 0, length: MIB, latencyMs: 1, failed: false });
    record.noteBlock(MIB, 'pending', 5); // stale counts in the scanner's record: not what the map shows
    const before = record.fields.slice();
    let walks = 0;
    const entries = {
      *[Symbol.iterator]() {
        walks++;
        yield [blockOf(3), { state: 'lost', origin: 'scan' }] as const;
      },
    };
    const m = surfaceModel({ device: '/dev/ublkb1', name: null, deviceBytes: 4 * MIB, blockSize: BLOCK, regions: record, scan: null, entries, now: 0 });
    expect(walks).toBe(1);
    expect(record.fields).toEqual(before);
    expect(m.regions.map((r) => r.pending)).toEqual([0, 0, 0, 1]);
    expect(m.regions[0]?.worstBin).toBe(0);
  });

  it('without a scanner every region is not read and the scan is idle', () => {
    const m = surfaceModel({ device: '/dev/ublkb1', name: null, deviceBytes: 3 * MIB + 4096, blockSize: 4096, regions: null, scan: null, entries: [], now: 5 });
    expect(m.regions).toHaveLength(4);
    expect(m.regions.every((r) => r.worstBin === null && r.bins.every((b) => b === 0))).toBe(true);
    expect(m.regions[3]).toMatchObject({ start: 3 * MIB, end: 3 * MIB + 4096 });
    expect(m.scan).toMatchObject({ state: 'idle', progress: 0, pass: 0, deviceBytes: 3 * MIB + 4096 });
    expect(cellFills(renderSvg(m))).toEqual(new Map([0, 1, 2, 3].map((i) => [i, NOT_READ.colour])));
  });
});

describe('renderSvg', () => {
  it('draws one cell per region, in reading order, up to 4096 in a grid about 1200 px wide', () => {
    const m = binsModel(16);
    expect(cellFills(renderSvg(m)).size).toBe(16);
    const big = surfaceModel({ device: '/dev/ublkb2', name: null, deviceBytes: 4096 * MIB, blockSize: 4096, regions: null, scan: null, entries: [], now: 0 });
    const svg = renderSvg(big);
    const fills = cellFills(svg);
    expect(fills.size).toBe(4096);
    const l = gridLayout(4096);
    expect(l).toMatchObject({ columns: 64, rows: 64 });
    expect(l.width).toBeLessThanOrEqual(1200);
    expect(l.width).toBeGreaterThan(1000);
    const width = Number(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="(\d+)"/.exec(svg)?.[1]);
    expect(width).toBeLessThanOrEqual(1220);
    // Reading order: region 65 is the second row's second cell.
    const xy = (i: number): [number, number] => {
      const mm = new RegExp(`data-i="${i}" x="(\\d+)" y="(\\d+)"`).exec(svg);
      return [Number(mm?.[1]), Number(mm?.[2])];
    };
    expect(xy(1)[0]).toBeGreaterThan(xy(0)[0]);
    expect(xy(1)[1]).toBe(xy(0)[1]);
    expect(xy(64)).toEqual([xy(0)[0], xy(0)[1] + l.pitch]);
    expect(xy(65)).toEqual([xy(1)[0], xy(64)[1]]);
  });

  it('fills a cell with the colour of its worst latency bin; an unread region with the not-read colour', () => {
    const fills = cellFills(renderSvg(binsModel(16)));
    for (let i = 0; i < 7; i++) expect(fills.get(i), `region ${i}`).toBe(BIN_SWATCHES[i]?.colour);
    for (let i = 7; i < 16; i++) expect(fills.get(i)).toBe(NOT_READ.colour);
    // The ramp: grey shades, green, orange, red, blue for errors; white for not read.
    expect(BIN_SWATCHES.map((b) => b.colour)).toEqual(['#d4d4d4', '#a6a6a6', '#787878', '#22a33a', '#ff8c00', '#e0201c', '#1f49e0']);
    expect(new Set([...BIN_SWATCHES.map((b) => b.colour), NOT_READ.colour]).size).toBe(8);
  });

  it('marks cells holding pending, relocated and remapped blocks, one colour per kind', () => {
    const svg = renderSvg(
      binsModel(16, [
        [blockOf(1), { state: 'lost', origin: 'scan' }],
        [blockOf(3), { state: 'mapped', origin: 'auto' }],
        [blockOf(4), { state: 'mapped', origin: 'manual' }],
      ]),
    );
    expect(markColours(svg, 1)).toEqual([MARKS.pending.colour]);
    expect(markColours(svg, 3)).toEqual([MARKS.relocated.colour, MARKS.remapped.colour]);
    expect(markColours(svg, 4)).toEqual([MARKS.remapped.colour]);
    for (const i of [0, 2, 5, 6, 7, 15]) expect(markColours(svg, i)).toEqual([]);
    expect(new Set([MARKS.pending.colour, MARKS.relocated.colour, MARKS.remapped.colour]).size).toBe(3);
    // The legend names each kind.
    for (const k of ['pending', 'relocated', 'remapped']) expect(svg).toContain(`>${k}: `);
  });

  it('has a header with the device, size, region size, time, scan state and counts', () => {
    const svg = renderSvg(binsModel(16, [[blockOf(1), { state: 'lost', origin: 'scan' }]]));
    expect(svg).toContain('Surface map of /dev/ublkb7 (data)');
    expect(svg).toContain('16.0 MiB (16777216 bytes), 4096-byte blocks, 16 regions of 1.0 MiB, map made 2026-12-02T03:00:00Z');
    expect(svg).toContain('scan idle, 0%, pass 0, errors found 0, slow found 0');
    expect(svg).toContain('blocks: 1 pending, 0 remapped (0 relocated); reads of the latest pass: &#60; 5 ms 8, &#60; 20 ms 1, &#60; 50 ms 1, &#60; 150 ms 1, &#60; 500 ms 1, &#62;= 500 ms 1, read error 1');
  });

  it('shows a hostile device name as text', () => {
    const evil = '</text><script>alert(1)</script><a href="x" onload=\'y\'>&amp;';
    const svg = renderSvg(binsModel(4, [], evil));
    expect(svg).not.toContain('<script');
    expect(svg).not.toContain('<a ');
    expect(svg).toContain(escapeXml(evil));
    expect(escapeXml(evil)).not.toMatch(/[<>"']/);
    // Still one title element and one text element per header line.
    expect(svg.match(/<title>/g)).toHaveLength(1);
  });
});

describe('renderHtml', () => {
  const evil = '</script><script>alert(1)</script><!-- \u2028';

  it('is one self-contained page: no http(s) reference, no external script, style, font or image', () => {
    const html = renderHtml(exampleModel());
    expect(html).not.toMatch(/https?:\/\//i);
    expect(html).not.toMatch(/<script[^>]+src=|<link|@import|url\(|<img|<iframe/i);
    expect(html.match(/<svg/g)).toHaveLength(1);
    expect(html).toMatch(/^<!DOCTYPE html>/);
  });

  it('embeds the model as JSON that no name can break out of', () => {
    const m = binsModel(4, [], evil);
    const html = renderHtml(m);
    const scripts = html.match(/<script[\s\S]*?<\/script>/g) ?? [];
    expect(scripts).toHaveLength(2);
    const json = /<script type="application\/json" id="surface-data">([\s\S]*)<\/script>\n<script>/.exec(html)?.[1] as string;
    expect(json).not.toContain('</script');
    expect(json).not.toContain('<');
    expect(json).not.toContain('\u2028');
    const data = JSON.parse(json) as { model: SurfaceModel };
    expect(data.model).toEqual(m);
    expect(data.model.name).toBe(evil);
    // Outside the data the name is escaped text (the title), never markup.
    expect(html.split('<script>alert(1)').length).toBe(1);
    expect(jsonForScript({ a: '</script>' })).toBe('{"a":"\\u003c/script\\u003e"}');
  });

  it('carries the cells the script looks up, and the same fills as the SVG', () => {
    const m = binsModel(16);
    const html = renderHtml(m);
    expect(cellFills(html)).toEqual(cellFills(renderSvg(m)));
    expect(html).toContain('id="surface-map"');
    expect(html).toContain('id="detail"');
  });
});

describe('the example', () => {
  it('docs/surface-map.svg is what the renderer draws of it (node scripts/surface-map-example.mjs remakes it)', () => {
    expect(fs.readFileSync(path.join(REPO, 'docs/surface-map.svg'), 'utf8')).toBe(renderSvg(exampleModel()));
    expect(fs.readFileSync(path.join(REPO, 'docs/surface-map.png')).subarray(1, 4).toString('latin1')).toBe('PNG');
  });

  it('has error regions drawn in the error colour, marked pending', () => {
    const m = exampleModel();
    const svg = renderSvg(m);
    const fills = cellFills(svg);
    for (const g of EXAMPLE_ERROR_REGIONS) {
      expect(fills.get(g)).toBe(BIN_SWATCHES[6]?.colour);
      expect(markColours(svg, g)).toContain(MARKS.pending.colour);
    }
    expect(m.regions.filter((r) => r.worstBin === null).length).toBeGreaterThan(1000);
  });
});
