// A write that landed in a spare slot is committed only after the slot's data is flushed (found by the
// power-cut replay, test/e2e/power-cut.test.ts): the journal record's own flush comes after the record is
// written, and a disk may persist unflushed writes in any order, so without a flush in between a power cut
// could keep the record (block → slot, mapped) and lose the data: the block would serve whatever the slot
// held before (zeros, or a block unremapped earlier).
import { describe, expect, it } from 'vitest';
import { enginePerTest, type EngineRig } from './engine-harness.js';

let rig: EngineRig;
enginePerTest((r) => (rig = r));

const item = (block: number) => ({ block, slotFailed: false, errorCount: 1 });
const slotOf = (ev: { written: Array<{ slot: number }> } | null): number => (ev?.written[0] as { slot: number }).slot;

/** Records the store's metadata writes and flushes in the fake device's call list, beside its own flushes. */
function traceStore(): string[] {
  const { io, dev } = rig;
  const write = io.write.bind(io);
  const flush = io.flush.bind(io);
  io.write = async (offset, data) => {
    dev.calls.push('journal write');
    return write(offset, data);
  };
  io.flush = async () => {
    dev.calls.push('journal flush');
    return flush();
  };
  return dev.calls;
}

describe('writes in spare slots: data flushed before the commit that points at it', () => {
  it('a redirected write: the spare is flushed before the remap record is written', async () => {
    const { engine, dev } = rig;
    await engine.writeBatch([item(100)], []);
    const w = await dev.startWrite(1, 1, 100, rig.block(0x11)).complete();
    const calls = traceStore();
    const from = calls.length;
    expect((await engine.writeBatch([], [{ block: 100, slot: slotOf(w) }])).commitError).toBeNull();
    const seq = calls.slice(from).filter((c) => c === 'flush spare' || c.startsWith('journal'));
    expect(seq.slice(0, 3)).toEqual(['flush spare', 'journal write', 'journal flush']);
    expect(engine.store.table.get(100)?.state).toBe('mapped');
  });

  it('a write to a lost block: the spare is flushed before the record that makes it mapped', async () => {
    const { engine, dev } = rig;
    await engine.markLost([item(300)]);
    expect(engine.store.table.get(300)?.state).toBe('lost');
    const w = await dev.startWrite(1, 1, 300, rig.block(0x33)).complete();
    const calls = traceStore();
    const from = calls.length;
    expect((await engine.writeBatch([], [{ block: 300, slot: slotOf(w) }])).commitError).toBeNull();
    const seq = calls.slice(from).filter((c) => c === 'flush spare' || c.startsWith('journal'));
    expect(seq.slice(0, 3)).toEqual(['flush spare', 'journal write', 'journal flush']);
    expect(engine.store.table.get(300)?.state).toBe('mapped');
  });
});
