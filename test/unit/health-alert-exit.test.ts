// The alert command's outcome is its shell's exit, not the end of its stderr: a job it leaves behind may
// hold the pipe for as long as it runs (from a cold review: a command that exited 0 at once was reported
// "killed after the timeout", its job SIGKILLed; a setsid job stalled every later alert of the device).
import { describe, expect, it } from 'vitest';
import { runAlert } from '../../src/device/health-alert.js';
import { quietLog } from './helpers.js';

const env = { device: '/dev/ublkb1', name: null, state: 'watch' as const, previous: 'healthy' as const, score: 80, reason: 'r' };

describe('an alert command that leaves a process behind', () => {
  it('exits 0 at once, leaving a background job: a success, settled well before the job ends', async () => {
    const t0 = Date.now();
    const out = await runAlert('sleep 3 & exit 0', env, quietLog(), 10_000);
    expect(out).toMatchObject({ ok: true, code: 0, timedOut: false });
    expect(Date.now() - t0).toBeLessThan(2500); // the job runs 3 s; the outcome does not wait for it
  });

  it('killed at its timeout while a setsid job holds stderr: settled at the kill, not when the job ends', async () => {
    const t0 = Date.now();
    const out = await runAlert('setsid sleep 4 & sleep 10', env, quietLog(), 300);
    expect(out).toMatchObject({ ok: false, timedOut: true });
    expect(Date.now() - t0).toBeLessThan(3000); // the setsid job holds stderr for 4 s
  });

  it('what stderr says before the exit is kept', async () => {
    const out = await runAlert('echo no mail server >&2; exit 3', env, quietLog(), 10_000);
    expect(out).toMatchObject({ ok: false, code: 3, timedOut: false, stderr: 'no mail server' });
  });
});
