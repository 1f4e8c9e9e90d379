// The map's colours: the latency ramp of MHDD and Victoria (grey shades for fast reads, green, orange, red
// for slow ones, blue for errors), a colour of its own for a region the latest pass has not read, and
// one colour per kind of block mark. The legend's words are here too, so that picture and legend agree.
import { BIN_COUNT } from '../scan/regions.js';

export interface Swatch {
  colour: string;
  label: string;
}

/** One per latency bin, in LATENCY_BINS order (<5, <20, <50, <150, <500, >=500 ms, error). */
export const BIN_SWATCHES: readonly Swatch[] = [
  { colour: '#d4d4d4', label: '< 5 ms' },
  { colour: '#a6a6a6', label: '< 20 ms' },
  { colour: '#787878', label: '< 50 ms' },
  { colour: '#22a33a', label: '< 150 ms' },
  { colour: '#ff8c00', label: '< 500 ms' },
  { colour: '#e0201c', label: '>= 500 ms' },
  { colour: '#1f49e0', label: 'read error' },
];

/** A region the latest pass (running, or the last one done or stopped) has not read. */
export const NOT_READ: Swatch = { colour: '#ffffff', label: 'not read in the latest pass' };

/** The grid's background (the gaps between cells) and the page's. */
export const GRID_BACKGROUND = '#3a3a3a';
export const PAGE_BACKGROUND = '#f7f7f4';
export const TEXT_COLOUR = '#1b1b1b';

export const MARK_KINDS = ['pending', 'relocated', 'remapped'] as const;
export type MarkKind = (typeof MARK_KINDS)[number];

/** The marks on a cell: which corner, colour, legend words. Pending is the largest (its data is gone). */
export const MARKS: Readonly<Record<MarkKind, Swatch & { corner: 'top-right' | 'bottom-left' | 'bottom-right'; size: number }>> = {
  pending: { colour: '#ff00d0', label: 'pending: data lost, reads fail until written', corner: 'top-right', size: 0.55 },
  relocated: { colour: '#00e1ff', label: 'relocated: moved by the error policy or the scan', corner: 'bottom-left', size: 0.4 },
  remapped: { colour: '#ffe000', label: 'remapped: served from the spare', corner: 'bottom-right', size: 0.4 },
};

/** The fill of a region whose worst read is in `worstBin` (null: not read). */
export function fillOf(worstBin: number | null): string {
  if (worstBin === null) return NOT_READ.colour;
  if (!Number.isInteger(worstBin) || worstBin < 0 || worstBin >= BIN_COUNT) throw new RangeError(`no latency bin ${String(worstBin)}`);
  return (BIN_SWATCHES[worstBin] as Swatch).colour;
}
