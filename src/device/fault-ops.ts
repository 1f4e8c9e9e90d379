// The fault primitives auto-remap (auto-remap.ts) runs in its work-queue batches: mark blocks lost, redirect
// failed writes to reserved slots (published as redirects, committed once the write's data is in its slot),
// commit writes that landed in slots, give redirects up, and relocate blocks whose read a retry recovered.
// Each runs inside the engine's one-at-a-time chain (RemapEngine serialises the calls); the table the data
// path sees is published through the mirror (remap-mirror.ts).
import { DmrError } from '../errors.js';
import type { BackingRole } from '../native.js';
import { remapBlock, type RemapEntry, type RemapOp } from '../remap/index.js';
import { ioFailure, isReadFailure, reserveFor, sleep, type EngineContext, type FaultItem, type SlotWrite } from './engine-context.js';

/** markLost's confirm reads in flight at once. */
const CONFIRM_READS_AT_ONCE = 2;

/** markLost's answer for a block that read where it had failed when it was read once more: nothing was marked. */
export class ReadsNow extends DmrError {
  constructor(message: string) {
    super('E_REMAP_STATE', message);
  }
}

export class FaultOps {
  constructor(private readonly c: EngineContext) {}

  /**
   * Redirects failed writes (issue 6): each block on main gets a reserved slot and is published REDIRECT
   * (writes go to the slot, reads wait in native for the table that ends the redirect) without a commit (a
   * crash now leaves it on main, where the write never completed: nothing acknowledged depends on it); the
   * caller retries the write, which lands in the slot, and commitSlotWrites() then commits the remap (or
   * abandonRedirects() gives it up: back on main). No drain is needed: a write still in flight to the block on main is concurrent with the one
   * being redirected, so either's data is a valid result, and the redirected one completes last. A
   * provisional block whose slot failed gets another slot (the bad one is retired); a committed block whose
   * slot failed moves like markLost(). A block redirected or remapped meanwhile needs nothing.
   */
  private async redirect(items: ReadonlyArray<FaultItem>): Promise<{ out: Map<number, DmrError | null>; changed: boolean }> {
    const out = new Map<number, DmrError | null>();
    const committedBadSlots: FaultItem[] = [];
    const retire: RemapOp[] = [];
    let changed = false;
    for (const it of items) {
      const p = this.c.mirror.redirects.get(it.block);
      const e = this.c.store.table.get(it.block);
      if (p === undefined && e !== undefined) {
        if (it.slotFailed) committedBadSlots.push(it);
        else out.set(it.block, null);
        continue;
      }
      if (p !== undefined && !it.slotFailed) {
        out.set(it.block, null);
        continue;
      }
      const slot = await reserveFor(this.c, it.block, out);
      if (slot === null) continue;
      // The failed slot stays reserved until every block of the batch has its new slot: given back now,
      // it would be the next reserve's lowest free slot, handed to another block, and refused by retire.
      if (p !== undefined) retire.push({ op: 'retire', slot: p.slot });
      this.c.mirror.redirects.set(it.block, { slot, errorCount: it.errorCount });
      changed = true;
      out.set(it.block, null);
    }
    if (retire.length > 0) {
      // Published with their new slots and drained first: were the retire commit to fail, a slot given
      // back with a write still in flight to it could go to another block (releaseRedirectSlots).
      this.c.mirror.publish();
      const drained = await this.c.dev().drain().then(
        () => true,
        (err: unknown) => (this.c.log.error({ err: String(err) }, 'drain failed: failed spare slots stay reserved, not retired'), false),
      );
      if (drained) {
        for (const r of retire) if (r.op === 'retire') await this.c.store.unreserveSlot(r.slot);
        // A slot that failed a write is never used again (committed: a restart must not hand it out).
        await this.c.store.commitBatch(retire).catch((err: unknown) => this.c.log.error({ err: String(err) }, 'cannot retire failed spare slots'));
      }
    }
    if (committedBadSlots.length > 0) {
      if (changed) this.c.mirror.publish(); // doMarkLost publishes the table it moves blocks in
      for (const [b, r] of await this.markLost(committedBadSlots)) out.set(b, r);
    }
    return { out, changed };
  }

  /** The redirected writes to `blocks` failed for good: they go back to main and their slots are freed. */
  async abandonRedirects(blocks: readonly number[]): Promise<void> {
    const slots: number[] = [];
    for (const b of blocks) {
      const p = this.c.mirror.redirects.get(b);
      if (p === undefined) continue;
      this.c.mirror.redirects.delete(b);
      slots.push(p.slot);
    }
    await this.releaseRedirectSlots(slots);
  }

