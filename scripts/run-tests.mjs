#!/usr/bin/env node
// Runs the compiled test suite with node's own test runner. `npm test` builds first (pretest).
// Extra arguments are passed on, e.g. `npm test -- --test-name-pattern=golden`.
//
// `--vm` runs the *.vmtest.js files instead: the SocketCAN tests, which need a kernel with CAN. On the host they run
// inside the qemu VM (test/vm/vm.test.ts calls `scripts/vm/run-in-vm.sh node scripts/run-tests.mjs --vm`).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const testDir = path.join(root, 'dist', 'test');
const args = process.argv.slice(2);
const vm = args.includes('--vm');
const passOn = args.filter((a) => a !== '--vm');
if (!existsSync(testDir)) {
  console.error('dist/test is missing: run `npm run build` first (npm test does it for you).');
  process.exit(1);
}
if (vm && process.env.TELEMATICS_IN_VM !== '1') {
  console.error('--vm runs the SocketCAN tests and needs the test VM: scripts/vm/run-in-vm.sh node scripts/run-tests.mjs --vm');
  process.exit(1);
}
// The host tests drive real tools (socat's pseudo-terminals for the ELM327 tests): install them, or fail naming them.
if (!vm) {
  const deps = spawnSync('bash', [path.join(root, 'scripts', 'install-test-deps.sh')], { cwd: root, stdio: 'inherit' });
  if (deps.status !== 0) {
    console.error('the tests need the system tools above; nothing was run');
    process.exit(1);
  }
}
const suffix = vm ? '.vmtest.js' : '.test.js';
const longFirst = (file) => (file.startsWith(`vm${path.sep}`) ? 0 : file.startsWith(`net${path.sep}`) ? 1 : 2);
// The compiled test files, listed explicitly: node 20 given a folder would also run the support modules.
const testFiles = readdirSync(testDir, { recursive: true, encoding: 'utf8' })
  .filter((file) => file.endsWith(suffix))
  .sort()
  // The longest files first (the SocketCAN VM, the network namespaces), so the others run beside them.
  .sort((a, b) => longFirst(a) - longFirst(b))
  .map((file) => path.join(testDir, file));
if (testFiles.length === 0) {
  console.error(`no compiled ${suffix} files found under dist/test`);
  process.exit(1);
}
// Two files at a time: the SocketCAN VM (one emulated CPU, minutes of it) and the network tests mostly wait, so on
// two cores the suite takes the time of its longest files rather than their sum. Override with --test-concurrency.
const concurrency = passOn.some((a) => a.startsWith('--test-concurrency')) ? [] : ['--test-concurrency=2'];
// A test that never settles (a promise nothing resolves while a handle keeps the process alive) would hold the whole
// run up with nothing said: each test fails after 10 minutes at most, by name, unless it sets its own timeout.
const timeout = passOn.some((a) => a.startsWith('--test-timeout')) ? [] : ['--test-timeout=600000'];
const result = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...concurrency, ...timeout, ...passOn, ...testFiles], {
  cwd: root,
  stdio: 'inherit',
});
process.exit(result.status ?? 1);
