/**
 * Where provisioning sits: src/provision/ holds the tools and src/cli/provision.ts only their command line, so nothing
 * the tools load, directly or through another module, statically or with import(), comes from src/cli/ (the agent's
 * entry points). Read from the TypeScript sources, following every relative import; a module that cannot be found is
 * a failure naming the importer.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../support/shared.js';

const SPECIFIER = /\bfrom\s+'(\.{1,2}\/[^']+)'|\bimport\(\s*'(\.{1,2}\/[^']+)'\s*\)/g;

/** Every source file reachable from `entries` through relative imports, with the file that first imported it. */
function reachable(entries: string[]): Map<string, string> {
  const seen = new Map<string, string>(entries.map((entry) => [entry, '(entry)']));
  const queue = [...entries];
  for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
    for (const match of readFileSync(file, 'utf8').matchAll(SPECIFIER)) {
      const target = path.resolve(path.dirname(file), (match[1] ?? match[2])!.replace(/\.js$/, '.ts'));
      assert.ok(existsSync(target), `${path.relative(repoRoot, file)} imports ${match[1] ?? match[2]}, which is not there`);
      if (seen.has(target)) continue;
      seen.set(target, file);
      queue.push(target);
    }
  }
  return seen;
}

test('[15.3] nothing src/provision/ loads comes from src/cli/, and the command line is the only provisioning file there', () => {
  const provisionDir = path.join(repoRoot, 'src', 'provision');
  const modules = readdirSync(provisionDir).filter((name) => name.endsWith('.ts'));
  assert.deepEqual(modules.sort(), ['bundle.ts', 'dev-pki.ts', 'files.ts', 'flash.ts', 'service-account.ts', 'service-unit.ts', 'template.ts']);
  const cliDir = path.join(repoRoot, 'src', 'cli') + path.sep;
  const loaded = reachable(modules.map((name) => path.join(provisionDir, name)));
  const fromCli = [...loaded]
    .filter(([file]) => file.startsWith(cliDir))
    .map(([file, by]) => `${path.relative(repoRoot, file)} (imported by ${path.relative(repoRoot, by)})`);
  assert.deepEqual(fromCli, []);
  // The exit code the unit answers and the development PKI come from their shared homes.
  assert.ok(loaded.has(path.join(repoRoot, 'src', 'agent', 'exit-codes.ts')));
  assert.ok(loaded.has(path.join(repoRoot, 'src', 'pki', 'dev-pki.ts')));
  assert.deepEqual(
    readdirSync(path.join(repoRoot, 'src', 'cli')).filter((name) => name.startsWith('provision')),
    ['provision.ts'],
  );
});
