// The remap table as the data path sees it: the committed table (the store's) overlaid with the blocks being
// moved (published MOVING: requests touching them wait in native) and the failed writes being redirected
// to reserved slots (published REDIRECT at the slot: a write goes there, a read waits in native for the
// redirect's end; committed only once the write's data is in the slot). Publishes to the native index only
// what changed. JS thread.
import { DmrError } from '../errors.js';
import type { NativeDevice } from '../native.js';
import { REMAP_FLAG_LOST, REMAP_FLAG_MOVING, REMAP_FLAG_REDIRECT, REMAP_FLAG_REMOVE } from '../native.js';
import type { RemapStore } from '../remap/index.js';

/** A redirected or moving block as published over the committed table. */
interface Overlay {
  slot: number;
  flags: number;
  /** A redirect (a failed write's reserved slot), possibly moving too. */
  redirect: boolean;
}

/** A failed write's redirect to a reserved slot, not committed yet. */
export interface Redirect {
  slot: number;
  errorCount: number;
}

export class RemapMirror {
  private device: NativeDevice | null = null;
  /** Blocks being moved right now (published MOVING), block → slot. */
  readonly moving = new Map<number, number>();
  /**
   * Blocks whose failed write is being redirected to a reserved slot, not committed yet (published
   * REDIRECT: the retried write lands in the slot, reads wait in native). Committed `mapped` when the write
   * reports its data in the slot; dropped (the block is back on main, the slot free) if the write fails for
   * good. Either way the publish that follows ends the wait of the reads parked on the block: every path
   * that deletes a redirect from this map publishes.
   */
  readonly redirects = new Map<number, Redirect>();
  /** The overlay as last published, block → entry. */
  private publishedOverlay = new Map<number, Overlay>();
  /** The next publish sends the whole table (first publish, or a failed update left native unknown). */
  private publishAll = true;

  constructor(private readonly store: RemapStore) {}

  /** Attaches the native device and publishes the whole table to it. */
  attach(device: NativeDevice): void {
    this.device = device;
    this.publishAll = true;
    this.publish();
  }

  /** The attached device; E_INTERNAL before attach. */
  dev(): NativeDevice {
    if (this.device === null) throw new DmrError('E_INTERNAL', 'the remap engine has no device attached');
    return this.device;
  }

  /**
   * Publishes the committed table to the native index, overlaid with the writes being redirected
   * (`redirects`, flagged REDIRECT: a write goes to the slot, a read waits for a table without the flag) and the blocks being moved
   * (`moving`, flagged MOVING: requests touching them wait in native; added at their slot where a block has
   * no entry yet). Sends only what changed since the last publish (the table's changed blocks and the
   * old and new overlays, a batch's worth), so a publish costs O(changes) here whatever the table's size.
   */
  publish(): void {
    const changes = this.store.table.takeChanges();
    const overlay = this.overlay();
    if (this.publishAll || changes === 'all') {
      this.publishAll = true; // until the whole table is in place
      this.publishWhole(overlay);
      this.publishAll = false;
      this.publishedOverlay = overlay;
      return;
    }
    const dirty = new Set<number>(changes);
    for (const b of this.publishedOverlay.keys()) dirty.add(b);
    for (const b of overlay.keys()) dirty.add(b);
    if (dirty.size === 0) return;
    try {
      this.dev().updateRemapTable(...this.entriesOf(Float64Array.from(dirty).sort(), overlay));
    } catch (e) {
      this.publishAll = true; // what native holds is unknown now: the next publish sends everything
      throw e;
    }
    this.publishedOverlay = overlay;
  }

  /** The redirected and moving blocks as published: a redirect REDIRECT at its reserved slot, moving MOVING. */
  private overlay(): Map<number, Overlay> {
    const over = new Map<number, Overlay>();
    for (const [b, p] of this.redirects) over.set(b, { slot: p.slot, flags: REMAP_FLAG_REDIRECT, redirect: true });
    for (const [b, slot] of this.moving) {
      const p = over.get(b);
      over.set(b, { slot: p?.slot ?? slot, flags: REMAP_FLAG_MOVING, redirect: p !== undefined });
    }
    return over;
  }

  /**
   * What the native index holds for `block`: the committed entry with an overlaid block's flags added (its
   * committed slot kept unless it is a redirect, REDIRECT at its reserved slot), the overlay alone where the block
   * has no entry, null where it has neither.
   */
  private publishedEntry(block: number, overlay: Map<number, Overlay>): { slot: number; flags: number } | null {
    const e = this.store.table.get(block);
    const o = overlay.get(block);
    if (e === undefined) return o === undefined ? null : { slot: o.slot, flags: o.flags };
    const lost = e.state === 'lost' ? REMAP_FLAG_LOST : 0;
    if (o === undefined) return { slot: e.slot, flags: lost };
    return { slot: o.redirect ? o.slot : e.slot, flags: lost | o.flags };
  }

  /** Publishes the whole table with `overlay` (on attach; O(table)). */
  private publishWhole(overlay: Map<number, Overlay>): void {
    const t = this.store.table.exportSorted();
    if (overlay.size === 0) {
      this.dev().setRemapTable(t.blocks, t.slots, Uint8Array.from(t.lost, (l) => (l ? REMAP_FLAG_LOST : 0)));
      return;
    }
    const order = Float64Array.from(new Set([...t.blocks].map(Number).concat([...overlay.keys()]))).sort();
    this.dev().setRemapTable(...this.entriesOf(order, overlay));
  }

  /** The published entries of `order` (ascending blocks) as the native index takes them; REMOVE where a block has none. */
  private entriesOf(order: Float64Array, overlay: Map<number, Overlay>): [BigUint64Array, BigUint64Array, Uint8Array] {
    const n = order.length;
    const blocks = new BigUint64Array(n);
    const slots = new BigUint64Array(n);
    const flags = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const b = order[i] as number;
      const e = this.publishedEntry(b, overlay);
      blocks[i] = BigInt(b);
      slots[i] = BigInt(e?.slot ?? 0);
      flags[i] = e === null ? REMAP_FLAG_REMOVE : e.flags;
    }
    return [blocks, slots, flags];
  }

  /** Publishes `moving` (block → slot) as MOVING and waits until no request dispatched before touches them. */
  async startMoving(moving: Map<number, number>): Promise<void> {
    for (const [b, slot] of moving) this.moving.set(b, slot);
    this.publish();
    await this.dev().drain();
  }

  /** Ends the moves of `blocks` and publishes the committed table (with any other moves still going on). */
  endMoving(blocks: Iterable<number>): void {
    let any = false;
    for (const b of blocks) any = this.moving.delete(b) || any;
    if (any) this.publish();
  }
}
