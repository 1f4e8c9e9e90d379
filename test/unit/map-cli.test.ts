// `dmremap-ublk map` and the scan_map message against a daemon in this process (fake addon): the model
// (regions read by a pass, block counts from the table at request time, every region unread without a
// scanner), the files written (the format from the extension, replaced atomically), and bad input (one
// line, exit code, nothing written).
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { parseRequestLine, resultSchemas } from '../../src/control/protocol.js';
import { main } from '../../src/cli/main.js';
import { DEFAULT_POLICY } from '../../src/config/policy.js';
import { Daemon } from '../../src/device/daemon.js';
import { MIB } from '../../src/scan/regions.js';
import type { FakeNative } from '../../src/testing/fake-native.js';
import { binsModel } from './map-fixtures.js';
import { captureCtx, deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemon: Daemon | null;
let sock: string;

beforeEach(async () => {
  w = makeWorld();
  native = fakeFor(w);
  daemon = await Daemon.start(deviceConfig(w, { policy: { ...DEFAULT_POLICY, readRetries: 1, retryBackoffMs: 0 } }), {
    native, runDir: w.runDir, log: quietLog(), logFile: null, stateDir: path.join(w.root, 'state'),
  });
  sock = path.join(w.runDir, `${daemon.info.devId}.sock`);
});
afterEach(async () => {
  await daemon?.shutdown('test');
  daemon = null;
  w.cleanup();
});

const run = async (args: string[]): Promise<{ code: number; out: string; err: string }> => {
  const cap = captureCtx(w, native);
  const code = await main(['map', ...args], cap.ctx);
  return { code, out: cap.stdout(), err: cap.stderr() };
};
const until = async (what: () => Promise<boolean>, ms = 8000): Promise<void> => {
  const end = Date.now() + ms;
  while (!(await what())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('scan_map', () => {
  it('before any scan: every region not read, the scan idle', async () => {
    const m = await request(sock, 'scan_map', {});
    expect(m).toMatchObject({ device: daemon?.info.blockPath, name: 'data', deviceBytes: 8 * MIB, regionBytes: MIB });
    expect(m.regions).toHaveLength(8);
    expect(m.regions.every((r) => r.worstBin === null && r.pending === 0 && r.remapped === 0)).toBe(true);
    expect(m.scan).toMatchObject({ state: 'idle', pass: 0 });
  });

  it('after a pass: the regions read, the failed one in the error bin with its pending block; a remap counted at once', async () => {
    const bs = daemon?.status().blockSize as number;
    native.cfg.failReads.push({ device: 'main', offset: 3 * MIB + 7 * bs, bytes: bs, code: 'EIO' });
    await request(sock, 'scan_start', {});
    await until(async () => (await request(sock, 'scan', {})).state === 'done');
    let m = await request(sock, 'scan_map', {});
    expect(m.scan).toMatchObject({ state: 'done', progress: 100, errorsFound: 1 });
    expect(m.regions.map((r) => r.worstBin === 6)).toEqual([false, false, false, true, false, false, false, false]);
    expect(m.regions.every((r) => r.worstBin !== null)).toBe(true);
    expect(m.regions[3]).toMatchObject({ pending: 1, remapped: 0, relocated: 0 });
    // A manual remap in region 5: counted by the next request (from the table, not the saved record).
    await request(sock, 'remap', { sector: (5 * MIB) / 512 + 9 });
    m = await request(sock, 'scan_map', {});
    expect(m.regions[5]).toMatchObject({ pending: 0, remapped: 1, relocated: 0 });
    expect(m.regions[3]).toMatchObject({ pending: 1 });
  });

  it('without a scanner (it could not start) every region is not read', async () => {
    await (daemon as unknown as { scanner: { close(): Promise<void> } }).scanner.close();
    (daemon as unknown as { scanner: null }).scanner = null;
    const m = await request(sock, 'scan_map', {});
    expect(m.regions.every((r) => r.worstBin === null)).toBe(true);
    expect(m.scan).toMatchObject({ state: 'idle', progress: 0 });
  });

  it('refuses a malformed message, and a malformed result', () => {
    expect(parseRequestLine('{"id":1,"cmd":"scan_map"}')).toMatchObject({ ok: true });
    const bad = parseRequestLine('{"id":2,"cmd":"scan_map","region":3}');
    expect(bad).toMatchObject({ ok: false, id: 2 });
    expect(bad.ok ? '' : bad.message).toMatch(/^invalid request: request: .*region/);
    const good = binsModel(4);
    expect(resultSchemas.scan_map.safeParse(good).success).toBe(true);
    const shortBins = { ...good, regions: good.regions.map((r, i) => (i === 1 ? { ...r, bins: r.bins.slice(1) } : r)) };
    expect(resultSchemas.scan_map.safeParse(shortBins).success).toBe(false);
    const badBin = { ...good, regions: good.regions.map((r, i) => (i === 1 ? { ...r, worstBin: 7 } : r)) };
    expect(resultSchemas.scan_map.safeParse(badBin).success).toBe(false);
  });
});

describe('dmremap-ublk map', () => {
  it('writes an SVG or an HTML page, the format from the extension', async () => {
    const svg = path.join(w.root, 'surface.svg');
    const a = await run(['data', '--out', svg]);
    expect(a).toMatchObject({ code: 0, err: '' });
    expect(a.out).toBe(`${svg}: svg surface map of ${daemon?.info.blockPath}, 8 regions\n`);
    const text = fs.readFileSync(svg, 'utf8');
    expect(text).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    expect(text.match(/<rect class="cell"/g)).toHaveLength(8);
    expect(fs.statSync(svg).mode & 0o777).toBe(0o644);
    const html = path.join(w.root, 'Surface.HTML');
    const b = await run(['data', '--out', html, '--json']);
    expect(b.code).toBe(0);
    expect(JSON.parse(b.out)).toEqual({ out: html, format: 'html', regions: 8 });
    expect(fs.readFileSync(html, 'utf8')).toMatch(/^<!DOCTYPE html>/);
    // No temporary file left behind.
    expect(fs.readdirSync(w.root).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('--json alone prints the model', async () => {
    const r = await run(['data', '--json']);
    expect(r.code).toBe(0);
    const m = resultSchemas.scan_map.parse(JSON.parse(r.out));
    expect(m.regions).toHaveLength(8);
  });

  it('replaces an existing file', async () => {
    const out = path.join(w.root, 'm.svg');
    fs.writeFileSync(out, 'old');
    expect((await run(['data', '--out', out])).code).toBe(0);
    const text = fs.readFileSync(out, 'utf8');
    expect(text).toMatch(/^<svg/);
    expect(text.match(/<rect class="cell"/g)).toHaveLength(8);
  });

  it('refuses bad input with one line and the right exit code, writing nothing', async () => {
    const cases: Array<[string[], number, RegExp]> = [
      [['data', '--out', path.join(w.root, 'm.png')], 2, /--out must name a \.svg or \.html file \(the format comes from the extension\), got ".*m\.png"/],
      [['data', '--out', path.join(w.root, 'svg')], 2, /--out must name a \.svg or \.html file/],
      [['data', '--out', ''], 2, /--out must not be empty/],
      [['data'], 2, /map needs --out FILE\.svg\|FILE\.html \(or --json to print the map data\)/],
      [['--out', path.join(w.root, 'd.svg')], 2, /missing device to map/],
      [['data', 'other', '--out', path.join(w.root, 'a.svg')], 2, /map takes one device, got 2/],
      [['data', '--out'], 2, /option --out needs a value/],
      [['data', '--format', 'svg'], 2, /unknown option --format/],
      [['nosuch', '--out', path.join(w.root, 'b.svg')], 1, /nosuch/],
      [['data', '--out', path.join(w.root, 'no', 'such', 'dir', 'c.svg')], 1, /cannot write .*c\.svg \(ENOENT\)/],
    ];
    const before = fs.readdirSync(w.root).sort();
    for (const [args, code, msg] of cases) {
      const r = await run(args);
      expect(r.code, args.join(' ')).toBe(code);
      expect(r.err).toMatch(msg);
      expect(r.err.trim().split('\n')).toHaveLength(1);
      expect(r.out).toBe('');
    }
    expect(fs.readdirSync(w.root).sort()).toEqual(before);
    const j = await run(['data', '--out', path.join(w.root, 'm.gif'), '--json']);
    expect(JSON.parse(j.out)).toMatchObject({ error: { code: 'E_USAGE' } });
    const o = await run(['data', '--out', path.join(w.root, 'nodir', 'm.svg'), '--json']);
    expect(o.code).toBe(1);
    expect(JSON.parse(o.out)).toMatchObject({ error: { code: 'E_OUTPUT' } });
  });

  it('has a help text', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^Usage: dmremap-ublk map <device> --out FILE\.svg\|FILE\.html \[--json\]/);
  });
});
