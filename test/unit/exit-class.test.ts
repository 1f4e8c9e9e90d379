// A successor refusing with E_DELETING (a del owns the device) or E_RECOVERY_STUCK (only del helps) is no
// crash (review of the recovery work, issue #12): each has its own exit code, and the supervisor's policy
// neither re-runs recover up to MAX_CRASHES times nor writes the registry entry del is removing; a stuck
// device is given up at once with the reason status and list show.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ALREADY_UP_EXIT_CODE, DELETING_EXIT_CODE, ERROR_CODES, PREDECESSOR_BUSY_EXIT_CODE, RECOVERY_STUCK_EXIT_CODE } from '../../src/errors.js';
import { classifyExit, decide, initialPolicyState, RESTART_EXIT_CODE } from '../../src/supervisor/restart-policy.js';
import { FATAL_EXIT_CODE } from '../../src/cli/add.js';
import { REPO } from './helpers.js';

describe('supervisor classification of recovery refusals', () => {
  it('E_DELETING and E_RECOVERY_STUCK exit with codes of their own, distinct from every other exit the supervisor reads', () => {
    expect(ERROR_CODES.E_DELETING).toBe(DELETING_EXIT_CODE);
    expect(ERROR_CODES.E_RECOVERY_STUCK).toBe(RECOVERY_STUCK_EXIT_CODE);
    expect(ERROR_CODES.E_ALREADY_UP).toBe(ALREADY_UP_EXIT_CODE);
    const others = [0, 1, 2, PREDECESSOR_BUSY_EXIT_CODE, RESTART_EXIT_CODE, FATAL_EXIT_CODE];
    expect(new Set([...others, DELETING_EXIT_CODE, RECOVERY_STUCK_EXIT_CODE, ALREADY_UP_EXIT_CODE]).size).toBe(others.length + 3);
    expect(classifyExit({ code: DELETING_EXIT_CODE, signal: null })).toBe('deleting');
    expect(classifyExit({ code: RECOVERY_STUCK_EXIT_CODE, signal: null })).toBe('recovery-stuck');
  });

  it('E_SPARE_OTHER_TABLE exits with E_ALREADY_UP\'s code (the unit\'s RestartPreventExitStatus lists it), which the supervisor reads as no refusal of its own', () => {
    expect(ERROR_CODES.E_SPARE_OTHER_TABLE).toBe(ALREADY_UP_EXIT_CODE);
    expect(classifyExit({ code: ERROR_CODES.E_SPARE_OTHER_TABLE, signal: null })).toBe('crash');
    const unit = fs.readFileSync(path.join(REPO, 'scripts/systemd/dmremap-ublk@.service'), 'utf8');
    expect(/^RestartPreventExitStatus=(.*)$/m.exec(unit)?.[1]?.split(/\s+/)).toContain(String(ERROR_CODES.E_SPARE_OTHER_TABLE));
  });

  it('E_DELETING ends the supervisor (del wins), whether or not the kernel device is still there', () => {
    for (const exists of [true, false]) {
      const { decision } = decide(initialPolicyState(), { code: ERROR_CODES.E_DELETING, signal: null }, 1000, exists);
      expect(decision.action).toBe('exit');
    }
  });

  it('E_RECOVERY_STUCK gives up at once, naming the cause and what to do', () => {
    const { decision } = decide(initialPolicyState(), { code: ERROR_CODES.E_RECOVERY_STUCK, signal: null }, 1000, true);
    expect(decision).toMatchObject({ action: 'give-up', why: expect.stringMatching(/START_USER_RECOVERY.*dmremap-ublk del/) });
  });
});
