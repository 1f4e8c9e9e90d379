import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts'],
    // Some tests run the built CLI (dist/) as a child process: build it once first.
    globalSetup: ['test/unit/global-setup.ts'],
    testTimeout: 20_000,
  },
});
