/**
 * docs/architecture.md tells the truth about the tree, and the layering it describes holds:
 * - every repository path the document names (`src/...`, `test/...`, `docs/...`) exists;
 * - no module outside src/cli/ imports from src/cli/ (statically or with import()), read from the TypeScript sources;
 * - the `run` command builds nothing of the agent itself: it reaches the pipeline only through the composition root;
 * - every source file opens with a comment (its contract and its failure behaviour), as the conventions ask.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from '../support/shared.js';

const SPECIFIER = /\bfrom\s+'(\.{1,2}\/[^']+)'|\bimport\(\s*'(\.{1,2}\/[^']+)'\s*\)/g;

/** Every .ts file under `dir`, as absolute paths. */
function sources(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith('.ts'))
    .map((name) => path.join(dir, name));
}

/** The relative imports of `file`, resolved to the .ts files they name. */
function importsOf(file: string): string[] {
  return [...readFileSync(file, 'utf8').matchAll(SPECIFIER)].map((m) => path.resolve(path.dirname(file), (m[1] ?? m[2])!.replace(/\.js$/, '.ts')));
}

describe('the architecture as documented', () => {
  it('[15.7] every path docs/architecture.md names exists', () => {
    const text = readFileSync(path.join(repoRoot, 'docs', 'architecture.md'), 'utf8');
    const named = [...text.matchAll(/`((?:src|test|docs|scripts|bench|deploy|device-config)\/[^`\s]*)`/g)].map((m) => m[1]!);
    assert.ok(named.length > 30, `only ${named.length} paths named`);
    const missing = [...new Set(named)].filter((p) => !existsSync(path.join(repoRoot, p.replace(/[<*].*$/, ''))));
    assert.deepEqual(missing, []);
  });

  it('[15.1] no module outside src/cli/ imports from src/cli/', () => {
    const cli = path.join(repoRoot, 'src', 'cli') + path.sep;
    const offenders = sources(path.join(repoRoot, 'src'))
      .filter((file) => !file.startsWith(cli))
      .flatMap((file) =>
        importsOf(file)
          .filter((target) => target.startsWith(cli))
          .map((target) => `${path.relative(repoRoot, file)} -> ${path.relative(repoRoot, target)}`),
      );
    assert.deepEqual(offenders, []);
  });

  it('[15.1] `run` reaches the pipeline only through the Agent: it wires no source, decoder, data path or command context', () => {
    const run = path.join(repoRoot, 'src', 'cli', 'run.ts');
    const wiring = [
      'src/agent/data-path.ts',
      'src/agent/command-context.ts',
      'src/agent/sources/',
      'src/dbc/',
      'src/collect/',
      'src/store/',
      'src/uplink/',
      'src/health/monitor.ts',
    ];
    const imported = importsOf(run).map((target) => path.relative(repoRoot, target));
    assert.ok(imported.includes(path.join('src', 'agent', 'agent.ts')), imported.join(', '));
    assert.deepEqual(
      imported.filter((target) => wiring.some((w) => target.startsWith(w))),
      [],
    );
  });

  it('[15.8] every source file opens with a comment: its contract', () => {
    const files = ['src', 'test', 'bench', 'scripts'].flatMap((dir) =>
      readdirSync(path.join(repoRoot, dir), { recursive: true, encoding: 'utf8' })
        .filter((name) => /\.(ts|mjs)$/.test(name))
        .map((name) => path.join(dir, name)),
    );
    assert.ok(files.length > 200, `only ${files.length} files found`);
    // A shebang may come first; the comment follows it.
    const bare = files.filter((file) => !/^(#!.*\n)?(\/\*\*|\/\/)/.test(readFileSync(path.join(repoRoot, file), 'utf8')));
    assert.deepEqual(bare, []);
  });
});
