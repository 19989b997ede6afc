#!/usr/bin/env node
// Writes device-config/device-config.schema.json from the zod schema in src/config/device-config.ts.
// Run after `npm run build` (it reads the compiled schema); a test fails while the committed file is out of date.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { deviceConfigJsonSchema, DEVICE_CONFIG_SCHEMA_FILE } = await import(path.join(root, 'dist', 'src', 'config', 'device-config.js'));
const target = path.join(root, DEVICE_CONFIG_SCHEMA_FILE);
writeFileSync(target, `${JSON.stringify(deviceConfigJsonSchema(), null, 2)}\n`);
console.log(`wrote ${path.relative(process.cwd(), target)}`);
