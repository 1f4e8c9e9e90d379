// The surface map as SVG: a header (device, size, regions, time, scan state and counts), the grid of
// regions (each cell filled with the colour of its slowest read in the latest pass, marked in a corner
// when it holds pending, relocated or remapped blocks) and a legend. Pure: model in, markup out.
import { formatBytes } from '../cli/format.js';
import type { SurfaceModel, SurfaceRegion } from '../control/protocol.js';
import { escapeXml } from './escape.js';
import { cellOrigin, gridLayout, type GridLayout } from './layout.js';
import { BIN_SWATCHES, fillOf, GRID_BACKGROUND, MARK_KINDS, MARKS, NOT_READ, PAGE_BACKGROUND, TEXT_COLOUR, type MarkKind } from './palette.js';

export const MARGIN = 16;
const TITLE_SIZE = 18;
const TEXT_SIZE = 13;
const LINE = 19;
/** The header: a title and three lines. */
const HEADER_HEIGHT = MARGIN + TITLE_SIZE + 3 * LINE + 12;
const MIN_WIDTH = 920;
const SWATCH = 14;

/** Where the grid sits in the picture (the tests find a cell's pixels with it). */
export interface MapGeometry {
  width: number;
  height: number;
  gridX: number;
  gridY: number;
  grid: GridLayout;
}

export function mapGeometry(model: SurfaceModel): MapGeometry {
  const grid = gridLayout(model.regions.length);
  const width = Math.max(MIN_WIDTH, grid.width + 2 * MARGIN);
  const legend = legendHeight(width);
  return { width, height: HEADER_HEIGHT + grid.height + legend, gridX: MARGIN, gridY: HEADER_HEIGHT, grid };
}

/** The centre of region `index`'s cell in the picture, px (where its fill shows whatever its marks). */
export function cellCentre(model: SurfaceModel, index: number): { x: number; y: number } {
  const g = mapGeometry(model);
  const o = cellOrigin(g.grid, index);
  return { x: g.gridX + o.x + g.grid.cell / 2, y: g.gridY + o.y + g.grid.cell / 2 };
}

/** The kinds of blocks region `r` holds, in MARK_KINDS order. */
export function marksOf(r: Pick<SurfaceRegion, MarkKind>): MarkKind[] {
  return MARK_KINDS.filter((k) => r[k] > 0);
}

