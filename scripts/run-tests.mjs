#!/usr/bin/env node
// Runs the compiled test suite with node's own test runner. `npm test` builds first (pretest).
// Extra arguments are passed on, e.g. `npm test -- --test-name-pattern=golden`.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const testDir = path.join(root, 'dist', 'test');
if (!existsSync(testDir)) {
  console.error('dist/test is missing: run `npm run build` first (npm test does it for you).');
  process.exit(1);
}
// The compiled *.test.js files, listed explicitly: node 20 given a folder would also run the support modules.
const testFiles = readdirSync(testDir, { recursive: true, encoding: 'utf8' })
  .filter((file) => file.endsWith('.test.js'))
  .sort()
  .map((file) => path.join(testDir, file));
if (testFiles.length === 0) {
  console.error('no compiled tests found under dist/test');
  process.exit(1);
}
const result = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...process.argv.slice(2), ...testFiles], {
  cwd: root,
  stdio: 'inherit',
});
process.exit(result.status ?? 1);
