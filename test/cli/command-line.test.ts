/**
 * The conventions the three binaries share, run as a user runs them (the compiled CLIs and the scripts/ wrappers in
 * child processes): `--version`/`-V`, help and errors that name the binary however it was started, and the same short
 * flag for the same option across commands.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { runProgramSync, type Program } from '../support/programs.js';
import { repoRoot } from '../support/shared.js';

const VERSION = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
const BINARIES: Program[] = ['telematics-agent', 'telematics-ops', 'telematics-provision'];

describe('[16.cli] command-line conventions', () => {
  it('[16.cli] --version and -V print the binary name and the package version on all three binaries, exit 0', () => {
    for (const binary of BINARIES) {
      for (const flag of ['--version', '-V']) {
        const run = runProgramSync(binary, [flag]);
        assert.deepEqual([run.status, run.stdout, run.stderr], [0, `${binary} ${VERSION}\n`, ''], `${binary} ${flag}`);
      }
    }
  });

  it('[16.cli] help names the binary, also when a scripts/ wrapper started it; so do its errors', () => {
    for (const binary of BINARIES) {
      const help = runProgramSync(binary, ['--help']);
      assert.equal(help.status, 0);
      assert.match(help.stdout, new RegExp(`^Usage: ${binary} \\[options\\] \\[command\\]\\n`), binary);
      assert.match(help.stdout, /-V, --version +print the name and version, and exit/);
    }
    // Before: "Usage: scripts/provision [options]", and errors started "provision:" or "flash:".
    for (const tool of ['provision', 'dev-pki', 'flash', 'install-service']) {
      const help = runProgramSync(`scripts/${tool}`, ['--help']);
      assert.equal(help.status, 0, help.stderr);
      assert.match(help.stdout, new RegExp(`^Usage: telematics-provision ${tool} \\[options\\]\\n`), tool);
      // commander checks required options first: provision and flash say that one is missing, the others the option.
      const wrong = runProgramSync(`scripts/${tool}`, ['--no-such-option']);
      assert.equal(wrong.status, 1, tool);
      assert.match(wrong.stderr, /^telematics-provision: (unknown option '--no-such-option'|required option '--[a-z]+ <[a-z]+>' not specified)\n$/, tool);
    }
    const agent = runProgramSync('telematics-agent', ['decode', '-d', 'car.dbc', '--no-such-option']);
    assert.equal(agent.status, 1);
    assert.match(agent.stderr, /^error: unknown option '--no-such-option'\n/);
    assert.match(agent.stderr, /\nUsage: telematics-agent decode \[options\]\n/);
  });

  it('[16.cli] the same long option has the same short flag in every command that has it', () => {
    const helpOf = (program: Program, command: string): string => {
      const run = runProgramSync(program, [command, '--help']);
      assert.equal(run.status, 0, `${program} ${command}: ${run.stderr}`);
      return run.stdout;
    };
    const texts = {
      decode: helpOf('telematics-agent', 'decode'),
      obd: helpOf('telematics-agent', 'obd'),
      simEcu: helpOf('telematics-agent', 'sim-ecu'),
      dbc: helpOf('telematics-agent', 'dbc'),
      send: helpOf('telematics-ops', 'send'),
      commands: helpOf('telematics-ops', 'commands'),
    };
    for (const text of [texts.decode, texts.obd, texts.send, texts.commands]) assert.match(text, /^ {2}-j, --json\b/m);
    for (const text of [texts.decode, texts.obd, texts.simEcu]) assert.match(text, /^ {2}-i, --iface <name>/m);
    assert.match(texts.decode, /^ {2}-d, --dbc <file>/m);
    assert.match(texts.decode, /^ {2}-l, --log <file>/m);
    assert.match(texts.decode, /^ {2}--no-choices\b/m);
    assert.match(texts.obd, /^ {2}-p, --port <path>/m);
    assert.match(texts.dbc, /^ {2}-s, --signals\b/m);
    assert.match(texts.send, /^ {2}-d, --device <id>/m);
    assert.match(texts.send, /^ {2}-c, --command <name>/m);
    assert.match(texts.send, /^ {2}-p, --params <json>/m);
    assert.match(texts.send, /^ {2}-w, --wait\b/m);
    assert.match(texts.send, /^ {2}-b, --broker <host\[:port\]>/m);
  });
});
