#!/usr/bin/env node
// Writes contract/<name>.schema.json (JSON Schema 2020-12) for every message schema registered in src/contract/, and
// removes generated files no schema names any more. Run after `npm run build` (it reads the compiled schemas); a test
// fails while the committed files are out of date. contract/telemetry.cddl and contract/README.md are written by hand.
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { contractJsonSchemas, CONTRACT_FOLDER } = await import(path.join(root, 'dist', 'src', 'contract', 'index.js'));
const folder = path.join(root, CONTRACT_FOLDER);
const documents = contractJsonSchemas();
const written = new Set();
for (const [name, document] of Object.entries(documents)) {
  const file = path.join(folder, `${name}.schema.json`);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(document, null, 2)}\n`);
  written.add(path.relative(folder, file));
}
const walk = (dir) => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
for (const file of walk(folder)) {
  const relative = path.relative(folder, file);
  if (relative.endsWith('.schema.json') && !written.has(relative)) rmSync(file);
}
console.log(`wrote ${written.size} schemas in ${path.relative(process.cwd(), folder) || '.'}`);
