/**
 * NMEA sentences and their fields (src/gnss/nmea.ts) and the line reader over a serial stream
 * (src/gnss/nmea-reader.ts): real sentences from the shared recordings, every way a line can be broken, and a fuzz
 * loop that throws noise at the reader and checks that only intact sentences come out.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { angleField, numberField, parseSentence, rmcDateField, sentenceLine, timeOfDayField, type NmeaSentence } from '../../src/gnss/nmea.js';
import { NmeaReader } from '../../src/gnss/nmea-reader.js';
import { seededRandom } from '../support/random.js';

const GGA = '$GPGGA,113258,3238.9148,N,10822.4466,W,2,08,1.1,1577.4,M,-24.6,M,,*4D';
const RMC = '$GNRMC,132819.60,A,4134.49795459,N,09345.03431408,W,0.148,124.888,180320,11.5985,E,D*3F';

function read(...chunks: (string | Buffer)[]): { sentences: NmeaSentence[]; reader: NmeaReader } {
  const sentences: NmeaSentence[] = [];
  const reader = new NmeaReader((s) => sentences.push(s));
  for (const chunk of chunks) reader.write(chunk);
  reader.end();
  return { sentences, reader };
}

describe('NMEA sentences', () => {
  it('splits a real sentence into talker, type and fields', () => {
    const s = parseSentence(GGA);
    assert.ok(typeof s !== 'string');
    assert.equal(s.talker, 'GP');
    assert.equal(s.type, 'GGA');
    assert.equal(s.fields.length, 14);
    assert.equal(s.fields[1], '3238.9148');
    assert.equal(s.fields[13], '');
  });

  it('reads proprietary sentences by their whole address', () => {
    const s = parseSentence('$PGRME,7.6,M,41.7,M,42.4,M*2F');
    assert.ok(typeof s !== 'string');
    assert.deepEqual([s.talker, s.type, s.fields[0]], ['P', 'GRME', '7.6']);
  });

  it('refuses a wrong checksum, a missing one, noise and a line too long', () => {
    assert.equal(parseSentence(GGA.replace('*4D', '*4E')), 'bad-checksum');
    assert.equal(parseSentence(GGA.replace('1577.4', '1578.4')), 'bad-checksum');
    assert.equal(parseSentence(GGA.slice(0, -3)), 'no-checksum');
    assert.equal(parseSentence(GGA.slice(0, 30)), 'no-checksum');
    assert.equal(parseSentence(GGA.replace('*4D', '*4')), 'bad-checksum');
    assert.equal(parseSentence('GPGGA,1*00'), 'not-a-sentence');
    assert.equal(parseSentence(`$GPGGA,\u00ff${GGA.slice(7)}`), 'not-a-sentence');
    assert.equal(parseSentence(sentenceLine('gpgga,1')), 'not-a-sentence');
    assert.equal(parseSentence(sentenceLine(`GPTXT,${'x'.repeat(300)}`)), 'too-long');
    assert.equal(sentenceLine('GPGGA,113258,3238.9148,N,10822.4466,W,2,08,1.1,1577.4,M,-24.6,M,,'), GGA);
  });

  it('reads angles, times, dates and numbers, and refuses what is not one', () => {
    assert.equal(angleField('3238.9148', 'N', 90), 32 + 38.9148 / 60);
    assert.equal(angleField('10822.4466', 'W', 180), -(108 + 22.4466 / 60));
    assert.equal(angleField('4134.49795459', 'S', 90), -(41 + 34.49795459 / 60));
    assert.equal(angleField('0000.0000', 'E', 180), 0);
    // The no-fix placeholder of an MTK receiver: 89 degrees 60 minutes.
    assert.equal(angleField('8960.000000', 'N', 90), undefined);
    assert.equal(angleField('9100.0000', 'N', 90), undefined);
    assert.equal(angleField('18100.0000', 'E', 180), undefined);
    assert.equal(angleField('3238.9148', 'E', 90), undefined);
    assert.equal(angleField('3238.9148', '', 90), undefined);
    assert.equal(angleField('', 'N', 90), undefined);
    assert.equal(angleField('32a8.9148', 'N', 90), undefined);
    assert.equal(timeOfDayField('113258'), 11 * 3_600_000 + 32 * 60_000 + 58_000);
    assert.equal(timeOfDayField('191503.01'), 19 * 3_600_000 + 15 * 60_000 + 3_010);
    assert.equal(timeOfDayField('235960.000'), 86_400_000, 'a leap second');
    assert.equal(timeOfDayField('240000'), undefined);
    assert.equal(timeOfDayField('236000'), undefined);
    assert.equal(timeOfDayField('12345'), undefined);
    assert.equal(rmcDateField('180320'), Date.UTC(2020, 2, 18) / 86_400_000);
    assert.equal(rmcDateField('050180'), Date.UTC(1980, 0, 5) / 86_400_000);
    assert.equal(rmcDateField('310222'), undefined);
    assert.equal(numberField('-24.6'), -24.6);
    assert.equal(numberField('.5'), 0.5);
    assert.equal(numberField(''), undefined);
    assert.equal(numberField('1e3'), undefined);
    assert.equal(numberField('0x10'), undefined);
  });
});

describe('the NMEA line reader', () => {
  it('reads sentences split anywhere across chunks, with any line ending', () => {
    const text = `${GGA}\r\n${RMC}\n${GGA}\r`;
    for (let cut = 1; cut < text.length; cut += 7) {
      const { sentences, reader } = read(text.slice(0, cut), Buffer.from(text.slice(cut), 'latin1'));
      assert.equal(sentences.length, 3, `cut at ${cut}`);
      assert.equal(reader.counters.sentences, 3);
    }
  });

  it('counts a cut line, two run together, noise and gpsd comments, and reads the sentences around them', () => {
    const noise = Buffer.from([0xb5, 0x62, 0x01, 0x07, 0x00, 0x24, 0xff, 0x0d, 0x0a]);
    const { sentences, reader } = read(`# a comment\n${GGA.slice(0, 40)}${RMC}\r\n`, noise, `${GGA}\n\n${GGA.replace('*4D', '*00')}\n`);
    assert.deepEqual(
      sentences.map((s) => s.type),
      ['RMC', 'GGA'],
    );
    assert.equal(reader.counters.problems['no-checksum'], 1, 'the GGA cut short by the RMC');
    assert.equal(reader.counters.problems['bad-checksum'], 1);
    assert.equal(reader.counters.problems['not-a-sentence'], 2, 'the binary message, split at its $');
  });

  it('holds no more than one sentence of a line that never ends', () => {
    const { sentences, reader } = read('x'.repeat(100_000), `\n${GGA}\n`);
    assert.equal(sentences.length, 1);
    assert.equal(reader.counters.problems['too-long'], 1);
  });

  it('reads every intact sentence however much noise and damage surrounds it, and throws on none', () => {
    // NMEA's XOR checksum cannot see every damage (a doubled character keeps it): what it sees is refused, and no
    // amount of noise costs an intact sentence that follows it.
    const random = seededRandom(Number(process.env.NMEA_FUZZ_SEED ?? 20261207));
    for (let round = 0; round < 300; round++) {
      const parts: string[] = [];
      let intact = 0;
      for (let k = 0; k < 20; k++) {
        const pick = random();
        const line = random() < 0.5 ? GGA : RMC;
        if (pick < 0.3) {
          parts.push(`${line}\r\n`);
          intact++;
        } else if (pick < 0.6) {
          const at = Math.floor(random() * line.length);
          const damaged = [line.slice(0, at) + String.fromCharCode(Math.floor(random() * 256)) + line.slice(at + 1), line.slice(0, at) + line.slice(at + 1)];
          parts.push(`${damaged[Math.floor(random() * 2)]!}\n`);
        } else parts.push(String.fromCharCode(...Array.from({ length: Math.floor(random() * 40) }, () => Math.floor(random() * 256))));
      }
      const { sentences } = read(Buffer.from(parts.join(''), 'latin1'));
      const whole = sentences.filter((s) => [GGA, RMC].includes(sentenceLine(`${s.talker}${s.type},${s.fields.join(',')}`))).length;
      assert.ok(whole >= intact, `round ${round}: ${whole} of ${intact} intact sentences read`);
      for (const s of sentences) assert.ok(['GGA', 'RMC'].includes(s.type), `round ${round}: a sentence of type ${s.type} out of noise`);
    }
  });
});
