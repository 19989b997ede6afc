/**
 * The backend contract: every message the agent publishes or accepts, as zod schemas registered under the names of
 * their files in `contract/` (JSON Schema 2020-12, written by scripts/write-contract.mjs). Importing this module
 * registers them all; `contractJsonSchemas()` gives the documents.
 */
export * from './registry.js';
export * from './health.js';
export * from './messages.js';
export * from './command-envelope.js';
export * from './command-results.js';
export * from './telemetry.js';
export * from './status-page.js';
