import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts'],
    // Some tests run the built CLI (dist/) as a child process: build it once first.
    globalSetup: ['test/unit/global-setup.ts'],
    testTimeout: 20_000,
    // Daemons started by tests keep their state here, not in /var/lib.
    // and read no config file unless a test names one.
    // Stable names and device records of daemons the tests start go to /tmp too, never /dev/dmremap or /etc.
    env: {
      DMREMAP_STATE_DIR: '/tmp/dmremap-unit-state',
      DMREMAP_CONFIG: '/tmp/dmremap-unit-no-config/config.json',
      DMREMAP_NAME_DIR: '/tmp/dmremap-unit-names',
      DMREMAP_DEVICES_DIR: '/tmp/dmremap-unit-devices',
      DMREMAP_DISK_DIR: '/tmp/dmremap-unit-no-disk',
    },
  },
});
