// Block I/O on the spare device, as the remap store needs it: positioned reads and writes and a flush that
// makes every write before it durable. ClaimedSpareIo is the daemon's (O_DIRECT on the spare's claimed fd,
// the one open the data path shares); FileSpareIo opens a path itself (tools and tests); MemSpareIo
// (mem-io.ts) simulates a disk for tests.
import fs from 'node:fs';
import { DmrError, errorCodeOf } from '../errors.js';
import type { NativeAddon } from '../native.js';
import { sysfsBlockPath } from '../device/dev-t.js';

export interface SpareIo {
  /** Size of the spare device in bytes. */
  readonly size: bigint;
  /** Reads exactly `length` bytes at `offset` (zeros past the end of what was ever written). */
  read(offset: number | bigint, length: number): Promise<Buffer>;
  write(offset: number | bigint, data: Buffer): Promise<void>;
  /** Makes every completed write durable (fdatasync on the device: also flushes its volatile cache). */
  flush(): Promise<void>;
}

function ioError(e: unknown, doing: string): DmrError {
  if (e instanceof DmrError) return e;
  const code = errorCodeOf(e);
  return new DmrError('E_SPARE_IO', `${doing}: ${code ?? (e instanceof Error ? e.message : String(e))}`, { cause: e });
}

/** Largest single native read or write (the addon takes up to 16 MiB). */
const CLAIMED_CHUNK = 8 << 20;

/**
 * SpareIo over the spare's claimed fd (claimBacking): O_DIRECT reads, writes and fdatasync on the addon's
 * worker threads, through its aligned buffers. Offsets and lengths are multiples of 512 (the store's are of
 * 4096). Does not own the fd: the claim is released by whoever made it, after the device stopped.
 */
export class ClaimedSpareIo implements SpareIo {
  constructor(
    private readonly native: Pick<NativeAddon, 'readClaimed' | 'writeClaimed' | 'syncClaimed'>,
    private readonly fd: number,
    readonly size: bigint,
    readonly path: string,
  ) {}

  async read(offset: number | bigint, length: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    try {
      for (let done = 0; done < length; ) {
        const n = Math.min(CLAIMED_CHUNK, length - done);
        parts.push(await this.native.readClaimed(this.fd, BigInt(offset) + BigInt(done), n));
        done += n;
      }
    } catch (e) {
      throw ioError(e, `read of ${length} bytes at ${offset} on spare ${this.path} failed`);
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, length);
  }

  async write(offset: number | bigint, data: Buffer): Promise<void> {
    try {
      for (let done = 0; done < data.length; ) {
        const n = Math.min(CLAIMED_CHUNK, data.length - done);
        await this.native.writeClaimed(this.fd, BigInt(offset) + BigInt(done), data.subarray(done, done + n));
        done += n;
      }
    } catch (e) {
      throw ioError(e, `write of ${data.length} bytes at ${offset} on spare ${this.path} failed`);
    }
  }

  async flush(): Promise<void> {
    try {
      await this.native.syncClaimed(this.fd);
    } catch (e) {
      throw ioError(e, `flush of spare ${this.path} failed`);
    }
  }
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
          const txt = await fs.promises.readFile(`${sysfsBlockPath(st.rdev)}/size`, 'utf8');
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
