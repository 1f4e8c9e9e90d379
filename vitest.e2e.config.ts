import { defineConfig } from 'vitest/config';

// End-to-end tests against a real kernel with ublk (in the VM, as root). The repository is read-only
// there: no cache, no files written next to the sources.
export default defineConfig({
  cacheDir: '/tmp/dmremap-vitest-cache',
  test: {
    include: ['test/e2e/**/*.test.ts'],
    cache: false,
    fileParallelism: false,
    maxConcurrency: 1,
    testTimeout: 600_000,
    hookTimeout: 120_000,
    teardownTimeout: 60_000,
    // The guest's /var/lib is the host's, read-only: daemons keep their state (queued relocations) in
    // the guest's tmpfs instead.
    env: { DMREMAP_STATE_DIR: '/tmp/dmremap-state' },
  },
});
