// BurstLog: a burst of errors logs one line at once and then one summary per window, not a line each.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BurstLog } from '../../src/device/burst-log.js';
import type { Logger } from '../../src/log.js';

let lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }>;
const logger = (): Logger => {
  const at = (level: string) => (obj: Record<string, unknown>, msg: string) => lines.push({ level, obj, msg });
  return { info: at('info'), warn: at('warn'), error: at('error') } as unknown as Logger;
};

beforeEach(() => {
  lines = [];
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('BurstLog', () => {
  it('logs the first event at once, the rest of a burst as one summary per window, then goes quiet', () => {
    const b = new BurstLog(logger(), 1000);
    b.note('write:main', 'warn', 'write errors on main', { blocks: [7], fields: { errno: 5 } });
    expect(lines).toEqual([{ level: 'warn', obj: { errno: 5, count: 1, blocks: [7] }, msg: 'write errors on main' }]);
    for (let i = 0; i < 2000; i++) b.note('write:main', 'warn', 'write errors on main', { blocks: [100 + i], fields: { errno: 5 } });
    expect(lines).toHaveLength(1);
    vi.advanceTimersByTime(1000);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ level: 'warn', msg: 'write errors on main (2000 more in 1 s)', obj: { errno: 5, events: 2000, count: 2000, windowMs: 1000 } });
    expect(lines[1]?.obj.blocks).toEqual(Array.from({ length: 16 }, (_, i) => 100 + i));
    // A quiet window ends the burst: nothing is logged for it, and the next event is logged at once.
    vi.advanceTimersByTime(1000);
    expect(lines).toHaveLength(2);
    b.note('write:main', 'warn', 'write errors on main', { blocks: [9] });
    expect(lines).toHaveLength(3);
    expect(lines[2]?.obj).toMatchObject({ count: 1, blocks: [9] });
  });

  it('keeps kinds apart, names sectors when told, and flush() logs what is still counted', () => {
    const b = new BurstLog(logger(), 1000);
    b.note('read:main', 'warn', 'read errors', { blocks: [1, 2] });
    b.note('read:main', 'warn', 'read errors', { blocks: [3], count: 40 });
    b.note('io', 'warn', 'passed through', { blocks: [4096], count: 8, unit: 'sectors' });
    expect(lines.map((l) => l.msg)).toEqual(['read errors', 'passed through']);
    expect(lines[1]?.obj).toEqual({ count: 8, sectors: [4096] });
    b.flush();
    expect(lines.map((l) => l.msg)).toEqual(['read errors', 'passed through', 'read errors (1 more in 1 s)']);
    expect(lines[2]?.obj).toEqual({ events: 1, count: 40, blocks: [3], windowMs: 1000 });
    vi.advanceTimersByTime(5000);
    expect(lines).toHaveLength(3);
  });
});
