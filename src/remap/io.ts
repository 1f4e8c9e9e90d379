// Block I/O on the spare device, as the remap store needs it: positioned reads and writes and a flush that
// makes every write before it durable. FileSpareIo is the real one (a regular file or a block device);
// MemSpareIo (mem-io.ts) simulates a disk for tests.
import fs from 'node:fs';
import { DmrError, errorCodeOf } from '../errors.js';

export interface SpareIo {
  /** Size of the spare device in bytes. */
  readonly size: bigint;
  /** Reads exactly `length` bytes at `offset` (zeros past the end of what was ever written). */
  read(offset: number | bigint, length: number): Promise<Buffer>;
  write(offset: number | bigint, data: Buffer): Promise<void>;
  /** Makes every completed write durable (fdatasync on the device: also flushes its volatile cache). */
  flush(): Promise<void>;
}

const majorOf = (rdev: bigint): bigint => ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
const minorOf = (rdev: bigint): bigint => (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);

function ioError(e: unknown, doing: string): DmrError {
  if (e instanceof DmrError) return e;
  const code = errorCodeOf(e);
  return new DmrError('E_SPARE_IO', `${doing}: ${code ?? (e instanceof Error ? e.message : String(e))}`, { cause: e });
}

/** SpareIo over a file descriptor (node:fs FileHandle: pread/pwrite/fdatasync). */
export class FileSpareIo implements SpareIo {
  private constructor(
    private readonly fh: fs.promises.FileHandle,
    readonly size: bigint,
    readonly path: string,
  ) {}

  /**
   * Opens `path` for reading and writing. The size of a block device comes from sysfs
   * (/sys/dev/block/MAJ:MIN/size, in 512-byte sectors) unless the caller passes it.
   */
  static async open(path: string, size?: bigint): Promise<FileSpareIo> {
    let fh: fs.promises.FileHandle;
    try {
      fh = await fs.promises.open(path, fs.constants.O_RDWR);
    } catch (e) {
      throw ioError(e, `cannot open spare ${path}`);
    }
    try {
      if (size === undefined) {
        const st = await fh.stat({ bigint: true });
        if (st.isBlockDevice()) {
          const txt = await fs.promises.readFile(`/sys/dev/block/${majorOf(st.rdev)}:${minorOf(st.rdev)}/size`, 'utf8');
          size = BigInt(txt.trim()) * 512n;
        } else {
          size = st.size;
        }
      }
      return new FileSpareIo(fh, size, path);
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw ioError(e, `cannot size spare ${path}`);
    }
  }

  async read(offset: number | bigint, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    let done = 0;
    try {
      while (done < length) {
        const { bytesRead } = await this.fh.read(buf, done, length - done, Number(offset) + done);
        if (bytesRead === 0) break; // past the end: the rest stays zero
        done += bytesRead;
      }
    } catch (e) {
      throw ioError(e, `read of ${length} bytes at ${offset} on spare ${this.path} failed`);
    }
    return buf;
  }

  async write(offset: number | bigint, data: Buffer): Promise<void> {
    let done = 0;
    try {
      while (done < data.length) {
        const { bytesWritten } = await this.fh.write(data, done, data.length - done, Number(offset) + done);
        if (bytesWritten === 0) throw new Error('short write');
        done += bytesWritten;
      }
    } catch (e) {
      throw ioError(e, `write of ${data.length} bytes at ${offset} on spare ${this.path} failed`);
    }
  }

  async flush(): Promise<void> {
    try {
      await this.fh.datasync();
    } catch (e) {
      throw ioError(e, `flush of spare ${this.path} failed`);
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
