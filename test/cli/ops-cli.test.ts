/**
 * `telematics-ops` without a broker: the command catalogue (`commands`), checked against the handlers the car's
 * dispatcher runs, and where `send` connects when `--broker` is short or left out. Sending through a broker is
 * test/commands/commands.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { commandCatalogue, type JsonSchema } from '../../src/commands/catalogue.js';
import { HANDLERS } from '../../src/commands/handlers/index.js';
import { BACKEND_PORT, brokerUrl, connectionOf, describeSchemaType } from '../../src/cli/ops.js';
import { runProgramSync } from '../support/programs.js';

interface CatalogueJson {
  version: string;
  commands: {
    name: string;
    description: string;
    defaultTimeoutMs: number;
    params: JsonSchema & { properties: Record<string, JsonSchema>; required?: string[] };
  }[];
}

describe('[16.cli] telematics-ops commands', () => {
  it('[16.cli] commands --json lists every command the dispatcher knows, with its timeout and its parameter schema, which is the one the car checks', () => {
    const run = runProgramSync('telematics-ops', ['commands', '--json']);
    assert.equal(run.status, 0, run.stderr);
    const catalogue = JSON.parse(run.stdout) as CatalogueJson;
    assert.deepEqual(
      catalogue.commands.map((c) => [c.name, c.defaultTimeoutMs]),
      HANDLERS.map((h) => [h.name, h.defaultTimeoutMs]),
    );
    for (const command of catalogue.commands) {
      assert.ok(command.description.length > 20, command.name);
      assert.equal(command.params.type, 'object');
      assert.equal(command.params.additionalProperties, false, `${command.name}: unknown fields are refused`);
    }
    const byName = new Map(catalogue.commands.map((c) => [c.name, c.params]));
    // What the catalogue says is what the handler's own schema enforces.
    const ping = byName.get('ping')!;
    assert.deepEqual(ping.properties.delayMs, {
      description: 'Answer this much later (the timeout still applies).',
      type: 'integer',
      minimum: 0,
      maximum: 60000,
    });
    const pingSchema = HANDLERS.find((h) => h.name === 'ping')!.params;
    assert.equal(pingSchema.safeParse({ delayMs: 60000 }).success, true);
    assert.equal(pingSchema.safeParse({ delayMs: 60001 }).success, false);
    assert.deepEqual(byName.get('readDtcs')!.properties.kind!.default, 'stored');
    assert.equal(byName.get('readDtcs')!.required, undefined, 'a field with a default may be left out');
    assert.deepEqual(byName.get('setSignal')!.required, ['message', 'signal', 'value']);
    assert.deepEqual(byName.get('setLogLevel')!.properties.level!.enum, ['error', 'warn', 'info', 'debug']);
    for (const handler of HANDLERS) {
      const schema = byName.get(handler.name)!;
      for (const required of schema.required ?? []) {
        assert.equal(handler.params.safeParse({}).success, false, `${handler.name} needs ${required}`);
      }
      if (schema.required === undefined) assert.equal(handler.params.safeParse({}).success, true, `${handler.name} takes {}`);
      assert.equal(handler.params.safeParse({ notAParameter: 1 }).success, false, `${handler.name} refuses an unknown field`);
    }
    assert.deepEqual(catalogue.commands, JSON.parse(JSON.stringify(commandCatalogue())));
  });

  it('[16.cli] commands prints the catalogue for a person: each command, its timeout, what it does, each parameter with its type, limits and default', () => {
    const run = runProgramSync('telematics-ops', ['commands']);
    assert.equal(run.status, 0, run.stderr);
    for (const handler of HANDLERS) assert.match(run.stdout, new RegExp(`^${handler.name} \\(timeout ${handler.defaultTimeoutMs / 1000} s\\)$`, 'm'));
    assert.match(run.stdout, /^ping \(timeout 5 s\)\n {2}Answers with the car's clock/m);
    assert.match(run.stdout, /^ {2}delayMs +integer 0\.\.60000; optional\n +Answer this much later \(the timeout still applies\)\.$/m);
    assert.match(run.stdout, /^ {2}kind +one of: stored, pending, permanent; optional, default "stored"$/m);
    assert.match(run.stdout, /^ {2}signals +array \(1-500 items\) of string \(1-200 characters\)$/m);
    assert.match(run.stdout, /^ {2}message +non-empty string$/m);
    assert.match(run.stdout, /^getStatus \(timeout 5 s\)\n.*\n {2}no parameters$/m);
    assert.match(run.stdout, /^rotateCertificate \(timeout 180 s\)$/m);
    // Printed for a terminal: no line runs past 100 columns but the example at the end.
    const lines = run.stdout.trimEnd().split('\n');
    assert.deepEqual(
      lines.slice(0, -1).filter((line) => line.length > 100),
      [],
    );
  });

  it('[16.cli] the types it shows, from JSON Schema', () => {
    assert.equal(describeSchemaType({ type: 'string' }), 'string');
    assert.equal(describeSchemaType({ type: 'string', maxLength: 256 }), 'string (up to 256 characters)');
    assert.equal(describeSchemaType({ type: 'number', minimum: 0.5 }), 'number at least 0.5');
    assert.equal(describeSchemaType({ type: 'boolean' }), 'true or false');
    assert.equal(describeSchemaType({ type: 'array', items: { type: 'integer' } }), 'array of integer');
    assert.equal(describeSchemaType({}), 'any JSON value');
  });
});

describe('[16.cli] telematics-ops send: the broker', () => {
  it(`[16.cli] --broker takes HOST, HOST:PORT or mqtts://HOST[:PORT]; without a port, the fleet broker's backend listener ${BACKEND_PORT}`, () => {
    assert.equal(brokerUrl('broker.fleet.example'), 'mqtts://broker.fleet.example:8884');
    assert.equal(brokerUrl('broker.fleet.example:9000'), 'mqtts://broker.fleet.example:9000');
    assert.equal(brokerUrl('mqtts://broker.fleet.example'), 'mqtts://broker.fleet.example:8884');
    assert.equal(brokerUrl('mqtts://broker.fleet.example:8883/'), 'mqtts://broker.fleet.example:8883');
    assert.equal(brokerUrl('10.0.0.7'), 'mqtts://10.0.0.7:8884');
    assert.equal(brokerUrl('[::1]:8884'), 'mqtts://[::1]:8884');
    for (const bad of ['mqtt://broker:1883', 'https://broker', 'broker/path', 'mqtts://user:pw@broker', 'broker:port', '']) {
      assert.throws(() => brokerUrl(bad), /expected HOST, HOST:PORT or mqtts:\/\/HOST\[:PORT\]/, bad);
    }
  });

  it('[16.cli] [17.mqtt5] --certs-dir without --broker means the backend listener of the development broker of npm start, localhost:8884; a --broker given wins', () => {
    const common = { device: 'car-1', command: 'ping', params: '{}', timeout: 60, expires: 300 };
    const dev = connectionOf({ ...common, certsDir: 'certs/dev' });
    assert.deepEqual(dev, {
      broker: 'mqtts://localhost:8884',
      cert: 'certs/dev/backend.crt',
      key: 'certs/dev/backend.key',
      ca: 'certs/dev/ca.crt',
      operatorCert: 'certs/dev/ops-dev.crt',
      operatorKey: 'certs/dev/ops-dev.key',
    });
    assert.equal(connectionOf({ ...common, certsDir: 'certs/dev', broker: 'mqtts://devbox:8884' }).broker, 'mqtts://devbox:8884');
    // As typed on the command line: the short form goes through the same parser.
    const run = runProgramSync('telematics-ops', ['send', '-d', 'car-1', '-c', 'ping', '-b', 'ftp://broker']);
    assert.equal(run.status, 1);
    assert.match(
      run.stderr,
      /option '-b, --broker <host\[:port\]>' argument 'ftp:\/\/broker' is invalid\. expected HOST, HOST:PORT or mqtts:\/\/HOST\[:PORT\]/,
    );
  });
});
