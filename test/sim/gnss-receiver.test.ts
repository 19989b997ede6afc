/**
 * The simulated GNSS receiver (src/sim/gnss-receiver.ts, src/sim/route.ts): what it writes is NMEA that the agent's
 * parser reads into fixes on the demo route, whose movement agrees with the drive cycle's speed and the route's
 * bearing; and `telematics-agent sim-gnss` serves it on a pseudo-terminal that `telematics-agent gnss` reads.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { FixAssembler } from '../../src/gnss/fix-assembler.js';
import type { GnssFix } from '../../src/gnss/fix.js';
import { NmeaReader } from '../../src/gnss/nmea-reader.js';
import { SimulatedReceiver } from '../../src/sim/gnss-receiver.js';
import { bearingDeg, DEMO_ROUTE, distanceM, Route } from '../../src/sim/route.js';
import { AGENT_CLI } from '../support/programs.js';
import { makeTempDir } from '../support/temp.js';
import { waitFor } from '../support/wait.js';

describe('the simulated GNSS receiver', () => {
  it('drives a loop of about 3.5 km whose legs join up', () => {
    const route = new Route();
    assert.ok(route.lengthM > 3000 && route.lengthM < 4500, `${route.lengthM} m`);
    const start = route.position();
    route.advance(route.lengthM);
    const back = route.position();
    assert.ok(distanceM(start.lat, start.lon, back.lat, back.lon) < 0.01, 'a whole loop ends where it began');
    assert.deepEqual([start.lat, start.lon], DEMO_ROUTE[0]);
  });

  it("writes NMEA the agent reads into fixes that move as the drive cycle's speed says, along the route's bearing", () => {
    const receiver = new SimulatedReceiver({ seed: 1 });
    const fixes: GnssFix[] = [];
    const assembler = new FixAssembler({ onFix: (fix) => fixes.push(fix) });
    const reader = new NmeaReader((sentence) => assembler.push(sentence));
    const t0 = Date.UTC(2026, 11, 7, 12);
    let driven = 0;
    for (let s = 0; s < 120; s++) {
      reader.write(`${receiver.epoch(t0 + s * 1000).join('\r\n')}\r\n`);
      assembler.flush();
      const before = receiver.route.position();
      receiver.step(1);
      const after = receiver.route.position();
      driven += distanceM(before.lat, before.lon, after.lat, after.lon);
    }
    const problems = reader.counters.problems;
    assert.equal(problems['bad-checksum'] + problems['no-checksum'] + problems['not-a-sentence'] + problems['too-long'], 0);
    assert.equal(fixes.length, 120);
    assert.ok(fixes.every((f) => f.mode === 3 && f.status === 1 && f.uSat === 9 && f.nSat === 12));
    assert.equal(fixes[5]!.time, t0 + 5000);
    // The car drives off after about 16 s: the position moves, by what the route says it drove (to the NMEA's 1e-5').
    const first = fixes[0]!;
    const last = fixes[fixes.length - 1]!;
    assert.ok(driven > 300, `drove ${driven} m in 2 minutes`);
    let sum = 0;
    for (let k = 1; k < fixes.length; k++) sum += distanceM(fixes[k - 1]!.lat!, fixes[k - 1]!.lon!, fixes[k]!.lat!, fixes[k]!.lon!);
    assert.ok(Math.abs(sum - driven) < 1, `${sum} m between fixes, ${driven} m driven`);
    assert.notDeepEqual([first.lat, first.lon], [last.lat, last.lon]);
    // The course is the bearing of a leg of the route.
    const bearings = DEMO_ROUTE.map(([lat, lon], i) => {
      const [lat2, lon2] = DEMO_ROUTE[(i + 1) % DEMO_ROUTE.length]!;
      return Number(bearingDeg(lat, lon, lat2, lon2).toFixed(1));
    });
    assert.ok(fixes.every((f) => bearings.includes(f.track!)));
  });

  it('`sim-gnss --link` serves it on a pseudo-terminal that `gnss --port` reads', async () => {
    const link = path.join(makeTempDir('sim-gnss-'), 'ttyGNSS');
    const sim = spawn(process.execPath, [AGENT_CLI, 'sim-gnss', '--link', link, '--rate', '5'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let simSaid = '';
    sim.stderr.setEncoding('utf8').on('data', (d: string) => (simSaid += d));
    try {
      await waitFor(() => simSaid.includes('receiver on'), 'sim-gnss to serve its pty', 20_000);
      const reader = spawn(process.execPath, [AGENT_CLI, 'gnss', '--port', link, '--json', '-n', '3'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      reader.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      const code = await new Promise<number | null>((resolve) => reader.once('exit', resolve));
      assert.equal(code, 0);
      const tpvs = out
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { mode: number; lat: number; lon: number });
      assert.equal(tpvs.length, 3);
      for (const tpv of tpvs) {
        assert.equal(tpv.mode, 3);
        assert.ok(Math.abs(tpv.lat - 48.138) < 0.01 && Math.abs(tpv.lon - 11.575) < 0.015, `${tpv.lat},${tpv.lon} is not on the demo route`);
      }
    } finally {
      sim.kill('SIGINT');
      await new Promise((resolve) => sim.once('exit', resolve));
    }
    assert.match(simSaid, /stopped after \d+ epochs/);
  });
});
