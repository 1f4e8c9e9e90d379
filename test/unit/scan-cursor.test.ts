// The scan cursor (src/scan/cursor.ts) and its persisted form (cursor-codec.ts, record-frame.ts).
import { describe, expect, it } from 'vitest';
import { DmrError } from '../../src/errors.js';
import { crc32c } from '../../src/remap/crc32c.js';
import {
  advancePass,
  etaSeconds,
  newCursor,
  pausePass,
  progressPercent,
  resumePass,
  scanCursorSchema,
  startPass,
  stopPass,
  type ScanCursor,
} from '../../src/scan/cursor.js';
import { CURSOR_PAYLOAD_BYTES, decodeCursor, encodeCursor } from '../../src/scan/cursor-codec.js';
import { frameRecord, ScanRecordError, type ScanRecordProblem } from '../../src/scan/record-frame.js';

const GIB = 1024 ** 3;
const T0 = Date.UTC(2026, 11, 1, 12, 0, 0);

function expectScanState(f: () => unknown, message: string): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(DmrError);
  expect((err as DmrError).code).toBe('E_SCAN_STATE');
  expect((err as DmrError).message).toBe(message);
}

function expectRecordError(f: () => unknown, problem: ScanRecordProblem): ScanRecordError {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ScanRecordError);
  const e = err as ScanRecordError;
  expect([e.code, e.problem]).toEqual(['E_SCAN_RECORD', problem]);
  return e;
}

/** Rewrites the record's CRC after a change of its bytes (so the change reaches the later checks). */
function reseal(buf: Buffer): Buffer {
  const b = Buffer.from(buf);
  b.writeUInt32LE(crc32c(b, 0, b.length - 4), b.length - 4);
  return b;
}

describe('scan cursor commands', () => {
  it('walks idle → running → paused → running → done, counting what it found', () => {
    let c = newCursor(10 * GIB);
    expect([c.state, c.pass, progressPercent(c)]).toEqual(['idle', 0, 0]);
    c = startPass(c, T0);
    expect(c).toMatchObject({ state: 'running', pass: 1, position: 0, startedAt: T0, finishedAt: null });
    c = advancePass(c, 3 * GIB, T0 + 1000, { errors: 2, slow: 1 });
    expect([c.position, c.errorsFound, c.slowFound, progressPercent(c)]).toEqual([3 * GIB, 2, 1, 30]);
    c = pausePass(c);
    expect([c.state, c.position]).toEqual(['paused', 3 * GIB]);
    c = resumePass(c);
    c = advancePass(c, 10 * GIB - 1, T0 + 2000);
    expect([c.state, progressPercent(c)]).toEqual(['running', 99]);
    c = advancePass(c, 10 * GIB, T0 + 3000, { errors: 1, slow: 0 });
    expect(c).toMatchObject({ state: 'done', position: 10 * GIB, finishedAt: T0 + 3000, errorsFound: 3, slowFound: 1 });
    expect(progressPercent(c)).toBe(100);
    // The next pass starts from 0, counts afresh, and keeps the last finish time (the schedule counts from it).
    const next = startPass(c, T0 + 5000);
    expect(next).toMatchObject({ state: 'running', pass: 2, position: 0, errorsFound: 0, slowFound: 0, finishedAt: T0 + 3000 });
    expect(scanCursorSchema.safeParse(next).success).toBe(true);
  });

  it('refuses commands that do not fit the state, with E_SCAN_STATE, changing nothing', () => {
    const idle = newCursor(GIB);
    const running = startPass(idle, T0);
    const paused = pausePass(running);
    const before = structuredClone(running);
    expectScanState(() => startPass(running, T0), 'a scan is already running');
    expectScanState(() => startPass(paused, T0), 'a scan is paused: resume it, or stop it before starting a new one');
    expectScanState(() => pausePass(idle), 'no scan is running (the scan is idle)');
    expectScanState(() => resumePass(running), 'no scan is paused (the scan is running)');
    expectScanState(() => stopPass(idle), 'no scan is running or paused (the scan is idle)');
    expectScanState(() => advancePass(paused, 10, T0), 'the scan is not running (it is paused)');
    expect(running).toEqual(before);
  });

  it('stop abandons the pass: idle at 0, what it found kept until the next start', () => {
    const c = stopPass(advancePass(startPass(newCursor(GIB), T0), GIB / 2, T0 + 1, { errors: 4, slow: 0 }));
    expect(c).toMatchObject({ state: 'idle', position: 0, errorsFound: 4, pass: 1 });
    expect(progressPercent(c)).toBe(0);
    expect(scanCursorSchema.safeParse(c).success).toBe(true);
  });

  it('never moves the front back nor past the end', () => {
    const c = advancePass(startPass(newCursor(GIB), T0), 4096, T0);
    for (const p of [0, GIB + 1, 1.5, Number.NaN]) {
      expect(() => advancePass(c, p, T0)).toThrow(/scan position/);
    }
    expect(() => advancePass(c, 8192, T0, { errors: -1, slow: 0 })).toThrow(/findings/);
  });

  it('estimates the time left at a rate', () => {
    const c = advancePass(startPass(newCursor(100 * 1024 * 1024), T0), 36 * 1024 * 1024, T0);
    expect(etaSeconds(c, 64 * 1024 * 1024)).toBe(1);
    expect(etaSeconds(c, 1024 * 1024)).toBe(64);
    expect(etaSeconds(c, 0)).toBeNull();
    expect(etaSeconds(newCursor(GIB), 1)).toBeNull();
  });

  it('the schema refuses cursors whose fields contradict each other', () => {
    const ok: ScanCursor = advancePass(startPass(newCursor(GIB), T0), 4096, T0);
    const bad: Partial<ScanCursor>[] = [
      { position: GIB + 1 },
      { state: 'idle' },
      { state: 'done' },
      { startedAt: null },
      { pass: 0 },
      { deviceBytes: 0, position: 0 },
      { errorsFound: -1 },
      { position: 1.5 },
    ];
    for (const b of bad) expect(scanCursorSchema.safeParse({ ...ok, ...b }).success, JSON.stringify(b)).toBe(false);
    expect(scanCursorSchema.safeParse({ ...ok, state: 'done', position: GIB, finishedAt: T0 - 1 }).success).toBe(false);
    expect(scanCursorSchema.safeParse({ ...ok, extra: 1 }).success).toBe(false);
    for (const rateMib of [0, -1, 2 ** 21, Number.NaN]) expect(scanCursorSchema.safeParse({ ...ok, rateMib }).success, String(rateMib)).toBe(false);
  });
});

