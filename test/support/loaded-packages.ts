/**
 * Which npm packages a process has loaded, asked from outside: preloaded into the agent's process
 * (`NODE_OPTIONS=--import <this file's URL>`, see `loadedPackagesProbe`), it answers SIGUSR2 with one line on stderr,
 * `loaded-packages: {"packages": [...], "files": {...}}`: the packages of every CommonJS file in the module cache
 * (aedes, node-forge, systeminformation, serialport and ajv are CommonJS, so the cache holds all of theirs), and for
 * the packages of `FILES_OF`, the files themselves (node-forge: the ASN.1 reader alone, or all of it).
 *
 * It loads nothing the agent would not (node:module, and the answer is written synchronously), and answers only
 * when asked: what it reports is what the agent had loaded by then.
 */
import { createRequire } from 'node:module';

/** Packages whose loaded files are listed too, relative to the package folder. */
const FILES_OF = ['node-forge'];

export const LOADED_PACKAGES_PREFIX = 'loaded-packages: ';

export interface LoadedPackages {
  packages: string[];
  files: Record<string, string[]>;
}

/** The environment that preloads this probe into a child `node` process. */
export function loadedPackagesProbe(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...env, NODE_OPTIONS: `${env.NODE_OPTIONS ?? ''} --import ${import.meta.url}`.trim() };
}

/** The last answer in a process's stderr, or undefined. */
export function parseLoadedPackages(stderr: string): LoadedPackages | undefined {
  const line = stderr
    .split('\n')
    .filter((l) => l.startsWith(LOADED_PACKAGES_PREFIX))
    .at(-1);
  return line === undefined ? undefined : (JSON.parse(line.slice(LOADED_PACKAGES_PREFIX.length)) as LoadedPackages);
}

function loadedPackages(): LoadedPackages {
  const cache = createRequire(import.meta.url).cache;
  const packages = new Set<string>();
  const files: Record<string, string[]> = Object.fromEntries(FILES_OF.map((name) => [name, []]));
  for (const file of Object.keys(cache)) {
    const match = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(file);
    if (!match) continue;
    const [, name, inside] = match as unknown as [string, string, string];
    packages.add(name);
    files[name]?.push(inside);
  }
  return { packages: [...packages].sort(), files };
}

// Only when preloaded into a process (the tests import this file for the helpers above, and answer nothing).
if (process.env.NODE_OPTIONS?.includes(import.meta.url)) {
  process.on('SIGUSR2', () => {
    process.stderr.write(`${LOADED_PACKAGES_PREFIX}${JSON.stringify(loadedPackages())}\n`);
  });
}