  /**
   * Gives back the reserved slots of redirects just dropped from the mirror: publishes the table without
   * them, waits for a drain (a write planned against a slot before that, still in flight, would otherwise
   * land in it after the slot went to another block, whose committed data it would overwrite), and only
   * then unreserves them. A failed drain keeps them reserved (lost to this daemon's life, never reused).
   */
  private async releaseRedirectSlots(slots: readonly number[]): Promise<void> {
    if (slots.length === 0) return;
    this.c.mirror.publish();
    try {
      await this.c.dev().drain();
    } catch (err) {
      this.c.log.error({ err: String(err), slots: slots.slice(0, 16) }, 'drain failed: the slots of abandoned redirects stay reserved');
      return;
    }
    for (const slot of slots) if (this.c.store.allocator.isReserved(slot)) await this.c.store.unreserveSlot(slot).catch(() => undefined);
  }

  /**
   * Makes each block `lost` (origin auto) at a slot of its own, in one batch: the blocks are published
   * MOVING and drained first (no request still in flight touches them), then one journal commit, then the
   * table is published with them LOST. A block on main gets a fresh slot; a block whose slot failed
   * (`slotFailed`) moves to a fresh slot and the bad slot is retired. A block already lost (and not with a
   * failed slot) is left as it is. With `confirm`, after the drain (every write acknowledged before is on its
   * device, later ones wait on MOVING) the block is read once more where it failed (main, or its slot): one that reads
   * now is not marked (a user write healed the sector meanwhile, or the failure was transient), and
   * resolves with a ReadsNow. Resolves per block with null (done) or the error (E_SPARE_FULL when no slot is
   * free, E_IO when the commit failed, ReadsNow).
   */
  async markLost(items: ReadonlyArray<FaultItem>): Promise<Map<number, DmrError | null>> {
    const out = new Map<number, DmrError | null>();
    const todo: Array<{ block: number; slot: number; oldSlot: number | null; errorCount: number; origin: 'auto' | 'scan'; confirm: boolean }> = [];
    for (const it of items) {
      if (out.has(it.block) || todo.some((t) => t.block === it.block)) continue;
      if (this.c.mirror.redirects.has(it.block)) {
        // A failed write's redirect is in flight: the block is remapped already (published REDIRECT at its
        // reserved slot; a read waits, the write's commit makes it mapped there). A `remap B lost` now
        // would make that commit fail. Nothing is marked: answered as a block that reads now, so that a
        // failed read is tried again (it waits in native for the redirect's end) rather than failed as pending.
        out.set(it.block, new ReadsNow(`block ${it.block} is being redirected: not marked lost`));
        continue;
      }
      const e = this.c.store.table.get(it.block);
      if (e !== undefined && !it.slotFailed) {
        out.set(it.block, null); // already lost, or remapped since the failure: its retry goes to the slot
        continue;
      }
      if (e === undefined && it.slotFailed) {
        out.set(it.block, null); // unremapped since: the retry goes to main
        continue;
      }
      const slot = await reserveFor(this.c, it.block, out);
      if (slot === null) continue;
      todo.push({ block: it.block, slot, oldSlot: e?.slot ?? null, errorCount: it.errorCount, origin: it.origin ?? 'auto', confirm: it.confirm === true });
    }
    if (todo.length === 0) return out;
    const moving = new Map(todo.map((t) => [t.block, t.oldSlot ?? t.slot] as [number, number]));
    let committed = false;
    try {
      await this.c.mirror.startMoving(moving);
      // The last read, under MOVING: a write acknowledged between the policy's last failed read and now
      // (a sector that heals on write, which is what a filesystem writing free space does) is not thrown
      // away by marking its block lost.
      // Two reads side by side at most: a batch of bad blocks costs half as many slow reads, and libuv's pool
      // (4 threads) keeps room for the outage probe's reads (a probe queued behind a batch of bad-sector
      // reads would time out and call an outage that is not there).
      const reads: boolean[] = [];
      for (let i = 0; i < todo.length; i += CONFIRM_READS_AT_ONCE) {
        const part = todo.slice(i, i + CONFIRM_READS_AT_ONCE);
        reads.push(...(await Promise.all(part.map((t) => (t.confirm ? this.readsNow(t.block, t.oldSlot) : Promise.resolve(false))))));
      }
      for (let i = todo.length - 1; i >= 0; i--) {
        const t = todo[i] as (typeof todo)[number];
        if (reads[i] !== true) continue;
        out.set(t.block, new ReadsNow(`block ${t.block} reads ${t.oldSlot === null ? 'on main' : `from slot ${t.oldSlot}`} again: not marked lost`));
        todo.splice(i, 1);
        if (this.c.store.allocator.isReserved(t.slot)) await this.c.store.unreserveSlot(t.slot).catch(() => undefined);
      }
      const ops: RemapOp[] = [];
      for (const t of todo) {
        if (t.oldSlot === null) {
          // Main could not read it and holds its last data (what recheck may return to main).
          ops.push({ op: 'remap', block: t.block, slot: t.slot, origin: t.origin, lost: true, dataOnMain: true, errorCount: t.errorCount });
        } else {
          ops.push({ op: 'move', block: t.block, slot: t.slot }, { op: 'retire', slot: t.oldSlot });
          if (this.c.store.table.get(t.block)?.state !== 'lost') ops.push({ op: 'lost', block: t.block });
        }
      }
      if (ops.length > 0) await this.c.store.commitBatch(ops);
      committed = true;
      this.c.countersPersisted();
      for (const t of todo) out.set(t.block, null); // a slot-failed one: the move cleared dataOnMain
    } catch (err) {
      const e = ioFailure(err, 'committing lost blocks failed');
      for (const t of todo) out.set(t.block, e);
    } finally {
      if (!committed) {
        for (const t of todo) if (this.c.store.allocator.isReserved(t.slot)) await this.c.store.unreserveSlot(t.slot).catch(() => undefined);
      }
      this.c.mirror.endMoving(moving.keys());
    }
    return out;
  }

