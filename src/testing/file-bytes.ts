// Reading and writing bytes at an offset of a file or device, for tests (synchronous, no O_DIRECT).
import fs from 'node:fs';

/** `len` bytes at `offset` of `file` (fewer where the file ends: the rest stays zero). */
export function readAt(file: string, offset: number, len: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(len);
    fs.readSync(fd, b, 0, len, offset);
    return b;
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes `data` at `offset` of `file`. */
export function writeAt(file: string, offset: number, data: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, data, 0, data.length, offset);
  } finally {
    fs.closeSync(fd);
  }
}
