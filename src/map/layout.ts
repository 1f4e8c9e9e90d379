// The grid's geometry: regions in reading order (row-major, first region top left, like Victoria's block
// grid), at most GRID_COLUMNS a row, so that 4096 regions make a 64 x 64 grid about 1200 px wide. Fewer
// regions get bigger cells (up to MAX_PITCH px) rather than a picture too small to see.

export const GRID_COLUMNS = 64;
/** The width the grid of a full row aims at. */
export const GRID_WIDTH = 1152;
export const MAX_PITCH = 48;
export const MIN_PITCH = 6;

export interface GridLayout {
  columns: number;
  rows: number;
  /** Distance between the left edges of neighbouring cells, px. */
  pitch: number;
  /** The cell's side (pitch less the gap), px. */
  cell: number;
  width: number;
  height: number;
}

export function gridLayout(count: number): GridLayout {
  if (!Number.isInteger(count) || count <= 0) throw new RangeError(`a map needs at least one region, got ${String(count)}`);
  const columns = Math.min(count, GRID_COLUMNS);
  const rows = Math.ceil(count / columns);
  const pitch = Math.max(MIN_PITCH, Math.min(MAX_PITCH, Math.floor(GRID_WIDTH / columns)));
  const gap = pitch >= 24 ? 2 : 1;
  return { columns, rows, pitch, cell: pitch - gap, width: columns * pitch + gap, height: rows * pitch + gap };
}

/** The top-left corner of cell `index` inside the grid (the gap before the first column and row included). */
export function cellOrigin(l: GridLayout, index: number): { x: number; y: number } {
  const gap = l.pitch - l.cell;
  return { x: gap + (index % l.columns) * l.pitch, y: gap + Math.floor(index / l.columns) * l.pitch };
}
