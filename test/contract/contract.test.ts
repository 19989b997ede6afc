/**
 * The published contract (contract/): the files are exactly what the zod schemas the agent uses generate, every one
 * compiles in ajv (a backend's validator, strict mode), each carries a versioned `$id`, and the examples the docs give
 * match. That the agent's real messages match is checked by every end-to-end suite: the fleet backend subscriber of
 * the broker fixture validates everything it receives (test/support/contract.ts).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { CONTRACT_VERSION, contractJsonSchemas, contractUri } from '../../src/contract/index.js';
import { HANDLERS } from '../../src/commands/handlers/index.js';
import { ContractChecker } from '../support/contract.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const contractDir = path.join(root, 'contract');

function committedSchemas(dir = contractDir): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) return committedSchemas(file);
    return entry.name.endsWith('.schema.json') ? [path.relative(contractDir, file)] : [];
  });
}

describe('the contract (contract/)', () => {
  it('[17.contract] the committed files are what the schemas generate (regenerate: npm run build && node scripts/write-contract.mjs)', () => {
    const generated = contractJsonSchemas();
    assert.deepEqual(
      committedSchemas().sort(),
      Object.keys(generated)
        .map((name) => `${name}.schema.json`)
        .sort(),
    );
    for (const [name, document] of Object.entries(generated)) {
      const committed = readFileSync(path.join(contractDir, `${name}.schema.json`), 'utf8');
      assert.equal(committed, `${JSON.stringify(document, null, 2)}\n`, `contract/${name}.schema.json is out of date`);
    }
  });

  it('[17.contract] every message kind has a schema with a versioned $id, a title and a description; every command its params and result', () => {
    const generated = contractJsonSchemas();
    for (const kind of [
      'status',
      'health',
      'logs',
      'csr',
      'certificate',
      'command',
      'command-envelope',
      'result',
      'telemetry',
      'telemetry-decoded',
      'loss',
      'status-page',
    ]) {
      assert.ok(generated[kind], `no schema for ${kind}`);
    }
    for (const handler of HANDLERS) {
      assert.ok(generated[`commands/${handler.name}.params`], `${handler.name}: no params schema`);
      assert.ok(generated[`commands/${handler.name}.result`], `${handler.name}: no result schema`);
    }
    for (const [name, document] of Object.entries(generated)) {
      assert.equal(document.$id, contractUri(name));
      assert.match(String(document.$id), new RegExp(`/contract/v${CONTRACT_VERSION}/`));
      assert.equal(document.$schema, 'https://json-schema.org/draft/2020-12/schema');
      assert.equal(typeof document.title, 'string', `${name}: no title`);
      assert.equal(typeof document.description, 'string', `${name}: no description`);
    }
  });

  it('[17.contract] every file compiles in ajv (strict), and a message off its schema is caught, naming the field', () => {
    const contract = ContractChecker.load(contractDir);
    const health = contract.problems('status', { online: true, birthSeq: 1767225600000 });
    assert.equal(health.length > 0, true);
    assert.deepEqual(contract.problems('status', { online: true, birthSeq: 1767225600000, ts: 1767225600000 }), []);
    assert.deepEqual(contract.problems('status', { online: false, birthSeq: 1767225600000, reason: 'connection lost' }), []);
    assert.deepEqual(contract.problems('status', { online: false, birthSeq: 1767225600000, ts: 1767225601000, reason: 'shutdown' }), []);
    // A field the schema does not name is drift: refused.
    const drift = contract.problems('csr', { requestId: 'r-1', deviceId: 'car-1', csr: 'PEM', ts: 1, extra: true });
    assert.ok(
      drift.some((p) => /additional/.test(p)),
      drift.join('; '),
    );
  });

  it('[17.contract] every message example the docs mark (<!-- contract: NAME -->) matches its schema: the loss notice, JSON telemetry, the envelope, a result, remote log lines', () => {
    const contract = ContractChecker.load(contractDir);
    const checked: string[] = [];
    for (const doc of ['docs/payload-format.md', 'docs/commands.md', 'docs/logging.md', 'docs/health.md', 'README.md']) {
      const text = readFileSync(path.join(root, doc), 'utf8');
      for (const match of text.matchAll(/<!-- contract: ([a-z/.-]+) [^>]*-->\n```json\n([\s\S]*?)\n```/g)) {
        const [, name, block] = match as unknown as [string, string, string];
        // One JSON value, or JSON lines (the remote log's example).
        let examples: unknown[];
        try {
          examples = [JSON.parse(block)];
        } catch {
          examples = block.split('\n').map((line) => JSON.parse(line) as unknown);
        }
        for (const example of examples) assert.deepEqual(contract.problems(name, example), [], `${doc}: the ${name} example`);
        // A SUCCEEDED result's detail is its command's result.
        const result = examples[0] as { status?: string; command?: string; detail?: unknown };
        if (name === 'result' && result.status === 'SUCCEEDED') assert.deepEqual(contract.problems(`commands/${result.command}.result`, result.detail), []);
        checked.push(`${doc}:${name}`);
      }
    }
    assert.deepEqual(checked.sort(), [
      'docs/commands.md:command-envelope',
      'docs/commands.md:result',
      'docs/logging.md:logs',
      'docs/payload-format.md:loss',
      'docs/payload-format.md:telemetry',
    ]);
  });
});
