// Numbers people type: sector numbers, byte counts, flag and setting values. Decimal digits only (no sign,
// no exponent, no unit): anything else is refused rather than guessed at.
import { DmrError } from './errors.js';

/** `s` as a whole number when it is 1..`maxDigits` decimal digits and a safe integer, else null. */
export function parseWholeNumber(s: string, maxDigits = 16): number | null {
  if (s.length === 0 || s.length > maxDigits || !/^[0-9]+$/.test(s)) return null;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : null;
}

/** A 512-byte sector number given as decimal text; E_USAGE when it is not one. */
export function parseSector(s: string): number {
  if (!/^[0-9]{1,16}$/.test(s)) throw new DmrError('E_USAGE', `sector must be a whole number of 512-byte sectors, got ${JSON.stringify(s)}`);
  const n = parseWholeNumber(s);
  if (n === null) throw new DmrError('E_USAGE', `sector ${s} is too large`);
  return n;
}
