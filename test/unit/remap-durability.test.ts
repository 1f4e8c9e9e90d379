// The durability order of remap, write-to-lost and unremap (DESIGN.md invariant 2): data first, flushed,
// then the metadata commit (one journal write + flush), and only then the table the native index mirrors.
import { describe, expect, it } from 'vitest';
import { DmrError } from '../../src/errors.js';
import { SlotAllocator } from '../../src/remap/allocator.js';
import { remapBlock, unremapBlock, writeLostBlock } from '../../src/remap/durability.js';
import { computeGeometry, metaLenFor } from '../../src/remap/geometry.js';
import { MemSpareIo } from '../../src/remap/mem-io.js';
import { RemapStore, type OpenOptions } from '../../src/remap/store.js';

const J = 8;
const SLOTS = 16;
const SPARE = metaLenFor(SLOTS, J) + SLOTS * 512;
const opts = (): OpenOptions => ({
  main: { size: 1n << 30n, fingerprint: Buffer.alloc(32, 7) },
  blockSize: 512,
  journalRecords: J,
  now: () => 1_764_000_000_000,
});

async function setup(): Promise<{ io: MemSpareIo; store: RemapStore; events: string[] }> {
  const io = new MemSpareIo(SPARE);
  const { store } = await RemapStore.open(io, opts());
  io.resetStats();
  const events: string[] = [];
  // Record the store's own journal writes and flushes beside the data movers' calls.
  const w = io.write.bind(io);
  const f = io.flush.bind(io);
  io.write = async (o, d) => {
    events.push(`meta-write@${o}`);
    return w(o, d);
  };
  io.flush = async () => {
    events.push('meta-flush');
    return f();
  };
  return { io, store, events };
}

describe('slot reservations', () => {
  it('keeps reserved slots from allocate(), and a remap op consumes the reservation', () => {
    const g = computeGeometry({ spareOffset: 0, spareSize: SPARE, blockSize: 512, journalRecords: J });
    const a = new SlotAllocator(g);
    expect(a.reserve()).toBe(0);
    expect(a.allocate()).toBe(1);
    expect(a.isReserved(0)).toBe(true);
    expect(a.used).toBe(1);
    expect(a.take(0)).toBe('reserved');
    a.giveBack(0, 'reserved');
    expect(a.isReserved(0)).toBe(true);
    a.unreserve(0);
    expect(a.allocate()).toBe(0);
    expect(() => a.unreserve(0)).toThrow(DmrError);
  });
});

