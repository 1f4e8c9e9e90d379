// The manual operations of the remap engine: remap and unremap a block by hand, and recheck lost blocks on
// main. Each moves a block under MOVING and a drain (DESIGN.md invariant 4) and commits before publishing;
// RemapEngine runs them one at a time.
import { DmrError, errorCodeOf, errnoName } from '../errors.js';
import { isNativeError } from '../native.js';
import { DEVICE_GONE_ERRNOS } from './outage-detector.js';
import { remapBlock, unremapBlock, type RemapOp } from '../remap/index.js';
import { ioFailure, isReadFailure, outageRefusal, type EngineContext, type RecheckResult, type RemapResult } from './engine-context.js';

export class ManualOps {
  constructor(private readonly c: EngineContext) {}

  async remap(sector: number, block: number): Promise<RemapResult> {
    const dev = this.c.dev();
    if (this.c.mirror.redirects.has(block)) {
      throw new DmrError('E_REMAP_STATE', `sector ${sector} (block ${block}) is being remapped automatically (a failed write is redirected to the spare)`);
    }
    // Checked again here (the control handler refused it too): a remap queued behind other work may run
    // after an outage began.
    if (this.c.readOutageActive()) throw outageRefusal('remap');
    let readErrno: string | null = null;
    try {
      const op = await remapBlock(this.c.store, block, 'manual', {
        copy: async (_b, slot, offset) => {
          await this.c.mirror.startMoving(new Map([[block, slot]]));
          try {
            await dev.copyRange('main', BigInt(block * this.c.blockSize), 'spare', BigInt(offset), this.c.blockSize);
            return 'copied';
          } catch (e) {
            if (!isReadFailure(e)) throw ioFailure(e, `copying block ${block} to spare slot ${slot} failed`);
            // Main gone, or in an outage now: the block's data may well be intact there. Commit nothing.
            if (this.c.readOutageActive() || (isNativeError(e) && DEVICE_GONE_ERRNOS.has(e.errno))) throw outageRefusal('remap');
            readErrno = errorCodeOf(e) ?? 'EIO';
            this.c.log.warn({ block, slot, errno: readErrno }, 'main block unreadable: remapped as lost');
            return 'unreadable';
          }
        },
        flushSpare: () => dev.flush('spare').catch((e: unknown) => Promise.reject(ioFailure(e, 'flushing the spare failed'))),
      });
      this.c.countersPersisted();
      this.c.log.info({ block, slot: op.slot, lost: op.lost }, 'block remapped');
      return { sector, block, slot: op.slot, state: op.lost ? 'lost' : 'mapped', readErrno };
    } finally {
      // Committed: the entry (mapped or lost) replaces MOVING. Not committed: the block is back on main.
      // (Refused before anything was published: nothing to undo.)
      this.c.mirror.endMoving([block]);
    }
  }

  async unremap(sector: number, block: number): Promise<{ sector: number; block: number; slot: number }> {
    const dev = this.c.dev();
    const e = this.c.store.table.get(block);
    if (e === undefined) throw new DmrError('E_REMAP_STATE', `sector ${sector} (block ${block}) is not remapped`);
    if (e.state === 'lost') {
      throw new DmrError(
        'E_REMAP_STATE',
        `sector ${sector} (block ${block}) is lost: its data is gone, and moving it back would make main's stale contents readable; write the block first`,
      );
    }
    try {
      await unremapBlock(this.c.store, block, {
        copyBack: async (_b, slot, offset) => {
          await this.c.mirror.startMoving(new Map([[block, slot]]));
          await dev
            .copyRange('spare', BigInt(offset), 'main', BigInt(block * this.c.blockSize), this.c.blockSize)
            .catch((err: unknown) => Promise.reject(ioFailure(err, `copying spare slot ${slot} back to block ${block} failed`)));
        },
        flushMain: () => dev.flush('main').catch((err: unknown) => Promise.reject(ioFailure(err, 'flushing main failed'))),
      });
      this.c.countersPersisted();
      this.c.log.info({ block, slot: e.slot }, 'block unremapped');
      return { sector, block, slot: e.slot };
    } finally {
      this.c.mirror.endMoving([block]);
    }
  }