const iso = (ms: number | null): string => (ms === null ? '-' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z'));

/** The header's lines after the title. */
export function headerLines(model: SurfaceModel): string[] {
  const s = model.scan;
  let pending = 0;
  let remapped = 0;
  let relocated = 0;
  const bins = BIN_SWATCHES.map(() => 0);
  for (const r of model.regions) {
    pending += r.pending;
    remapped += r.remapped;
    relocated += r.relocated;
    r.bins.forEach((v, i) => (bins[i] = (bins[i] as number) + v));
  }
  const scanLine = [`scan ${s.state}`, `${s.progress}%`, `pass ${s.pass}`, `errors found ${s.errorsFound}`, `slow found ${s.slowFound}`];
  if (s.startedAt !== null) scanLine.push(`started ${iso(s.startedAt)}`);
  if (s.finishedAt !== null) scanLine.push(`last pass finished ${iso(s.finishedAt)}`);
  return [
    `${formatBytes(model.deviceBytes)} (${model.deviceBytes} bytes), ${model.blockSize}-byte blocks, ${model.regions.length} regions of ${formatBytes(model.regionBytes)}, map made ${iso(model.generatedAt)}`,
    scanLine.join(', '),
    `blocks: ${pending} pending, ${remapped} remapped (${relocated} relocated); reads of the latest pass: ${BIN_SWATCHES.map((b, i) => `${b.label} ${bins[i] as number}`).join(', ')}`,
  ];
}

export function mapTitle(model: SurfaceModel): string {
  return `Surface map of ${model.device}${model.name === null ? '' : ` (${model.name})`}`;
}

/** A legend item's width: swatch, gap, the label (13 px sans-serif: at most ~7.5 px a character), a gap. */
const itemWidth = (label: string): number => SWATCH + 6 + Math.ceil(label.length * 7.5) + 24;

/** Legend items laid out left to right, wrapping at the picture's width: each item's x and row. */
function flow(labels: readonly string[], width: number): Array<{ x: number; row: number }> {
  const out: Array<{ x: number; row: number }> = [];
  let x = MARGIN;
  let row = 0;
  for (const l of labels) {
    const w = itemWidth(l);
    if (x > MARGIN && x + w > width - MARGIN) {
      x = MARGIN;
      row++;
    }
    out.push({ x, row });
    x += w;
  }
  return out;
}

const rowsOf = (items: Array<{ row: number }>): number => (items.at(-1)?.row ?? 0) + 1;
const COLOUR_LABELS = [...BIN_SWATCHES, NOT_READ].map((s) => s.label);
const MARK_LABELS = MARK_KINDS.map((k) => MARKS[k].label);

function legendHeight(width: number): number {
  // A gap, the colour caption and rows, the marks caption and rows, the reading-order note.
  return 14 + LINE + rowsOf(flow(COLOUR_LABELS, width)) * LINE + 6 + LINE + rowsOf(flow(MARK_LABELS, width)) * LINE + 6 + LINE + MARGIN;
}

/** The triangle of a `kind` mark on a cell of side `c` at (x, y); never reaches the cell's centre. */
function markPolygon(kind: MarkKind, x: number, y: number, c: number, index: number | null = null): string {
  const m = MARKS[kind];
  const s = Math.max(3, Math.round(c * m.size));
  const pts: Array<[number, number]> =
    m.corner === 'top-right'
      ? [[x + c - s, y], [x + c, y], [x + c, y + s]]
      : m.corner === 'bottom-left'
        ? [[x, y + c - s], [x, y + c], [x + s, y + c]]
        : [[x + c, y + c - s], [x + c, y + c], [x + c - s, y + c]];
  const data = index === null ? '' : ` data-i="${index}"`;
  return `<polygon${data} points="${pts.map(([a, b]) => `${a},${b}`).join(' ')}" fill="${m.colour}" stroke="#202020" stroke-width="0.6"/>`;
}

function cells(model: SurfaceModel, g: MapGeometry): string {
  const out: string[] = [];
  const c = g.grid.cell;
  for (const r of model.regions) {
    const o = cellOrigin(g.grid, r.index);
    const x = g.gridX + o.x;
    const y = g.gridY + o.y;
    out.push(`<rect class="cell" data-i="${r.index}" x="${x}" y="${y}" width="${c}" height="${c}" fill="${fillOf(r.worstBin)}"/>`);
    for (const k of marksOf(r)) out.push(markPolygon(k, x, y, c, r.index));
  }
  return out.join('\n');
}

function legend(g: MapGeometry, regionBytes: number): string {
  const out: string[] = [];
  let y = g.gridY + g.grid.height + 14;
  const text = (x: number, yy: number, s: string, extra = ''): string =>
    `<text x="${x}" y="${yy}" font-size="${TEXT_SIZE}" fill="${TEXT_COLOUR}"${extra}>${escapeXml(s)}</text>`;
  out.push(text(MARGIN, y + TEXT_SIZE, 'Colour: the slowest read of the region in the latest scan pass', ' font-weight="bold"'));
  y += LINE;
  const colours = [...BIN_SWATCHES, NOT_READ];
  const colourAt = flow(COLOUR_LABELS, g.width);
  colours.forEach((sw, i) => {
    const { x, row } = colourAt[i] as { x: number; row: number };
    const yy = y + row * LINE;
    out.push(`<rect x="${x}" y="${yy}" width="${SWATCH}" height="${SWATCH}" fill="${sw.colour}" stroke="#202020" stroke-width="0.6"/>`);
    out.push(text(x + SWATCH + 6, yy + SWATCH - 2, sw.label));
  });
  y += rowsOf(colourAt) * LINE + 6;
  out.push(text(MARGIN, y + TEXT_SIZE, 'Marks: the region holds blocks of that kind (counted from the remap table when the map was made)', ' font-weight="bold"'));
  y += LINE;
  const markAt = flow(MARK_LABELS, g.width);
  MARK_KINDS.forEach((k, i) => {
    const { x, row } = markAt[i] as { x: number; row: number };
    const yy = y + row * LINE;
    out.push(`<rect x="${x}" y="${yy}" width="${SWATCH}" height="${SWATCH}" fill="${NOT_READ.colour}" stroke="#202020" stroke-width="0.6"/>`);
    out.push(markPolygon(k, x, yy, SWATCH));
    out.push(text(x + SWATCH + 6, yy + SWATCH - 2, MARKS[k].label));
  });
  y += rowsOf(markAt) * LINE + 6;
  out.push(text(MARGIN, y + TEXT_SIZE, `One cell is one region of ${formatBytes(regionBytes)}, in reading order: left to right, then top to bottom. Relocated blocks are remapped ones too.`));
  return out.join('\n');
}

/**
 * The map's SVG markup. `standalone`: a file of its own (XML declaration-free, with the SVG namespace);
 * otherwise the element to put inside an HTML page (the HTML parser gives it the namespace).
 */
export function svgMarkup(model: SurfaceModel, standalone: boolean): string {
  const g = mapGeometry(model);
  const ns = standalone ? ' xmlns="http://www.w3.org/2000/svg"' : ' id="surface-map"';
  const header = [
    `<text x="${MARGIN}" y="${MARGIN + TITLE_SIZE}" font-size="${TITLE_SIZE}" font-weight="bold" fill="${TEXT_COLOUR}">${escapeXml(mapTitle(model))}</text>`,
    ...headerLines(model).map(
      (l, i) => `<text x="${MARGIN}" y="${MARGIN + TITLE_SIZE + (i + 1) * LINE}" font-size="${TEXT_SIZE}" fill="${TEXT_COLOUR}">${escapeXml(l)}</text>`,
    ),
  ];
  return [
    `<svg${ns} width="${g.width}" height="${g.height}" viewBox="0 0 ${g.width} ${g.height}" font-family="sans-serif">`,
    `<title>${escapeXml(mapTitle(model))}</title>`,
    `<rect x="0" y="0" width="${g.width}" height="${g.height}" fill="${PAGE_BACKGROUND}"/>`,
    ...header,
    `<rect x="${g.gridX}" y="${g.gridY}" width="${g.grid.width}" height="${g.grid.height}" fill="${GRID_BACKGROUND}"/>`,
    `<g id="cells" shape-rendering="crispEdges">`,
    cells(model, g),
    '</g>',
    legend(g, model.regionBytes),
    '</svg>',
  ].join('\n');
}

/** The map as an SVG file. */
export function renderSvg(model: SurfaceModel): string {
  return `${svgMarkup(model, true)}\n`;
}
