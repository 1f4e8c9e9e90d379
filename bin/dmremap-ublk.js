#!/usr/bin/env node
// The CLI, from one bundled file (npm run build:bundle): node starts it in a fraction of the time the
// hundreds of modules of dist/ (zod's locales among them) take to resolve and load one by one.
import { run } from '../dist/cli/main.bundle.js';

await run();