  /** Whether `block` reads now on main (`slot` null) or from spare slot `slot`; any error is "no". */
  private async readsNow(block: number, slot: number | null): Promise<boolean> {
    const bs = this.c.blockSize;
    try {
      if (slot === null) await this.c.dev().readRange('main', BigInt(block) * BigInt(bs), bs);
      else await this.c.dev().readRange('spare', BigInt(this.c.store.allocator.offsetOf(slot)), bs);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Writes put their new data in spare slots (native reported them 'lost_written', each block with the slot
   * its data went to): commit those the table still places at that slot (a spare flush that makes the slot
   * data durable, then one journal write + flush): a redirected block (provisional at that slot) as remapped, a lost
   * block at that slot as mapped; a block already mapped there needs only the flush. A block the table now
   * places elsewhere (its slot failed and it moved, another redirect) or nowhere (its redirect was abandoned,
   * the slot freed) is not committed: its write must be driven again to land where the table says
   * (`redrive`); so is one whose redirect no longer fits the table (the block has an entry now: the
   * redirect is dropped), each op checked on its own so that one that does not fit fails no other write.
   * Rejects on a commit failure: lost blocks stay lost, redirected ones go back to main, and the
   * writes must fail. `changed`: the table to publish changed.
   */
  private async commitSlotWrites(writes: ReadonlyArray<SlotWrite>): Promise<{ changed: boolean; redrive: SlotWrite[] }> {
    const ops: RemapOp[] = [];
    const redirected: Array<{ block: number; slot: number }> = [];
    const redrive: SlotWrite[] = [];
    const stale: SlotWrite[] = [];
    const seen = new Set<string>();
    for (const w of writes) {
      const key = `${w.block}@${w.slot}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const p = this.c.mirror.redirects.get(w.block);
      const e = this.c.store.table.get(w.block);
      if (p !== undefined && p.slot === w.slot) {
        if (e !== undefined || !(this.c.store.allocator.isReserved(w.slot) || this.c.store.allocator.isFree(w.slot))) {
          // The redirect does not fit the table any more (the block got an entry meanwhile): it is
          // dropped, and this write is driven again to where the table places the block.
          stale.push(w);
          redrive.push(w);
          continue;
        }
        ops.push({ op: 'remap', block: w.block, slot: w.slot, origin: 'auto', errorCount: p.errorCount });
        redirected.push({ block: w.block, slot: w.slot });
      } else if (p === undefined && e !== undefined && e.slot === w.slot) {
        if (e.state === 'lost') ops.push({ op: 'mapped', block: w.block });
      } else {
        redrive.push(w);
      }
    }
    try {
      if (ops.length > 0) {
        // The slot data is flushed before the record that points at it is written: the commit's own flush
        // comes after its write, and a disk may keep unflushed writes in any order, so a power cut could
        // otherwise keep the record and lose the data (the block would serve the slot's old contents).
        await this.c.dev().flush('spare');
        await this.c.store.commitBatch(ops);
        this.c.countersPersisted();
      } else if (redrive.length < seen.size) {
        await this.c.dev().flush('spare');
      }
    } catch (err) {
      throw ioFailure(err, 'committing writes in spare slots failed');
    } finally {
      // Committed: the entries replace the overlay. Not committed: the writes fail, and the redirected
      // blocks go back to main (their write never completed there either); their slots are given back
      // after a drain (releaseRedirectSlots).
      const abandoned: number[] = [];
      for (const r of stale) {
        this.c.mirror.redirects.delete(r.block);
        if (this.c.store.allocator.isReserved(r.slot)) abandoned.push(r.slot);
      }
      for (const r of redirected) {
        const p = this.c.mirror.redirects.get(r.block);
        if (p?.slot !== r.slot) continue;
        this.c.mirror.redirects.delete(r.block);
        if (this.c.store.allocator.isReserved(p.slot)) abandoned.push(p.slot);
      }
      await this.releaseRedirectSlots(abandoned);
    }
    return { changed: ops.length > 0 || redirected.length > 0 || stale.length > 0, redrive };
  }

  /**
   * One batch of failed-write work: commits the writes that have their data in spare slots
   * (commitSlotWrites), redirects newly failed writes (redirect), then publishes once. Resolves with
   * each redirect's outcome, the writes to drive again (their slot is no longer the block's) and the
   * commit's error, if it failed (those writes must fail).
   */
  async writeBatch(
    redirects: ReadonlyArray<FaultItem>,
    slotWrites: ReadonlyArray<SlotWrite>,
  ): Promise<{ redirected: Map<number, DmrError | null>; redrive: SlotWrite[]; commitError: DmrError | null }> {
    let commitError: DmrError | null = null;
    let redrive: SlotWrite[] = [];
    let changed = false;
    if (slotWrites.length > 0) {
      try {
        const c = await this.commitSlotWrites(slotWrites);
        changed = c.changed;
        redrive = c.redrive;
      } catch (e) {
        commitError = e instanceof DmrError ? e : ioFailure(e, 'committing writes in spare slots failed');
        changed = true;
      }
    }
    const r = redirects.length > 0 ? await this.redirect(redirects) : { out: new Map<number, DmrError | null>(), changed: false };
    if (changed || r.changed) this.c.mirror.publish();
    return { redirected: r.out, redrive, commitError };
  }

  /**
   * Relocates a block whose read failed and then succeeded on a retry: from main to a fresh slot (origin
   * auto), or from a failing slot to a fresh one (the old slot is retired). The copy is tried `tries` times;
   * if it never reads, the block stays where it is ('unreadable': it keeps serving from there and the next
   * error reports it again). 'skipped' when the block's place changed meanwhile.
   */
  async relocate(
    block: number,
    fromSpare: boolean,
    errorCount: number,
    tries: number,
    backoffMs: number,
    origin: 'auto' | 'scan' = 'auto',
  ): Promise<'relocated' | 'unreadable' | 'skipped'> {
    const dev = this.c.dev();
    const e = this.c.store.table.get(block);
    if (fromSpare ? e === undefined || e.state !== 'mapped' : e !== undefined) return 'skipped';
    const copyWithRetries = async (from: BackingRole, fromOff: number, toOff: number): Promise<boolean> => {
      for (let i = 0; i < Math.max(1, tries); i++) {
        if (i > 0) await sleep(backoffMs * 2 ** (i - 1));
        try {
          await dev.copyRange(from, BigInt(fromOff), 'spare', BigInt(toOff), this.c.blockSize);
          return true;
        } catch (err) {
          if (!isReadFailure(err)) throw ioFailure(err, `relocating block ${block} failed`);
        }
      }
      return false;
    };
    if (!fromSpare) {
      let unreadable = false;
      try {
        await remapBlock(this.c.store, block, origin, {
          copy: async (_b, slot, offset) => {
            await this.c.mirror.startMoving(new Map([[block, slot]]));
            if (await copyWithRetries('main', block * this.c.blockSize, offset)) return 'copied';
            unreadable = true;
            throw new DmrError('E_IO', `block ${block} did not read in ${tries} tries`);
          },
          flushSpare: () => dev.flush('spare'),
        }, errorCount);
        this.c.countersPersisted();
        return 'relocated';
      } catch (err) {
        if (unreadable) return 'unreadable';
        throw err;
      } finally {
        this.c.mirror.endMoving([block]);
      }
    }
    const old = (e as RemapEntry).slot;
    const slot = await this.c.store.reserveSlot();
    let committed = false;
    try {
      await this.c.mirror.startMoving(new Map([[block, old]]));
      if (!(await copyWithRetries('spare', this.c.store.allocator.offsetOf(old), this.c.store.allocator.offsetOf(slot)))) return 'unreadable';
      await dev.flush('spare');
      await this.c.store.commitBatch([
        { op: 'move', block, slot },
        { op: 'retire', slot: old },
        { op: 'errors', block, errorCount },
      ]);
      committed = true;
      this.c.countersPersisted();
      return 'relocated';
    } finally {
      if (!committed && this.c.store.allocator.isReserved(slot)) await this.c.store.unreserveSlot(slot).catch(() => undefined);
      this.c.mirror.endMoving([block]);
    }
  }
}
