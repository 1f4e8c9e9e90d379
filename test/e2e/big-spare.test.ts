// A whole-disk spare (issue 11 point 2): a 1 TiB sparse file on tmpfs behind a loop device. add formats it
// without writing anything sized by the disk, data written through the device and a few manual remaps
// survive del + add (the restart that used to fail with `The value of "size" is out of range`), and the
// table is capped by format version 2 and later (docs/FORMAT.md). The format and its loading are userspace's: primary run only.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { DEFAULT_MAX_SLOTS } from '../../src/remap/geometry.js';
import { addDevice, dmr, must, readAt, RUN_DIR, sh, type Added } from './helpers.js';
import { primaryKernelOnly, scratchPerTest } from './setup.js';

const s = scratchPerTest();
const sock = (d: Added) => path.join(RUN_DIR, `${d.devId}.sock`);
const TiB = 2 ** 40;

async function tableOf(d: Added) {
  return (await request(sock(d), 'table', { limit: 100_000 })).entries.map((e) => [e.block, e.slot, e.state]);
}

const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

primaryKernelOnly('whole-disk spare', () => {
  it('a 1 TiB sparse spare: add, write, remap, del, add again (table and data back), del', async () => {
    const main = s.loop(64);
    // Scratch.loop() sizes in MiB with 32-bit arithmetic; the 1 TiB file is made here and detached below.
    const file = path.join(s.dir, 'spare-1t.img');
    fs.writeFileSync(file, '');
    fs.truncateSync(file, TiB);
    const spare = must('losetup', ['-f', '--show', '--direct-io=on', file]).trim();
    try {
      expect(must('blockdev', ['--getsize64', spare]).trim()).toBe(String(TiB));
      let t0 = process.hrtime.bigint();
      let dev = addDevice(main, spare);
      const firstAddMs = ms(t0);
      let st = (await request(sock(dev), 'status', {})).remap;
      expect(st.spareSize).toBe(TiB);
      expect(st.slots).toBe(DEFAULT_MAX_SLOTS); // format version 2 and later: the table is capped, not one entry per slot
      // Formatting wrote a few 4 KiB structures, nothing sized by the disk or the slot count.
      const allocated = Number(must('stat', ['-c', '%b', file]).trim()) * 512;
      expect(allocated).toBeLessThan(1 << 20);

      const data = crypto.randomBytes(8 << 20);
      const dataFile = path.join(s.dir, 'data.bin');
      fs.writeFileSync(dataFile, data);
      must('dd', [`if=${dataFile}`, `of=${dev.blockPath}`, 'bs=1M', 'oflag=direct', 'status=none']);
      for (const sector of [7, 4096, 9000, 12345]) expect((await request(sock(dev), 'remap', { sector })).state).toBe('mapped');
      const table = await tableOf(dev);
      expect(table.length).toBe(4);
      expect(dmr('del', dev.blockPath).status).toBe(0);

      t0 = process.hrtime.bigint();
      dev = addDevice(main, spare);
      const secondAddMs = ms(t0);
      expect(await tableOf(dev)).toEqual(table);
      st = (await request(sock(dev), 'status', {})).remap;
      expect(st.manualRemaps).toBe(4);
      expect(readAt(dev.blockPath, 0, 8 << 20).equals(data)).toBe(true);
      // The remapped sectors are served from the spare's slots: they read the bytes written before the remap.
      for (const sector of [7, 4096, 9000, 12345]) {
        expect(readAt(dev.blockPath, sector * 512, 512).equals(data.subarray(sector * 512, sector * 512 + 512))).toBe(true);
      }
      expect(dmr('del', dev.blockPath).status).toBe(0);
      console.log(`1 TiB spare: first add ${firstAddMs.toFixed(0)} ms, add after del ${secondAddMs.toFixed(0)} ms, ${(allocated / 1024).toFixed(0)} KiB allocated by the format`);
    } finally {
      const list = dmr('list', '--json');
      if (list.status === 0) for (const d of JSON.parse(list.stdout) as Added[]) dmr('del', d.blockPath);
      sh('losetup', ['-d', spare]);
    }
  });
});
