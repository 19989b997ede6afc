/**
 * The package's version for `--version` (`-V`) of the three binaries (read once by src/agent/package-version.ts, which
 * the agent's health report shares).
 *
 * Failure: a package.json that cannot be read or has no version makes the version text say so; it never stops a
 * command that does not need it.
 */
import { PACKAGE_VERSION } from '../agent/package-version.js';

export { PACKAGE_VERSION };

/** What `--version` prints: the binary's name and the package version, e.g. `telematics-agent 0.1.0`. */
export function versionText(binary: string): string {
  return `${binary} ${PACKAGE_VERSION}`;
}

/** The flags and description every binary gives commander's `.version()`. */
export const VERSION_FLAGS = '-V, --version';
export const VERSION_DESCRIPTION = 'print the name and version, and exit';
