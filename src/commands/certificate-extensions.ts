/**
 * Moved to src/pki/certificate-extensions.ts, beside the chain validation that reads it for commands and identities
 * alike; this name stays so earlier imports keep working.
 */
export * from '../pki/certificate-extensions.js';
