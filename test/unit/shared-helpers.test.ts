// The helpers that have one home: dev_t major/minor, the decimal number and sector parsers, and the
// queue limits the CLI checks against the ones the native addon enforces.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { majorOf, minorOf, sysfsBlockPath } from '../../src/device/dev-t.js';
import { parseSector, parseWholeNumber } from '../../src/numbers.js';
import { MAX_DEPTH, MAX_QUEUES } from '../../src/device/config.js';
import { loadNative } from '../../src/native.js';
import { REPO } from './helpers.js';

/** glibc's makedev(3). */
const makedev = (maj: bigint, min: bigint): bigint => ((maj & 0xfffn) << 8n) | ((maj & ~0xfffn) << 32n) | (min & 0xffn) | ((min & ~0xffn) << 12n);

describe('dev_t', () => {
  it('splits small and large device numbers as glibc encodes them', () => {
    for (const [maj, min] of [[8n, 17n], [259n, 0n], [7n, 255n], [253n, 256n], [4095n, 1048575n], [4096n, 1n], [0xfffffn, 0xfffffffn]] as const) {
      const d = makedev(maj, min);
      expect([majorOf(d), minorOf(d)]).toEqual([maj, min]);
    }
    expect(sysfsBlockPath(makedev(8n, 17n))).toBe('/sys/dev/block/8:17');
  });
});

describe('numbers people type', () => {
  it('takes decimal digits only, up to a number of digits, as safe integers', () => {
    expect(parseWholeNumber('0')).toBe(0);
    expect(parseWholeNumber('4096')).toBe(4096);
    expect(parseWholeNumber('9007199254740991')).toBe(Number.MAX_SAFE_INTEGER);
    for (const bad of ['', '-1', '+1', '1.5', '1e3', '0x10', ' 1', '12k', '9007199254740993']) expect(parseWholeNumber(bad), bad).toBeNull();
    expect(parseWholeNumber('1234567890', 9)).toBeNull();
    expect(parseWholeNumber('123456789', 9)).toBe(123456789);
  });

  it('sectors: a usage error naming the bad text', () => {
    expect(parseSector('2048')).toBe(2048);
    expect(() => parseSector('abc')).toThrow('sector must be a whole number of 512-byte sectors, got "abc"');
    expect(() => parseSector('9999999999999999')).toThrow('sector 9999999999999999 is too large');
  });
});

const built = fs.existsSync(path.join(REPO, 'build/Release/dmremap_native.node'));

describe.skipIf(!built)('queue limits', () => {
  it('the CLI allows exactly what the native addon takes', () => {
    expect(loadNative().limits).toEqual({ maxQueues: MAX_QUEUES, maxDepth: MAX_DEPTH });
  });
});
