// The order in which data and remap metadata reach the spare (DESIGN.md invariant 2: a remap is durable
// before any I/O depends on it; issue 2 point 3: a write redirected to the spare is acknowledged only after
// both its data and its remap entry are durable). The data movers are callbacks: the daemon passes ones that
// go through the native addon; tests pass recording fakes. Each function resolves only when the change is
// durable; the caller publishes the new entry to the native index after that, never before.
import { DmrError } from '../errors.js';
import type { ResolvedOp } from './state.js';
import type { RemapStore } from './store.js';
import type { EntryOrigin } from './table.js';

export interface CopyToSlot {
  /**
   * Copies the block's current contents from main into the slot at absolute spare byte `offset`.
   * 'unreadable' when main cannot read it: the block is then remapped as `lost`, with "data on main" (main
   * still holds its last data; always false on a version-1 spare).
   */
  copy(block: number, slot: number, offset: number): Promise<'copied' | 'unreadable'>;
  /** Makes the spare's data writes durable. */
  flushSpare(): Promise<void>;
}

/**
 * Remaps `block`: reserve a slot → copy the data into it → flush the spare → commit the remap (one journal
 * write + flush). If anything before the commit fails, the slot is given back and nothing is persisted.
 * Resolves with the committed op; only then may the native index send I/O to the slot.
 */
export async function remapBlock(
  store: RemapStore,
  block: number,
  origin: EntryOrigin,
  io: CopyToSlot,
  errorCount = 0,
): Promise<ResolvedOp> {
  if (store.table.has(block)) throw new DmrError('E_REMAP_STATE', `block ${block} is already remapped`);
  const slot = await store.reserveSlot();
  let committed = false;
  try {
    const got = await io.copy(block, slot, store.allocator.offsetOf(slot));
    const lost = got === 'unreadable';
    if (!lost) await io.flushSpare();
    // Unreadable: nothing was written to the block, so main still holds its last data (recheck may return it).
    const op = await store.commit({ op: 'remap', block, slot, origin, lost, dataOnMain: lost, errorCount });
    committed = true;
    return op;
  } finally {
    if (!committed && store.allocator.isReserved(slot)) await store.unreserveSlot(slot).catch(() => undefined);
  }
}

export interface WriteToSlot {
  /** Writes the new data of the block into its slot at absolute spare byte `offset`. */
  write(block: number, slot: number, offset: number): Promise<void>;
  flushSpare(): Promise<void>;
}

/**
 * A write to a `lost` block: write the data into its slot → flush → commit `mapped`. Until the commit is
 * durable a reload still says `lost` (reads fail, never return stale spare contents). Resolves when the
 * write may be acknowledged.
 */
export async function writeLostBlock(store: RemapStore, block: number, io: WriteToSlot): Promise<ResolvedOp> {
  const e = store.table.get(block);
  if (e === undefined || e.state !== 'lost') throw new DmrError('E_REMAP_STATE', `block ${block} is not a lost block`);
  await io.write(block, e.slot, store.allocator.offsetOf(e.slot));
  await io.flushSpare();
  return store.commit({ op: 'mapped', block });
}

export interface CopyToMain {
  /** Copies the slot's contents (absolute spare byte `offset`) back to the block on main. */
  copyBack(block: number, slot: number, offset: number): Promise<void>;
  flushMain(): Promise<void>;
}

/**
 * Unremaps `block`: copy its data back to main (skipped for a `lost` block: there is nothing to keep) →
 * flush main → commit the unremap. The slot is reusable only after the commit. The caller must stop I/O to
 * the block (or route it to main) before the commit resolves and the entry leaves the native index.
 */
export async function unremapBlock(store: RemapStore, block: number, io: CopyToMain): Promise<ResolvedOp> {
  const e = store.table.get(block);
  if (e === undefined) throw new DmrError('E_REMAP_STATE', `block ${block} is not remapped`);
  if (e.state === 'mapped') {
    await io.copyBack(block, e.slot, store.allocator.offsetOf(e.slot));
    await io.flushMain();
  }
  return store.commit({ op: 'unremap', block });
}
