// Queries of the remap engine: where a sector's block lives and whether it reads (verify), and the table in
// pages. They change nothing.
import { errnoName, errorCodeOf } from '../errors.js';
import type { BackingRole } from '../native.js';
import { isNativeError } from '../native.js';
import type { RemapEntry } from '../remap/index.js';
import { outageRefusal, type EngineContext, type TableEntryOut, type VerifyResult } from './engine-context.js';
import { VerifyGate } from './verify-gate.js';

export class RemapQueries {
  /** Verify reads of main, one at a time (verify-gate.ts). */
  readonly mainReads = new VerifyGate();

  constructor(private readonly c: EngineContext) {}

  async verify(sector: number, block: number): Promise<VerifyResult> {
    const e = this.c.store.table.get(block);
    const mainOff = block * this.c.blockSize;
    if (this.c.mirror.moving.has(block) || this.c.mirror.redirects.has(block)) {
      return { sector, block, state: 'moving', device: e ? 'spare' : 'main', slot: e?.slot ?? null, offset: e ? this.c.store.allocator.offsetOf(e.slot) : mainOff, readable: false, errno: null };
    }
    if (e?.state === 'lost') {
      // Its data is gone: the device fails reads of it with EIO until it is written.
      return { sector, block, state: 'lost', device: 'spare', slot: e.slot, offset: this.c.store.allocator.offsetOf(e.slot), readable: false, errno: 'EIO' };
    }
    const device: BackingRole = e ? 'spare' : 'main';
    const offset = e ? this.c.store.allocator.offsetOf(e.slot) : mainOff;
    let errno: string | null = null;
    const read = async (): Promise<void> => {
      try {
        await this.c.dev().readRange(device, BigInt(offset), this.c.blockSize);
      } catch (err) {
        errno = errorCodeOf(err) ?? (isNativeError(err) ? errnoName(err.errno) : 'EIO');
      }
    };
    if (device === 'spare') {
      await read();
    } else {
      // Main in an outage answers nothing: a read would only hold a pool thread until it ends (and say EIO).
      // Asked again once its turn comes: the outage may have begun while it waited.
      if (this.c.readOutageActive()) throw outageRefusal('verify');
      const changed = await this.mainReads.run(async () => {
        if (this.c.readOutageActive()) throw outageRefusal('verify');
        // Remapped or moving while it waited: answered afresh (from the spare, or as moving).
        if (this.c.store.table.get(block) !== undefined || this.c.mirror.moving.has(block) || this.c.mirror.redirects.has(block)) return true;
        await read();
        return false;
      });
      if (changed) return this.verify(sector, block);
    }
    return { sector, block, state: e ? 'mapped' : 'unmapped', device, slot: e?.slot ?? null, offset, readable: errno === null, errno };
  }

  table(offset: number, limit: number): { total: number; offset: number; entries: TableEntryOut[] } {
    const keys = this.c.store.table.sortedBlocks();
    const entries: TableEntryOut[] = [];
    const end = Math.min(keys.length, offset + limit);
    for (let i = offset; i < end; i++) {
      const block = keys[i] as number;
      const e = this.c.store.table.get(block) as RemapEntry;
      entries.push({
        block,
        sector: this.c.sectorOf(block),
        slot: e.slot,
        state: e.state,
        origin: e.origin,
        time: e.time,
        errorCount: e.errorCount,
      });
    }
    return { total: keys.length, offset, entries };
  }
}
