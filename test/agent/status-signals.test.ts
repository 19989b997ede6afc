/**
 * One signal-name resolver: the status signals take every name a collection rule takes for a DBC signal
 * (`Message.Signal`, a bare name, `bus.Message.Signal`) and find the same bus and slot the collector reads; an OBD key
 * is no DBC signal. Real decoders on the demo DBC, fed a real frame.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resolveStatusSignal, statusSignals } from '../../src/agent/status-signals.js';
import { resolveSignalName } from '../../src/collect/signal-names.js';
import { BusDecoder } from '../../src/dbc/bus-decoder.js';
import { compileDatabase, loadDbcFile } from '../../src/dbc/index.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { candumpLine, le16 } from '../support/drive-log.js';
import { parseCandumpLine } from '../../src/can/candump.js';
import { createFrame } from '../../src/can/frame.js';

function buses(): BusDecoder[] {
  const database = compileDatabase(loadDbcFile(DEMO_DBC_PATH, { strict: true }));
  return [new BusDecoder('can0', database), new BusDecoder('can1', database)];
}

describe('status signals and the one signal-name resolver', () => {
  it('[15.5] take Message.Signal, a bare name and bus.Message.Signal, finding what the collector finds', () => {
    const decoders = buses();
    // EngineSpeed 812.5 rpm on can1 only: the bus-prefixed name reads can1's value, the others can0's (the first bus).
    const frame = createFrame();
    assert.ok(parseCandumpLine(candumpLine(1_700_000_000, 0xc8, le16(3250), 'can1'), frame));
    decoders[1]!.sink(frame);
    for (const name of ['EngineSpeed', 'ENGINE_DATA.EngineSpeed', 'can0.ENGINE_DATA.EngineSpeed', 'can1.ENGINE_DATA.EngineSpeed']) {
      const status = resolveStatusSignal(decoders, name);
      const rule = resolveSignalName(decoders, name);
      assert.ok(status && rule?.kind === 'dbc', name);
      assert.equal(status.bus, decoders[rule.bus], name);
      assert.equal(status.slot, rule.slot, name);
      assert.equal(status.name, name);
    }
    const { signals } = statusSignals(['EngineSpeed', 'can1.ENGINE_DATA.EngineSpeed'], decoders);
    assert.deepEqual(
      signals.map((s) => [s.bus.name, s.bus.values[s.slot]]),
      [
        ['can0', NaN],
        ['can1', 812.5],
      ],
    );
  });

  it('[15.5] refuses, naming it, a status signal no bus DBC has, an OBD key, and a bus that does not exist', () => {
    const decoders = buses();
    assert.equal(resolveStatusSignal(decoders, 'obd.rpm'), undefined);
    assert.deepEqual(resolveSignalName(decoders, 'obd.rpm'), { kind: 'offered', family: 'obd', key: 'rpm', source: undefined });
    // A GNSS field is no DBC signal either, and neither is a key no fix has.
    assert.equal(resolveStatusSignal(decoders, 'gnss.lat'), undefined);
    assert.deepEqual(resolveSignalName(decoders, 'gnss.gnss.lat'), { kind: 'offered', family: 'gnss', key: 'lat', source: 'gnss' });
    assert.equal(resolveSignalName(decoders, 'gnss.latitude'), undefined);
    for (const name of ['NoSuchSignal', 'can2.ENGINE_DATA.EngineSpeed', 'obd.rpm']) {
      assert.throws(() => statusSignals([name], decoders), { message: `status.signals: no bus DBC has a signal '${name}'` });
    }
  });

  it('[15.5] without status.signals, the first 12 signals of the bus DBCs, named with their bus when there are several', () => {
    const { signals, configured } = statusSignals([], buses());
    assert.equal(configured, false);
    assert.equal(signals.length, 12);
    assert.equal(signals[0]!.name, 'can0.ENGINE_DATA.EngineSpeed');
  });
});