describe('remapBlock', () => {
  it('copies, flushes the data, then commits; the table changes only after the commit is durable', async () => {
    const { io, store, events } = await setup();
    const j = store.geometry.journalOffsets[1];
    const op = await remapBlock(store, 42, 'manual', {
      async copy(block, slot, offset) {
        expect(store.table.has(42)).toBe(false);
        events.push(`copy ${block}->${slot}@${offset}`);
        return 'copied';
      },
      async flushSpare() {
        expect(store.table.has(42)).toBe(false);
        events.push('data-flush');
      },
    });
    expect(op).toMatchObject({ op: 'remap', block: 42, slot: 0, lost: false, auto: false });
    expect(events).toEqual([`copy 42->0@${store.geometry.metaLen}`, 'data-flush', `meta-write@${j}`, 'meta-flush']);
    expect(store.table.get(42)).toMatchObject({ slot: 0, state: 'mapped' });
    expect(io.stats).toMatchObject({ writes: 1, flushes: 1 });
    expect((await RemapStore.open(io, opts())).table.get(42)?.slot).toBe(0);
  });

  it('remaps an unreadable block as lost with its data on main, without a data flush', async () => {
    const { io, store, events } = await setup();
    await remapBlock(store, 9, 'auto', { copy: async () => 'unreadable', flushSpare: async () => void events.push('data-flush') }, 1);
    expect(events).not.toContain('data-flush');
    expect(store.table.get(9)).toMatchObject({ state: 'lost', origin: 'auto', errorCount: 1, dataOnMain: true });
    // Durable: main still holds the block's last data after a restart too.
    expect((await RemapStore.open(io, opts())).table.get(9)).toMatchObject({ state: 'lost', dataOnMain: true });
    const copied = await remapBlock(store, 10, 'auto', { copy: async () => 'copied', flushSpare: async () => {} });
    expect(copied.dataOnMain).toBe(false);
  });

  it('gives the slot back and persists nothing when the copy or the flush fails', async () => {
    const { io, store } = await setup();
    const boom = new DmrError('E_SPARE_IO', 'copy failed');
    await expect(remapBlock(store, 5, 'manual', { copy: async () => { throw boom; }, flushSpare: async () => {} })).rejects.toBe(boom);
    await expect(
      remapBlock(store, 5, 'manual', { copy: async () => 'copied', flushSpare: async () => { throw boom; } }),
    ).rejects.toBe(boom);
    expect(io.stats.writes).toBe(0);
    expect(store.allocator.reservedCount).toBe(0);
    expect(store.table.has(5)).toBe(false);
    const op = await remapBlock(store, 5, 'manual', { copy: async () => 'copied', flushSpare: async () => {} });
    expect(op.slot).toBe(0);
  });

  it('gives concurrent remaps distinct slots, and a plain commit never takes a reserved slot', async () => {
    const { store } = await setup();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = remapBlock(store, 1, 'manual', { copy: async () => (await gate, 'copied'), flushSpare: async () => {} });
    await new Promise((r) => setTimeout(r, 5)); // slot 0 reserved, copy in progress
    const fast = await remapBlock(store, 2, 'manual', { copy: async () => 'copied', flushSpare: async () => {} });
    const plain = await store.commit({ op: 'remap', block: 3, origin: 'auto' });
    release();
    const s = await slow;
    expect([s.slot, fast.slot, plain.slot]).toEqual([0, 1, 2]);
  });

  it('a crash after the data copy but before the commit leaves the block unmapped and the slot free', async () => {
    const { io, store } = await setup();
    io.armCrash({ atIo: 0 }); // the journal write
    await expect(remapBlock(store, 77, 'manual', { copy: async () => 'copied', flushSpare: async () => {} })).rejects.toMatchObject({
      code: 'E_SPARE_IO',
    });
    const again = await RemapStore.open(io.afterCrash('all'), opts());
    expect(again.table.has(77)).toBe(false);
    expect(again.allocator.peek()).toBe(0);
  });
});

describe('writeLostBlock and unremapBlock', () => {
  it('writes a lost block\'s data and flushes it before committing mapped', async () => {
    const { io, store, events } = await setup();
    await remapBlock(store, 8, 'auto', { copy: async () => 'unreadable', flushSpare: async () => {} });
    events.length = 0;
    io.armCrash({ atIo: 0 });
    const mover = {
      write: async (_b: number, slot: number) => void events.push(`write slot ${slot}`),
      flushSpare: async () => void events.push('data-flush'),
    };
    await expect(writeLostBlock(store, 8, mover)).rejects.toMatchObject({ code: 'E_SPARE_IO' });
    expect(events).toEqual(['write slot 0', 'data-flush', `meta-write@${store.geometry.journalOffsets[1] + 4096}`]); // that write crashed
    // Crashed before the commit: still lost after reload.
    const crashed = await RemapStore.open(io.afterCrash('all'), opts());
    expect(crashed.table.get(8)?.state).toBe('lost');
    events.length = 0;
    await writeLostBlock(crashed.store, 8, mover);
    expect(crashed.table.get(8)?.state).toBe('mapped');
    await expect(writeLostBlock(crashed.store, 8, mover)).rejects.toMatchObject({ code: 'E_REMAP_STATE' });
  });

  it('copies a mapped block back to main and flushes main before committing the unremap', async () => {
    const { store, events } = await setup();
    await remapBlock(store, 3, 'manual', { copy: async () => 'copied', flushSpare: async () => {} });
    events.length = 0;
    await unremapBlock(store, 3, {
      copyBack: async (b, slot) => void events.push(`copy-back ${b}<-${slot}`),
      flushMain: async () => void events.push('main-flush'),
    });
    expect(events.slice(0, 2)).toEqual(['copy-back 3<-0', 'main-flush']);
    expect(events.slice(2).filter((e) => e === 'meta-flush')).toHaveLength(1);
    expect(store.table.has(3)).toBe(false);
    expect(store.allocator.peek()).toBe(0);
    await expect(unremapBlock(store, 3, { copyBack: async () => {}, flushMain: async () => {} })).rejects.toMatchObject({
      code: 'E_REMAP_STATE',
    });
  });
});
