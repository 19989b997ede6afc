/**
 * The package's version, read once from the package.json beside dist/ (an installed agent has it too: flash copies it
 * into the image). The agent reports it in its health (`agent.version`: what the fleet view lists per car), and the
 * three binaries print it for `--version` (src/cli/version.ts).
 *
 * Failure: a package.json that cannot be read or has no version makes the text say so (`unknown (...)`); it never
 * stops the agent or a command.
 */
import { readFileSync } from 'node:fs';

function readPackageVersion(): string {
  // This file runs as dist/src/agent/package-version.js.
  const file = new URL('../../../package.json', import.meta.url);
  try {
    const version = (JSON.parse(readFileSync(file, 'utf8')) as { version?: unknown }).version;
    return typeof version === 'string' ? version : `unknown (${file.pathname} has no version)`;
  } catch (err) {
    return `unknown (${file.pathname}: ${(err as Error).message})`;
  }
}

export const PACKAGE_VERSION = readPackageVersion();
