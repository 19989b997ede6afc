/**
 * The agent's V8 options (src/agent/node-flags.ts) are the same wherever a car's agent is started: `npm start`, the
 * systemd unit; and node takes them (a process started with them reports the young generation they ask for).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { AGENT_NODE_FLAGS } from '../../src/agent/node-flags.js';
import { serviceUnit } from '../../src/provision/service-unit.js';

describe('the agent process options', () => {
  it('[19.memory] npm start and the systemd unit start node with AGENT_NODE_FLAGS', () => {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { scripts: { start: string } };
    assert.equal(pkg.scripts.start, `node ${AGENT_NODE_FLAGS.join(' ')} dist/src/cli/main.js run`);
    const exec = /^ExecStart=(.*)$/m.exec(serviceUnit())![1]!;
    assert.equal(exec, `/usr/bin/node ${AGENT_NODE_FLAGS.join(' ')} /opt/telematics-agent/dist/src/cli/main.js run --config /etc/telematics-agent/config.json`);
  });

  it('[19.memory] node accepts them, and the young generation is what they ask for', () => {
    const script =
      "const v8 = require('v8'); const keep = []; for (let i = 0; i < 1e6; i++) { const o = { i, a: [i] }; if (i % 8 === 0) keep.push(o); }" +
      " process.stdout.write(String(v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size));";
    const bytes = (flags: readonly string[]): number => Number(execFileSync(process.execPath, [...flags, '-e', script], { encoding: 'utf8' }));
    const semiMb = Number(/--max-semi-space-size=(\d+)/.exec(AGENT_NODE_FLAGS.join(' '))![1]);
    // The new space is two semi-spaces: 2 MB with the flag, 32 MB by default once a start-up like this one grew it.
    assert.equal(bytes(AGENT_NODE_FLAGS), 2 * semiMb * 2 ** 20);
    assert.ok(bytes([]) > 4 * semiMb * 2 ** 20, 'without the flag the young generation grows');
  });
});
