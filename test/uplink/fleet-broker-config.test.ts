/**
 * [17.mqtt5] The shipped fleet broker configuration made runnable (src/uplink/fleet-broker-config.ts), as the default
 * run's mosquitto and the tests' run it: it is deploy/mosquitto/mosquitto.conf with only the files, the listeners,
 * the log, persistence and the user replaced, so the development broker and the production one cannot drift; a
 * shipped file this no longer understands is refused, naming it. And where mosquitto is found.
 */
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  BACKEND_ACL_FILE,
  DEVICES_ACL_FILE,
  FLEET_BROKER_CONFIG_FILE,
  findMosquitto,
  runnableFleetBrokerConfig,
  type RunnableFleetBrokerOptions,
} from '../../src/uplink/fleet-broker-config.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';

const FILES = {
  deviceCaFile: '/run/dev pki/ca.crt',
  backendCaFile: '/run/dev pki/backend-ca.crt',
  serverCertFile: '/run/dev pki/server.crt',
  serverKeyFile: '/run/dev pki/server.key',
};

const OPTIONS: RunnableFleetBrokerOptions = {
  files: FILES,
  deviceListener: '18883 127.0.0.1',
  backendListener: '18884 127.0.0.1',
  user: 'alice',
  persistenceDir: '/srv/agent/var/mosquitto',
  logDest: ['file /srv/agent/var/mosquitto/mosquitto.log', 'stderr'],
};

/** The options of a configuration, without comments and blank lines, in order. */
function options(text: string): string[] {
  return text.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('#'));
}

/** The lines from each `listener` line to the next. */
function listenerSections(lines: string[]): string[][] {
  const sections: string[][] = [];
  for (const line of lines) {
    if (line.startsWith('listener ')) sections.push([]);
    sections[sections.length - 1]?.push(line);
  }
  return sections;
}

describe('[17.mqtt5] the fleet broker configuration, runnable', () => {
  it('[17.mqtt5] is the shipped file with only the files, the listeners, the log destination, persistence and the user replaced', () => {
    const shipped = options(readFileSync(path.join(repoRoot, 'deploy', 'mosquitto', 'mosquitto.conf'), 'utf8'));
    const made = options(runnableFleetBrokerConfig(OPTIONS));
    const files = /^(cafile|certfile|keyfile|acl_file) /;
    // What the shipped file has that the runnable one does not: exactly what is replaced.
    assert.deepEqual(
      shipped.filter((line) => !made.includes(line)),
      shipped.filter((line) => /^(listener|log_dest|persistence_location) /.test(line) || files.test(line)),
    );
    assert.deepEqual(
      made.filter((line) => !shipped.includes(line)),
      [
        'persistence_location /srv/agent/var/mosquitto/',
        'user alice',
        'log_dest file /srv/agent/var/mosquitto/mosquitto.log',
        'log_dest stderr',
        'listener 18883 127.0.0.1',
        `cafile ${FILES.deviceCaFile}`,
        `certfile ${FILES.serverCertFile}`,
        `keyfile ${FILES.serverKeyFile}`,
        `acl_file ${DEVICES_ACL_FILE}`,
        'listener 18884 127.0.0.1',
        `cafile ${FILES.backendCaFile}`,
        `certfile ${FILES.serverCertFile}`,
        `keyfile ${FILES.serverKeyFile}`,
        `acl_file ${BACKEND_ACL_FILE}`,
      ],
    );
    // Each listener keeps its own settings, in the shipped order: the cars' with the device CA and their ACL, the
    // backend's with the backend CA and its ACL.
    const sections = listenerSections(made);
    const shippedSections = listenerSections(shipped);
    assert.equal(sections.length, 2);
    for (const [i, section] of sections.entries()) {
      assert.deepEqual(
        section.map((line) => line.split(' ')[0]),
        shippedSections[i]!.map((line) => line.split(' ')[0]),
      );
    }
    assert.ok(sections[0]!.includes(`cafile ${FILES.deviceCaFile}`) && sections[0]!.includes('use_username_as_clientid true'));
    assert.ok(sections[1]!.includes(`cafile ${FILES.backendCaFile}`) && !sections[1]!.includes('use_username_as_clientid true'));
    // The ACLs are the shipped files themselves.
    assert.equal(DEVICES_ACL_FILE, path.join(repoRoot, 'deploy', 'mosquitto', 'devices.acl'));
    assert.equal(BACKEND_ACL_FILE, path.join(repoRoot, 'deploy', 'mosquitto', 'backend.acl'));
  });

  it('[17.mqtt5] without persistence, and with the log types and timestamps a test asks for', () => {
    const made = options(
      runnableFleetBrokerConfig({ ...OPTIONS, persistenceDir: null, logTypes: ['all'], logTimestamp: false, extraConfig: ['max_packet_size 2048'] }),
    );
    assert.ok(made.includes('persistence false'));
    assert.ok(!made.some((line) => line.startsWith('persistence_location')));
    assert.deepEqual(
      made.filter((line) => line.startsWith('log_')),
      ['log_timestamp false', 'log_type all', 'log_dest file /srv/agent/var/mosquitto/mosquitto.log', 'log_dest stderr'],
    );
    assert.ok(made.indexOf('max_packet_size 2048') < made.indexOf('listener 18883 127.0.0.1'));
  });

  it('[17.mqtt5] refuses a shipped file it no longer understands, naming it, and a path that would break a line', () => {
    const shipped = readFileSync(FLEET_BROKER_CONFIG_FILE, 'utf8');
    const drift = (template: string): string => runnableFleetBrokerConfig({ ...OPTIONS, template });
    assert.throws(
      () => drift(shipped.replace('listener 8884', 'listener 9884')),
      new RegExp(`^Error: ${FLEET_BROKER_CONFIG_FILE}: no longer has \`listener 8883\` and \`listener 8884\`; .*update src/uplink/fleet-broker-config\\.ts$`),
    );
    assert.throws(
      () => drift(shipped.replace('/etc/mosquitto/telematics/backend-ca.crt', '/etc/mosquitto/telematics/backend-ca.pem')),
      /mosquitto\.conf: has `cafile \/etc\/mosquitto\/telematics\/backend-ca\.pem`, which names no file this knows/,
    );
    assert.throws(
      () => runnableFleetBrokerConfig({ ...OPTIONS, files: { ...FILES, serverKeyFile: '/tmp/x\nuser root' } }),
      /serverKeyFile: a path with a line break cannot go into a mosquitto configuration/,
    );
  });

  it('[17.mqtt5] finds mosquitto where TELEMATICS_MOSQUITTO says, else on PATH; says where it looked when it is not there', () => {
    const dir = makeTempDir('find-mosquitto-');
    const binary = path.join(dir, 'mosquitto');
    writeFileSync(binary, '#!/bin/sh\n');
    chmodSync(binary, 0o755);
    assert.deepEqual(findMosquitto({ TELEMATICS_MOSQUITTO: binary }), { executable: binary });
    assert.deepEqual(findMosquitto({ TELEMATICS_MOSQUITTO: '/nonexistent/mosquitto', PATH: dir }), {
      missing: 'TELEMATICS_MOSQUITTO=/nonexistent/mosquitto is not an executable file',
    });
    assert.deepEqual(findMosquitto({ PATH: `relative/bin${path.delimiter}${dir}` }), { executable: binary });
    chmodSync(binary, 0o644);
    const notExecutable = findMosquitto({ PATH: dir });
    assert.notDeepEqual(notExecutable, { executable: binary });
  });
});