describe('scan cursor record', () => {
  const samples: ScanCursor[] = [
    newCursor(512),
    advancePass(startPass(newCursor(8 * 1024 ** 4), T0), 5 * 1024 ** 4 + 4096, T0 + 10, { errors: 3, slow: 17 }),
    pausePass(advancePass(startPass(newCursor(GIB), T0), 4096, T0)),
    advancePass(startPass(newCursor(GIB), T0), GIB, T0 + 99, { errors: Number.MAX_SAFE_INTEGER, slow: 0 }),
    startPass(advancePass(startPass(newCursor(GIB), T0), GIB, T0 + 99), T0 + 500),
    // A pass started with --rate 0.5 keeps its ceiling.
    advancePass(startPass(newCursor(GIB), T0, 0.5), 4096, T0),
  ];

  it('round-trips every state, with large values and a pass\'s --rate, in 84 bytes', () => {
    for (const c of samples) {
      const b = encodeCursor(c);
      expect(b.length).toBe(16 + CURSOR_PAYLOAD_BYTES + 4);
      expect(decodeCursor(b)).toEqual(c);
    }
  });

  it('refuses to encode a cursor its decoder would refuse', () => {
    expect(() => encodeCursor({ ...newCursor(GIB), position: 7 })).toThrow(
      expect.objectContaining({ code: 'E_INTERNAL', message: 'scan cursor to save is invalid: an idle cursor must be at position 0' }),
    );
  });

  it('gives a short record a typed error, at every length', () => {
    const b = encodeCursor(samples[1] as ScanCursor);
    for (let n = 0; n < b.length; n++) expectRecordError(() => decodeCursor(b.subarray(0, n)), 'short');
  });

  it('detects any flipped bit (checksum) and never returns a wrong cursor', () => {
    const b = encodeCursor(samples[1] as ScanCursor);
    for (let i = 0; i < b.length; i++) {
      for (const bit of [0, 3, 7]) {
        const c = Buffer.from(b);
        c[i] = (c[i] as number) ^ (1 << bit);
        let decoded: ScanCursor | undefined;
        try {
          decoded = decodeCursor(c);
        } catch (e) {
          expect(e).toBeInstanceOf(ScanRecordError);
        }
        expect(decoded).toBeUndefined();
      }
    }
    const corrupt = Buffer.from(b);
    corrupt[30] = (corrupt[30] as number) ^ 1;
    expect(expectRecordError(() => decodeCursor(corrupt), 'checksum').message).toBe('scan cursor: checksum mismatch (corrupt record)');
  });

  it('names another magic, another version and trailing bytes', () => {
    const b = encodeCursor(samples[1] as ScanCursor);
    const other = Buffer.from(b);
    other.write('DMRSREG1', 0, 'latin1');
    expectRecordError(() => decodeCursor(other), 'magic');
    const v2 = Buffer.from(b);
    v2.writeUInt32LE(2, 8);
    expect(expectRecordError(() => decodeCursor(reseal(v2)), 'version').message).toBe(
      'scan cursor: record version 2 is not supported (this version reads 1)',
    );
    expectRecordError(() => decodeCursor(Buffer.concat([b, Buffer.alloc(1)])), 'invalid');
  });

  it('refuses a well-sealed record whose fields are invalid', () => {
    const b = encodeCursor(samples[1] as ScanCursor);
    const payload = (f: (p: Buffer) => void): Buffer => {
      const c = Buffer.from(b);
      f(c.subarray(16, 16 + CURSOR_PAYLOAD_BYTES));
      return reseal(c);
    };
    expectRecordError(() => decodeCursor(payload((p) => p.writeUInt8(9, 0))), 'invalid');
    expectRecordError(() => decodeCursor(payload((p) => p.writeUInt8(1, 2))), 'invalid');
    // position beyond the device
    expectRecordError(() => decodeCursor(payload((p) => p.writeBigUInt64LE(9n * 1024n ** 4n, 8))), 'invalid');
    // a count beyond 2^53
    expectRecordError(() => decodeCursor(payload((p) => p.writeBigUInt64LE(1n << 60n, 40))), 'invalid');
    // a running cursor without a start time
    const e = expectRecordError(() => decodeCursor(payload((p) => p.writeBigInt64LE(-1n, 24))), 'invalid');
    expect(e.message).toBe('scan cursor: a running cursor must have a start time');
    // another payload size under the same version
    expectRecordError(() => decodeCursor(frameRecord('DMRSCUR1', 1, Buffer.alloc(CURSOR_PAYLOAD_BYTES + 8))), 'invalid');
  });
});
