// The remap table's UUID as a device record keeps it (src/device/table-uuid.ts): read from the superblock as
// the store picks it (copy 0, else copy 1), the same text as RemapStore.pairId, and compared only with a
// table of the same main (another main's is the store's to refuse, E_SPARE_FOREIGN).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mainIdentity } from '../../src/device/fingerprint.js';
import { otherTableProblem, readTableId, readTableIdOf, readTableUuidOf, TABLE_UUID_RE } from '../../src/device/table-uuid.js';
import { SUPERBLOCK_SIZE } from '../../src/remap/geometry.js';
import { MemSpareIo } from '../../src/remap/mem-io.js';
import { RemapStore } from '../../src/remap/store.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-uuid-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const SPARE = 4 << 20;

async function formatted(mainPath: string, spareOffset = 0): Promise<{ io: MemSpareIo; pairId: string }> {
  const io = new MemSpareIo(SPARE);
  const main = mainIdentity(mainPath, 8n << 20n);
  const { store } = await RemapStore.open(io, { main, blockSize: 512, spareOffset, journalRecords: 4 });
  return { io, pairId: store.pairId };
}

describe('the remap table\'s UUID', () => {
  it('is the pair id, read from copy 0, else copy 1; none on a blank spare', async () => {
    const main = path.join(dir, 'main.img');
    fs.writeFileSync(main, Buffer.alloc(8 << 20));
    const { io, pairId } = await formatted(main, 8192);
    expect(pairId).toMatch(TABLE_UUID_RE);
    expect((await readTableId(io, 8192))?.uuid).toBe(pairId);
    expect(await readTableId(io, 0)).toBeNull();
    // Copy 0 torn: copy 1 still names it.
    await io.write(8192 + 100, Buffer.alloc(8, 0xff));
    expect((await readTableId(io, 8192))?.uuid).toBe(pairId);
    // Both torn: none (the store refuses such a spare itself).
    await io.write(8192 + SUPERBLOCK_SIZE + 100, Buffer.alloc(8, 0xff));
    expect(await readTableId(io, 8192)).toBeNull();
    expect(await readTableId(new MemSpareIo(SPARE), 0)).toBeNull();
  });

  it('reads it from a file without claiming it; a missing or short file has none', async () => {
    const main = path.join(dir, 'main.img');
    fs.writeFileSync(main, Buffer.alloc(8 << 20));
    const { io, pairId } = await formatted(main);
    const spare = path.join(dir, 'spare.img');
    fs.writeFileSync(spare, io.peek(0, SPARE));
    expect(readTableUuidOf(spare, 0)).toBe(pairId);
    expect(readTableUuidOf(path.join(dir, 'nosuch'), 0)).toBeNull();
    fs.writeFileSync(spare, io.peek(0, SUPERBLOCK_SIZE));
    expect(readTableUuidOf(spare, 0)).toBeNull();
  });

  it('refuses another table of the same main, naming both; not the recorded one, none, or another main\'s', async () => {
    const main = path.join(dir, 'main.img');
    const other = path.join(dir, 'other.img');
    fs.writeFileSync(main, Buffer.alloc(8 << 20));
    fs.writeFileSync(other, Buffer.alloc(8 << 20));
    const a = await formatted(main);
    const b = await formatted(main);
    expect(b.pairId).not.toBe(a.pairId);
    const spare = path.join(dir, 'spare.img');
    fs.writeFileSync(spare, b.io.peek(0, SPARE));
    const t = readTableIdOf(spare, 0);
    const refusal = otherTableProblem(t, main, spare, a.pairId, 'device data');
    expect(refusal?.code).toBe('E_SPARE_OTHER_TABLE');
    expect(refusal?.message).toBe(`the spare ${spare} holds remap table ${b.pairId}, not table ${a.pairId} recorded for device data (an old copy of the spare, or one formatted again since?): not brought up, nothing written`);
    expect(otherTableProblem(t, main, spare, b.pairId, 'device data')).toBeNull();
    expect(otherTableProblem(null, main, spare, a.pairId, 'device data')).toBeNull();
    expect(otherTableProblem(t, other, spare, a.pairId, 'device data')).toBeNull();
  });
});
