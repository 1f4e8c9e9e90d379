// The tests' PNG reader (png.ts) against PNGs built here with every row filter (none, sub, up, average,
// Paeth), RGB and RGBA: it gives back the pixels that were filtered; and it refuses what it cannot read.
import { deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { decodePng, pixelHex } from './png.js';

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  // The reader does not check CRCs; any 4 bytes do here.
  return Buffer.concat([len, Buffer.from(type, 'latin1'), data, Buffer.alloc(4)]);
}

const paeth = (a: number, b: number, c: number): number => {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
};

/** A PNG of `pixels` (rows of width * channels bytes), row y filtered with filter y % 5. */
function encode(width: number, height: number, channels: 3 | 4, pixels: Buffer, depth = 8): Buffer {
  const stride = width * channels;
  const raw = Buffer.alloc(height * (stride + 1));
  for (let y = 0; y < height; y++) {
    const f = y % 5;
    raw[y * (stride + 1)] = f;
    for (let i = 0; i < stride; i++) {
      const x = pixels[y * stride + i] as number;
      const a = i >= channels ? (pixels[y * stride + i - channels] as number) : 0;
      const b = y > 0 ? (pixels[(y - 1) * stride + i] as number) : 0;
      const c = y > 0 && i >= channels ? (pixels[(y - 1) * stride + i - channels] as number) : 0;
      const pred = [0, a, b, (a + b) >> 1, paeth(a, b, c)][f] as number;
      raw[y * (stride + 1) + 1 + i] = (x - pred) & 0xff;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = depth;
  ihdr[9] = channels === 3 ? 2 : 6;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

function pattern(width: number, height: number, channels: number): Buffer {
  const out = Buffer.alloc(width * height * channels);
  for (let i = 0; i < out.length; i++) out[i] = (i * 37 + Math.floor(i / 7) * 101) & 0xff;
  return out;
}

describe('decodePng', () => {
  for (const channels of [3, 4] as const) {
    it(`reads ${channels === 3 ? 'RGB' : 'RGBA'} with each row filter`, () => {
      const px = pattern(13, 10, channels);
      const png = decodePng(encode(13, 10, channels, px));
      expect(png).toMatchObject({ width: 13, height: 10, channels });
      expect(png.pixels.equals(px)).toBe(true);
      const o = (4 * 13 + 5) * channels;
      expect(pixelHex(png, 5, 4)).toBe(`#${[0, 1, 2].map((k) => (px[o + k] as number).toString(16).padStart(2, '0')).join('')}`);
    });
  }

  it('refuses what it cannot read', () => {
    expect(() => decodePng(Buffer.from('GIF89a'))).toThrow(/not a PNG/);
    expect(() => decodePng(encode(2, 2, 3, pattern(2, 2, 3), 16))).toThrow(/depth 16/);
    expect(() => pixelHex(decodePng(encode(2, 2, 3, pattern(2, 2, 3))), 2, 0)).toThrow(/outside/);
  });
});
