/**
 * The package's version for `--version` (`-V`) of the three binaries, read once from the package.json beside dist/
 * (an installed agent has it too: flash copies it into the image).
 *
 * Failure: a package.json that cannot be read or has no version makes the version text say so; it never stops a
 * command that does not need it.
 */
import { readFileSync } from 'node:fs';

function readPackageVersion(): string {
  const file = new URL('../../../package.json', import.meta.url);
  try {
    const version = (JSON.parse(readFileSync(file, 'utf8')) as { version?: unknown }).version;
    return typeof version === 'string' ? version : `unknown (${file.pathname} has no version)`;
  } catch (err) {
    return `unknown (${file.pathname}: ${(err as Error).message})`;
  }
}

export const PACKAGE_VERSION = readPackageVersion();

/** What `--version` prints: the binary's name and the package version, e.g. `telematics-agent 0.1.0`. */
export function versionText(binary: string): string {
  return `${binary} ${PACKAGE_VERSION}`;
}

/** The flags and description every binary gives commander's `.version()`. */
export const VERSION_FLAGS = '-V, --version';
export const VERSION_DESCRIPTION = 'print the name and version, and exit';
