/** Locates the shared test data (`../shared/testdata` beside the repository), which is never copied into the project. */
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root: this file runs as dist/test/support/shared.js. */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

const testdataRoot = process.env.TELEMATICS_SHARED_TESTDATA ?? path.resolve(repoRoot, '..', 'shared', 'testdata');

export function sharedTestdata(...parts: string[]): string {
  return path.join(testdataRoot, ...parts);
}

export function hasSharedTestdata(): boolean {
  return existsSync(testdataRoot);
}

/** Message for tests that cannot run without the shared data: they skip with it, visibly, never silently. */
export const NO_SHARED_TESTDATA = `shared test data not found at ${testdataRoot}`;

/** The DBC files of the shared corpus (`dbc/` and its subfolders), in a stable order. */
export function sharedDbcFiles(): string[] {
  const walk = (dir: string): string[] =>
    readdirSync(dir)
      .sort()
      .flatMap((entry) => {
        const full = path.join(dir, entry);
        if (statSync(full).isDirectory()) return walk(full);
        return entry.endsWith('.dbc') ? [full] : [];
      });
  return walk(sharedTestdata('dbc'));
}