  /**
   * The blocks a recheck of `blocks` (or of every lost block; with `autoOnly`, only those auto-remap marked
   * pending) is to read on main (`candidates`, ascending), and the answers already known for the others.
   * Runs outside the engine's chain: it reads only the table.
   */
  recheckCandidates(blocks: readonly number[] | null, autoOnly: boolean): { out: RecheckResult[]; candidates: number[] } {
    const out: RecheckResult[] = [];
    const candidates: number[] = [];
    const consider = (b: number, listed: boolean): void => {
      const e = this.c.store.table.get(b);
      if (e?.state !== 'lost' || this.c.mirror.redirects.has(b)) {
        if (listed) out.push({ block: b, result: 'not-lost', errno: null });
      } else if (autoOnly && e.origin === 'manual') {
        // not asked for
      } else if (!e.dataOnMain) {
        out.push({ block: b, result: 'main-stale', errno: null });
      } else {
        candidates.push(b);
      }
    };
    if (blocks === null) {
      const all = [...this.c.store.table.entries()].filter(([, e]) => e.state === 'lost').map(([b]) => b);
      for (const b of all.sort((a, b) => a - b)) consider(b, false);
    } else {
      for (const b of [...new Set(blocks)].sort((a, b) => a - b)) consider(b, true);
    }
    return { out, candidates };
  }

  /** Reads `block` on main: null when it reads, else the errno name. Any thread of the chain, or outside it. */
  async readMain(block: number): Promise<string | null> {
    try {
      await this.c.dev().readRange('main', BigInt(block) * BigInt(this.c.blockSize), this.c.blockSize);
      return null;
    } catch (err) {
      if (!isNativeError(err)) throw ioFailure(err, `reading block ${block} of main failed`);
      return errorCodeOf(err) ?? errnoName(err.errno);
    }
  }

  /**
   * Returns to main the lost blocks of `readable` (a bounded batch that read on main in a first pass, outside
   * the chain): a block still lost with its last data on main holds that data there (nothing was written
   * since: a write would have made it mapped), so it is published MOVING and drained (no request touches it
   * meanwhile), read again, then one journal commit removes the entries and frees their slots, and the table
   * is published. A block that does not read now stays lost; one written or redirected meanwhile is not
   * lost any more. A write that landed in the slot of a block returned meanwhile is driven again to main
   * (commitSlotWrites). Runs inside the chain.
   */
  async recheckBatch(readable: readonly number[]): Promise<RecheckResult[]> {
    const out: RecheckResult[] = [];
    const moving = new Map<number, number>();
    for (const b of readable) {
      const e = this.c.store.table.get(b);
      if (e?.state !== 'lost' || this.c.mirror.redirects.has(b)) out.push({ block: b, result: 'not-lost', errno: null });
      else if (!e.dataOnMain) out.push({ block: b, result: 'main-stale', errno: null });
      else moving.set(b, e.slot);
    }
    if (moving.size === 0) return out;
    try {
      await this.c.mirror.startMoving(moving);
      const back: number[] = [];
      for (const b of moving.keys()) {
        const errno = await this.readMain(b);
        if (errno === null) back.push(b);
        else out.push({ block: b, result: 'unreadable', errno });
      }
      if (back.length > 0) {
        try {
          await this.c.store.commitBatch(back.map((block) => ({ op: 'unremap', block }) as RemapOp));
        } catch (err) {
          throw ioFailure(err, 'committing rechecked blocks failed');
        }
        this.c.countersPersisted();
        for (const b of back) out.push({ block: b, result: 'recovered', errno: null });
        this.c.log.info({ blocks: back.slice(0, 16), count: back.length }, 'lost blocks read again on main: back on main, slots freed');
      }
    } finally {
      this.c.mirror.endMoving(moving.keys());
    }
    return out;
  }
}
