/**
 * DBC parser: the whole shared corpus loads (lenient, and strict where the grammar is followed), the deviations real
 * tool chains produce are tolerated with a warning and rejected in strict mode with a file:line:column error, broken
 * hand-written inputs fail at the right place with a message that says what was expected, and every statement form of
 * the grammar is read into the model.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  compileDatabase,
  DbcParseError,
  DecodeError,
  decodeDbcBytes,
  loadDbcFile,
  parseDbc,
  type Database,
  type MessageDef,
  type SignalDef,
} from '../../src/dbc/index.js';
import { hasSharedTestdata, NO_SHARED_TESTDATA, sharedDbcFiles, sharedTestdata } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';

// ---------------------------------------------------------------------------------------------------------------------
// helpers

function message(db: Database, name: string): MessageDef {
  const found = db.messages.find((m) => m.name === name);
  assert.ok(found, `message ${name} not found; have ${db.messages.map((m) => m.name).join(', ')}`);
  return found;
}

function signal(db: Database, messageName: string, signalName: string): SignalDef {
  const found = message(db, messageName).signals.find((s) => s.name === signalName);
  assert.ok(found, `signal ${messageName}.${signalName} not found`);
  return found;
}

/** Runs `fn`, which must throw a DbcParseError, and returns it. */
function parseError(fn: () => unknown): DbcParseError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof DbcParseError, `expected a DbcParseError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a DbcParseError, but the input parsed');
}

/** Asserts a DbcParseError for `x.dbc` at line:column whose detail matches `detail`. */
function assertErrorAt(text: string, line: number, column: number, detail: RegExp, strict = false): DbcParseError {
  const err = parseError(() => parseDbc(text, { file: 'x.dbc', strict }));
  assert.equal(err.file, 'x.dbc');
  assert.match(err.detail, detail, `detail of: ${err.message}`);
  assert.equal(`${err.line}:${err.column}`, `${line}:${column}`, `position of: ${err.message}`);
  assert.equal(err.message, `x.dbc:${line}:${column}: ${err.detail}`);
  return err;
}

/** Counts BO_ and SG_ lines textually: an independent check of what the parser found. */
function countDefinitions(file: string): { messages: number; signals: number } {
  const lines = readFileSync(file, 'latin1').split('\n');
  return {
    messages: lines.filter((l) => /^BO_ \d/.test(l)).length,
    signals: lines.filter((l) => /^[ \t]+SG_ /.test(l)).length,
  };
}

function lineOf(file: string, line: number): string {
  return readFileSync(file, 'latin1').split(/\r?\n/)[line - 1] ?? '';
}

const shared = hasSharedTestdata();
const skipShared = shared ? false : NO_SHARED_TESTDATA;

// ---------------------------------------------------------------------------------------------------------------------
// the shared corpus

describe('DBC corpus (shared testdata/dbc)', { skip: skipShared }, () => {
  const files = shared ? sharedDbcFiles() : [];
  const rel = (file: string): string => path.relative(sharedTestdata('dbc'), file);
  const loaded = new Map<string, Database>();
  const load = (name: string): Database => {
    let db = loaded.get(name);
    if (!db) {
      db = loadDbcFile(sharedTestdata('dbc', name));
      loaded.set(name, db);
    }
    return db;
  };

  it('finds every file of the corpus, including css_tp/ and unparseable_by_cantools/', () => {
    const names = files.map(rel);
    assert.ok(names.length >= 20, `only ${names.length} files`);
    for (const expected of [
      'vehicle.dbc',
      'ford_lincoln_base_pt.dbc',
      'css_tp/tp_uds.dbc',
      'css_tp/tp_j1939.dbc',
      'unparseable_by_cantools/mazda_2017.dbc',
      'unparseable_by_cantools/vw_mqbevo.dbc',
    ]) {
      assert.ok(names.includes(expected), `${expected} missing from ${names.join(', ')}`);
    }
  });

  for (const file of files) {
    const name = rel(file);
    it(`${name} loads in lenient mode with every BO_ and SG_ it contains`, () => {
      const db = load(name);
      assert.equal(db.file, file);
      const counted = countDefinitions(file);
      assert.equal(db.messages.length, counted.messages, 'messages');
      assert.equal(
        db.messages.reduce((n, m) => n + m.signals.length, 0),
        counted.signals,
        'signals',
      );
      for (const w of db.warnings) {
        assert.equal(w.file, file);
        assert.ok(w.line >= 1 && w.column >= 1, `warning position ${w.line}:${w.column}`);
      }
      // Everything compiles, even messages the layout check warned about.
      const compiled = compileDatabase(db);
      assert.equal(compiled.messages.length, db.messages.length);
    });
    if (!name.startsWith('unparseable_by_cantools/')) {
      it(`${name} follows the grammar: no tolerated deviations, and it loads in strict mode`, () => {
        const tolerated = load(name).warnings.filter((w) => w.message.startsWith('tolerated:'));
        assert.deepEqual(tolerated, []);
        const strict = loadDbcFile(file, { strict: true });
        assert.equal(strict.messages.length, load(name).messages.length);
      });
    }
  }

  it('vehicle.dbc: 217 messages, all 29-bit, 462 signals; its latin-1 degree sign is read as windows-1252', () => {
    const db = load('vehicle.dbc');
    assert.equal(db.messages.length, 217);
    assert.ok(db.messages.every((m) => m.extended && m.id <= 0x1fffffff));
    assert.equal(
      db.messages.reduce((n, m) => n + m.signals.length, 0),
      462,
    );
    assert.equal(db.encoding, 'windows-1252');
    const heading = db.messages.flatMap((m) => m.signals).find((s) => s.name === 'INS_Heading_2');
    assert.match(heading?.comment ?? '', /0 - 360°, the direction/);
  });

  it('ford_lincoln_base_pt.dbc: 331 messages, all CAN FD, 49 with 29-bit IDs, 2150 signals', () => {
    const db = load('ford_lincoln_base_pt.dbc');
    assert.equal(db.messages.length, 331);
    assert.equal(db.messages.filter((m) => m.fd).length, 331);
    assert.equal(db.messages.filter((m) => m.extended).length, 49);
    assert.equal(
      db.messages.reduce((n, m) => n + m.signals.length, 0),
      2150,
    );
    assert.ok(db.messages.some((m) => m.length === 64));
    assert.ok(db.messages.filter((m) => m.signals.some((s) => s.choices && s.choices.size > 0)).length > 0);
    assert.equal(db.encoding, 'utf-8');
  });

  it('foobar.dbc: the 64-byte CanFd message is FD, the classic ones are not', () => {
    const db = load('foobar.dbc');
    const fd = message(db, 'CanFd');
    assert.equal(fd.length, 64);
    assert.equal(fd.fd, true);
    assert.equal(fd.extended, true);
    assert.equal(message(db, 'Foo').fd, false);
    assert.equal(message(db, 'FOOBAR').extended, false);
    // BO_TX_BU_ 2147558194 : FOO,BAR adds BAR as a sender of Bar.
    assert.deepEqual(message(db, 'Bar').senders, ['FOO', 'BAR']);
  });

  it('choices.dbc is detected as windows-1252 and its labels contain ä, negative keys included', () => {
    const db = load('choices.dbc');
    assert.equal(db.encoding, 'windows-1252');
    const foo = signal(db, 'Foo', 'Foo');
    assert.equal(foo.choices?.get(1), "#%=*ä'");
    assert.equal(foo.choices?.get(-5), 'A negative value');
    assert.equal(db.valueTables.get('Bar')?.get(1), "#%=*ä'");
    assert.equal(db.valueTables.get('Bar')?.size, 8);
  });

  it('multiplex_2.dbc and css_j1939_demo.dbc: J1939PG messages are flagged j1939', () => {
    assert.ok(load('css_j1939_demo.dbc').messages.every((m) => m.j1939 && m.extended));
    assert.ok(load('multiplex_2.dbc').messages.every((m) => m.j1939));
    assert.ok(load('signed.dbc').messages.every((m) => !m.j1939));
  });

  for (const [name, messageName, signals] of [
    ['toyota_nodsu_pt_generated.dbc', 'PCS_HUD', ['PCS_DUST', 'SET_ME_X10']],
    ['vw_mqb.dbc', 'PLA_01', ['PLA_Bremsmoment', 'PLA_Bremsverzoegerung']],
  ] as const) {
    it(`${name} loads with an overlap warning for ${messageName}, whose frames then fail to decode`, () => {
      const db = load(name);
      const def = message(db, messageName);
      const overlap = db.warnings.find((w) => w.message.includes(`message ${messageName}:`) && w.message.includes('overlap'));
      assert.ok(overlap, `no overlap warning among ${JSON.stringify(db.warnings)}`);
      assert.match(overlap.message, new RegExp(`signals ${signals[0]} and ${signals[1]} overlap`));
      assert.equal(overlap.line, def.line);
      const codec = compileDatabase(db).find(def.id, def.extended)!;
      assert.throws(() => codec.decode(new Uint8Array(def.length)), DecodeError);
      assert.ok(codec.decodeInto(new Uint8Array(def.length), new Float64Array(1 << 16)) < 0);
    });
  }

  const unparseable: [string, RegExp, RegExp][] = [
    // file, what the warning must name, the text found at the reported line
    ['honda_civic_touring_2016_can_generated.dbc', /^tolerated: CM_ SG_ 304 has no signal name/, /^CM_ SG_ 304 "/],
    ['vw_mqbevo.dbc', /^tolerated: message CAMERA_NEW_6: ID 0x12dd54a7 is above 0x7FF without the extended flag/, /^BO_ 316495015 CAMERA_NEW_6:/],
    ['toyota_radar_dsu_tssp.dbc', /^tolerated: CM_ statement without its closing ';'/, /^CM_ "Front target"$/],
    ['mazda_2017.dbc', /^tolerated: the message name '2017_5' starts with a digit/, /^BO_ 1275 2017_5:/],
  ];
  for (const [base, warning, atLine] of unparseable) {
    const name = `unparseable_by_cantools/${base}`;
    it(`${name}: lenient load warns "tolerated: …" naming the deviation; strict throws at file:line:column`, () => {
      const db = load(name);
      const tolerated = db.warnings.filter((w) => w.message.startsWith('tolerated:'));
      assert.ok(tolerated.length >= 1, `no tolerated warning in ${JSON.stringify(db.warnings)}`);
      const named = tolerated.find((w) => warning.test(w.message));
      assert.ok(named, `no warning matching ${warning} in ${JSON.stringify(tolerated)}`);
      assert.match(lineOf(sharedTestdata('dbc', name), named.line), atLine);

      const file = sharedTestdata('dbc', name);
      const err = parseError(() => loadDbcFile(file, { strict: true }));
      assert.equal(err.file, file);
      assert.ok(err.message.startsWith(`${file}:${err.line}:${err.column}: `), err.message);
      assert.match(err.message, /\(rejected in strict mode\)$/);
      assert.match(lineOf(file, err.line), atLine, `strict error ${err.message}`);
    });
  }

  it('unparseable files keep what they tolerated: 29-bit IDs, digit names, the global comment', () => {
    const mqbevo = load('unparseable_by_cantools/vw_mqbevo.dbc');
    const camera = message(mqbevo, 'CAMERA_NEW_6');
    assert.deepEqual([camera.id, camera.extended, camera.length], [0x12dd54a7, true, 32]);
    const mazda = load('unparseable_by_cantools/mazda_2017.dbc');
    assert.equal(message(mazda, '2017_5').id, 1275);
    const honda = load('unparseable_by_cantools/honda_civic_touring_2016_can_generated.dbc');
    assert.equal(honda.messages.find((m) => m.id === 304)?.comment, 'Seems to be platform-agnostic');
    const radar = load('unparseable_by_cantools/toyota_radar_dsu_tssp.dbc');
    assert.match(radar.comment ?? '', /target/);
    assert.equal(message(radar, 'CLUSTER_F').signals.length, 6);
  });

  it('loadDbcFile of a missing file is a DbcParseError naming the path', () => {
    const missing = sharedTestdata('dbc', 'no_such_file.dbc');
    const err = parseError(() => loadDbcFile(missing));
    assert.equal(err.file, missing);
    assert.match(err.message, /cannot read DBC file/);
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// errors on broken hand-written input

describe('parse errors name the line, the column and what was expected', () => {
  const bo = 'BO_ 1 X: 8 N\n';

  it("bad byte order '@2+'", () => {
    assertErrorAt(`${bo} SG_ S : 0|8@2+ (1,0) [0|0] "" N\n`, 2, 14, /^expected byte order '0' \(Motorola\) or '1' \(Intel\), found '2\+'/);
  });

  it("bad sign '@1*'", () => {
    assertErrorAt(`${bo} SG_ S : 0|8@1* (1,0) [0|0] "" N\n`, 2, 15, /^expected '\+' \(unsigned\) or '-' \(signed\), found '\*'/);
  });

  it("missing '|' between start bit and length", () => {
    assertErrorAt(`${bo} SG_ S : 0 8@1+ (1,0) [0|0] "" N\n`, 2, 12, /^expected '\|' between start bit and length, found '8@1\+'/);
  });

  it("missing '|' between minimum and maximum", () => {
    assertErrorAt(`${bo} SG_ S : 0|8@1+ (1,0) [0 5] "" N\n`, 2, 26, /^expected '\|' between minimum and maximum, found '5\]'/);
  });

  it('unterminated string: reported where it opens, not at the end of the file', () => {
    assertErrorAt(`${bo} SG_ S : 0|8@1+ (1,0) [0|0] "abc N\n\nBO_ 2 Y: 8 N\n`, 2, 29, /^unterminated string/);
    assertErrorAt('VERSION ""\n\nCM_ BO_ 1 "never\nclosed;\n', 3, 11, /^unterminated string/);
  });

  it('SG_ before any BO_', () => {
    assertErrorAt('VERSION ""\n SG_ S : 0|8@1+ (1,0) [0|0] "" N\n', 2, 2, /^SG_ before any BO_/);
  });

  it('non-numeric message ID', () => {
    assertErrorAt('BO_ abc X: 8 N\n', 1, 5, /^expected the message ID, found 'abc'/);
    assertErrorAt('BO_ 12abc X: 8 N\n', 1, 5, /^expected the message ID, found '12abc'/);
    assertErrorAt('BO_ 4294967296 X: 8 N\n', 1, 1, /does not fit in 32 bits/);
    for (const id of ['-5', '1.5']) {
      const err = parseError(() => parseDbc(`BO_ ${id} X: 8 N\n`, { file: 'x.dbc' }));
      assert.equal(err.line, 1);
      assert.equal(err.detail, `expected the message ID (a non-negative integer), found '${id}'`);
    }
  });

  it('a negative or fractional integer field: the error points at the number, also when it starts the next line', () => {
    assertErrorAt('BO_ -5 X: 8 N\n', 1, 5, /found '-5'/);
    assertErrorAt('BO_ 1 X:\n  1.5 N\n', 2, 3, /^expected the message length in bytes \(a non-negative integer\), found '1\.5'/);
  });

  it('signal length 0 or 65 (the line, and what is wrong)', () => {
    for (const length of [0, 65]) {
      const err = parseError(() => parseDbc(`${bo} SG_ S : 0|${length}@1+ (1,0) [0|0] "" N\n`, { file: 'x.dbc' }));
      assert.equal(err.line, 2);
      assert.match(err.detail, new RegExp(`^signal S: length ${length} is outside 1\\.\\.64 bits$`));
    }
    // The boundaries themselves are fine.
    assert.equal(parseDbc(`${bo} SG_ A : 0|1@1+ (1,0) [0|0] "" N\n`).messages[0]!.signals[0]!.length, 1);
    assert.equal(parseDbc(`${bo} SG_ A : 0|64@1+ (1,0) [0|0] "" N\n`).messages[0]!.signals[0]!.length, 64);
  });

  it('signal length 0 or 65: the column points at the length itself', () => {
    assertErrorAt(`${bo} SG_ S : 0|0@1+ (1,0) [0|0] "" N\n`, 2, 12, /length 0 is outside/);
    assertErrorAt(`${bo} SG_ S : 0|65@1+ (1,0) [0|0] "" N\n`, 2, 12, /length 65 is outside/);
    assertErrorAt(`${bo} SG_ S : 512|8@1+ (1,0) [0|0] "" N\n`, 2, 10, /start bit 512 is beyond/);
  });

  it('start bit beyond a 64-byte payload', () => {
    const err = parseError(() => parseDbc(`${bo} SG_ S : 512|8@1+ (1,0) [0|0] "" N\n`, { file: 'x.dbc' }));
    assert.equal(err.line, 2);
    assert.match(err.detail, /^signal S: start bit 512 is beyond a 64-byte payload$/);
    assert.equal(parseDbc(`BO_ 1 X: 64 N\n SG_ S : 511|1@1+ (1,0) [0|0] "" N\n`).messages[0]!.signals[0]!.startBit, 511);
  });

  it('message longer than 64 bytes', () => {
    const err = parseError(() => parseDbc('VERSION ""\nBO_ 1 X: 65 N\n', { file: 'x.dbc' }));
    assert.equal(err.line, 2);
    assert.match(err.detail, /^message X is 65 bytes long; CAN FD allows at most 64$/);
    assert.equal(parseDbc('BO_ 1 X: 64 N\n').messages[0]!.length, 64);
  });

  it('message longer than 64 bytes: the column points at the length', () => {
    assertErrorAt('VERSION ""\nBO_ 1 X: 65 N\n', 2, 10, /65 bytes long/);
  });

  it("missing ':' after the message name", () => {
    assertErrorAt('BO_ 1 X 8 N\n', 1, 9, /^expected ':' after the message name, found '8'/);
  });

  it('non-numeric factor, offset, minimum', () => {
    assertErrorAt(`${bo} SG_ S : 0|8@1+ (a,0) [0|0] "" N\n`, 2, 18, /^expected the factor, found 'a,0\)'/);
    assertErrorAt(`${bo} SG_ S : 0|8@1+ (1,x) [0|0] "" N\n`, 2, 20, /^expected the offset, found 'x\)'/);
    assertErrorAt(`${bo} SG_ S : 0|8@1+ (1,0) [lo|0] "" N\n`, 2, 24, /^expected the minimum, found 'lo\|0\]'/);
  });

  it('a bad multiplexer indicator', () => {
    assertErrorAt(`${bo} SG_ S X : 0|8@1+ (1,0) [0|0] "" N\n`, 2, 8, /^expected a multiplexer indicator \(M, m<n> or m<n>M\) or ':', found 'X'/);
    assertErrorAt(`${bo} SG_ S mM : 0|8@1+ (1,0) [0|0] "" N\n`, 2, 8, /found 'mM'/);
  });

  it("a missing ';' followed by more on the same line", () => {
    for (const [text, keyword] of [
      ['CM_ "one" CM_ "two";\n', 'CM_'],
      ['VAL_TABLE_ T 1 "a" x;\n', 'VAL_TABLE_'],
    ] as const) {
      const err = parseError(() => parseDbc(text, { file: 'x.dbc' }));
      assert.equal(err.line, 1);
      assert.ok(err.detail.startsWith(`expected ';' to end the ${keyword} statement, found `), err.message);
    }
  });

  it("a missing ';' followed by more on the same line: the error shows what stands there", () => {
    assertErrorAt('CM_ "one" CM_ "two";\n', 1, 11, /^expected ';' to end the CM_ statement, found 'CM_'/);
    assertErrorAt('VAL_TABLE_ T 1 "a" x;\n', 1, 20, /^expected ';' to end the VAL_TABLE_ statement, found 'x;'/);
  });

  it('an unknown attribute type', () => {
    assertErrorAt('BA_DEF_ BO_ "Flag" BOOL;\n', 1, 20, /^expected the attribute type \(INT, HEX, FLOAT, STRING, ENUM\), found 'BOOL'/);
  });

  it('something that is not a statement at top level', () => {
    assertErrorAt('VERSION ""\n\n  ;\n', 3, 3, /^expected a DBC keyword \(BO_, SG_, CM_, BA_, VAL_ \.\.\.\), found ';'/);
  });

  it('an unusable SG_MUL_VAL_ range', () => {
    const err = parseError(() => parseDbc(`${bo}SG_MUL_VAL_ 1 S M 5-2;\n`, { file: 'x.dbc' }));
    assert.equal(err.line, 2);
    assert.match(err.detail, /multiplexer value range 5-2 is not usable/);
    assertErrorAt(`${bo}SG_MUL_VAL_ 1 S M 5 2;\n`, 2, 21, /^expected '-' in a multiplexer value range \(as in 2-5\), found '2;'/);
  });

  it('lines after a comment that spans lines are still counted right', () => {
    assertErrorAt('VERSION ""\nCM_ "one\ntwo\nthree";\nBO_ 1 X: 8 N\n SG_ S : 0|8@3+ (1,0) [0|0] "" N\n', 6, 14, /byte order/);
  });

  it('CRLF line ends give the same line and column as LF', () => {
    const text = `VERSION ""\n\n${bo} SG_ S : 0|8@2+ (1,0) [0|0] "" N\n`;
    assertErrorAt(text, 4, 14, /byte order/);
    assertErrorAt(text.replace(/\n/g, '\r\n'), 4, 14, /byte order/);
  });

  it('the default file name is <dbc>', () => {
    const err = parseError(() => parseDbc('BO_ x'));
    assert.equal(err.file, '<dbc>');
    assert.ok(err.message.startsWith('<dbc>:1:5: '), err.message);
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// deviations: tolerated in lenient mode, rejected in strict mode

describe('lenient and strict mode', () => {
  const cases: { name: string; text: string; warning: RegExp; line: number }[] = [
    {
      name: 'a name starting with a digit',
      text: 'BU_: N\nBO_ 1 9X: 8 N\n SG_ S : 0|8@1+ (1,0) [0|0] "" N\n',
      warning: /^tolerated: the message name '9X' starts with a digit/,
      line: 2,
    },
    {
      name: 'an ID above 0x7FF without the extended flag',
      text: 'BO_ 4096 X: 8 N\n',
      warning: /^tolerated: message X: ID 0x1000 is above 0x7FF without the extended flag/,
      line: 1,
    },
    {
      name: "a missing ';' at the end of a line",
      text: 'BO_ 1 X: 8 N\n SG_ S : 0|8@1+ (1,0) [0|0] "" N\n\nCM_ BO_ 1 "no semicolon"\nVAL_ 1 S 0 "zero" ;\n',
      warning: /^tolerated: CM_ statement without its closing ';'/,
      line: 4,
    },
    {
      name: 'a signal comment without the signal name',
      text: 'BO_ 1 X: 8 N\n SG_ S : 0|8@1+ (1,0) [0|0] "" N\nCM_ SG_ 1 "orphan";\n',
      warning: /^tolerated: CM_ SG_ 1 has no signal name; kept as the message's comment/,
      line: 3,
    },
    {
      name: 'a message defined twice',
      text: 'BO_ 1 X: 8 N\nBO_ 1 Y: 8 N\n',
      warning: /^tolerated: message ID 1 \(Y\) is defined twice/,
      line: 2,
    },
    {
      name: 'a signal defined twice',
      text: 'BO_ 1 X: 8 N\n SG_ S : 0|8@1+ (1,0) [0|0] "" N\n SG_ S : 8|8@1+ (1,0) [0|0] "" N\n',
      warning: /^tolerated: signal S appears twice in message X/,
      line: 3,
    },
    {
      name: 'a multiplexed signal without a multiplexer',
      text: 'BO_ 1 X: 8 N\n SG_ S m1 : 0|8@1+ (1,0) [0|0] "" N\n',
      warning: /^tolerated: signal S of message X is multiplexed \(m1\) but the message has no multiplexer signal M/,
      line: 2,
    },
    {
      name: 'a float type on a signal of the wrong length',
      text: 'BO_ 1 X: 8 N\n SG_ S : 0|16@1+ (1,0) [0|0] "" N\nSIG_VALTYPE_ 1 S : 1;\n',
      warning: /^tolerated: signal S is declared float32 but is 16 bits long; read as an integer/,
      line: 3,
    },
    {
      name: 'an unknown statement',
      text: 'BO_ 1 X: 8 N\nFOO_ 1 2 3;\nBO_ 2 Y: 8 N\n',
      warning: /^tolerated: unknown statement 'FOO_' skipped/,
      line: 2,
    },
  ];
  for (const c of cases) {
    it(`${c.name}: a warning in lenient mode, a DbcParseError in strict mode`, () => {
      const db = parseDbc(c.text, { file: 'x.dbc' });
      const warning = db.warnings.find((w) => c.warning.test(w.message));
      assert.ok(warning, `no warning matching ${c.warning} in ${JSON.stringify(db.warnings)}`);
      assert.equal(warning.line, c.line);
      assert.equal(warning.file, 'x.dbc');
      const err = parseError(() => parseDbc(c.text, { file: 'x.dbc', strict: true }));
      assert.equal(err.line, c.line);
      assert.match(err.message, /^x\.dbc:\d+:\d+: .*\(rejected in strict mode\)$/);
    });
  }

  it('one warning per kind of deviation, with a count of the others', () => {
    const db = parseDbc('BO_ 4096 A: 8 N\nBO_ 4097 B: 8 N\nBO_ 4098 C: 8 N\n');
    const tolerated = db.warnings.filter((w) => w.message.startsWith('tolerated:'));
    assert.equal(tolerated.length, 1);
    assert.match(tolerated[0]!.message, /\(and 2 more like it\)$/);
    assert.equal(tolerated[0]!.line, 1);
    assert.deepEqual(
      db.messages.map((m) => [m.name, m.id, m.extended]),
      [
        ['A', 4096, true],
        ['B', 4097, true],
        ['C', 4098, true],
      ],
    );
  });

  it('references to undefined messages and signals are dropped with a warning, not an error (also in strict mode)', () => {
    const text = 'BO_ 1 X: 8 N\n SG_ S : 0|8@1+ (1,0) [0|0] "" N\n' + 'CM_ SG_ 1 Nope "x";\nVAL_ 2 S 0 "zero" ;\nBA_DEF_ BO_ "A" INT 0 1;\nBA_ "A" BO_ 3 1;\n';
    for (const strict of [false, true]) {
      const db = parseDbc(text, { strict });
      assert.equal(db.warnings.length, 3, JSON.stringify(db.warnings));
      assert.ok(db.warnings.every((w) => !w.message.startsWith('tolerated:')));
      assert.match(db.warnings[0]!.message, /signal Nope, which message X does not have/);
      assert.match(db.warnings[1]!.message, /message ID 2, which is not defined/);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// every statement form

const FULL_DBC = `VERSION "1.2.3"

// NS_ lists the symbols the file may use.
NS_ :
\tNS_DESC_
\tCM_
\tBA_DEF_
\tBA_
\tVAL_
\tCAT_DEF_
\tCAT_
\tFILTER
\tBA_DEF_DEF_
\tEV_DATA_
\tENVVAR_DATA_
\tSGTYPE_
\tSGTYPE_VAL_
\tBA_DEF_SGTYPE_
\tBA_SGTYPE_
\tSIG_TYPE_REF_
\tVAL_TABLE_
\tSIG_GROUP_
\tSIG_VALTYPE_
\tSIGTYPE_VALTYPE_
\tBO_TX_BU_
\tBA_DEF_REL_
\tBA_REL_
\tBA_DEF_DEF_REL_
\tBU_SG_REL_
\tBU_EV_REL_
\tBU_BO_REL_
\tSG_MUL_VAL_

BS_: 500 : 12,34

CM_ BU_ Dash "Commented before BU_ names it";
BU_: Engine Gateway
  Dash

CM_ BO_ 100 "Engine data; commented before its BO_";
CM_ SG_ 100 Rpm "Engine speed, \\"quoted\\", commented before its BO_";

VAL_TABLE_ OnOff 1 "On" 0 "Off" ;
VAL_TABLE_ Gear -1 "Reverse" 0 "Neutral" 1 "First" ;

BO_ 100 EngineData: 8 Engine
 SG_ Rpm : 0|16@1+ (0.25,0) [0|16383.75] "rpm" Gateway,Dash
 SG_ Temp : 23|8@0- (1,-40) [-168|87] "degC" Dash // an end-of-line comment
 SG_ Mode : 24|2@1+ (1,0) [0|3] "" Vector__XXX
// a comment line inside a message
 SG_ Ratio : 32|16@1- (0.001,-1.5e1) [-1E2|+100] "%" Dash

BO_ 2566844672 Mux29: 8 Gateway
 SG_ Mux M : 0|8@1+ (1,0) [0|255] "" Dash
 SG_ A m0 : 8|16@1+ (1,0) [0|65535] "" Dash
 SG_ Sub m1M : 8|8@1+ (1,0) [0|255] "" Dash
 SG_ B m3 : 16|8@1+ (1,0) [0|255] "" Dash
 SG_ C m2 : 16|8@1+ (1,0) [0|255] "" Dash
 SG_ Value : 24|32@1- (1,0) [0|0] "" Dash
 SG_ Tail : 56|8@1+ (1,0) [0|255] "" Dash

BO_ 2364540158 EEC1: 8 Engine
 SG_ EngineSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX

BO_ 3221225472 VECTOR__INDEPENDENT_SIG_MSG: 0 Vector__XXX
 SG_ Unused : 0|8@1+ (1,0) [0|0] "" Vector__XXX

BO_TX_BU_ 100 : Gateway,Dash;

EV_ EnvSpeed: 0 [0|300] "km/h" 10 1 DUMMY_NODE_VECTOR0 Engine,Dash;
EV_ EnvRatio: 1 [-1.5|2.5] "" 0.5 2 DUMMY_NODE_VECTOR8000 Vector__XXX;
ENVVAR_DATA_ EnvData: 8;
EV_DATA_ EnvData2: 4;
VAL_ EnvSpeed 0 "Stop" 1 "Go" ;

CM_ "Network comment, see http://example.com // not a comment";
CM_ BU_ Engine "Engine ECU";
CM_ BO_ 2566844672 "Commented after its BO_,
over two lines";
CM_ SG_ 2566844672 A "A, commented after its BO_";
CM_ EV_ EnvSpeed "Speed environment variable";

BA_DEF_ "BusType" STRING ;
BA_DEF_ "DBName" STRING ;
BA_DEF_ BU_ "NodeLayer" INT 0 255;
BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;
BA_DEF_ BO_ "GenMsgSendType" ENUM "Cyclic","Spontaneous","IfActive";
BA_DEF_ BO_ "VFrameFormat" ENUM "StandardCAN","ExtendedCAN","reserved","J1939PG","reserved","reserved","reserved","reserved","reserved","reserved","reserved","reserved","reserved","reserved","StandardCAN_FD","ExtendedCAN_FD";
BA_DEF_ SG_ "GenSigStartValue" FLOAT 0 100000;
BA_DEF_ SG_ "SigId" HEX 0 4095;
BA_DEF_ SG_ "SigScale" FLOAT -1.5 1.5;
BA_DEF_ EV_ "EvLevel" INT 0 10;
BA_DEF_ BO_ "NoRange" INT;
BA_DEF_REL_ BU_SG_REL_ "RelAttr" INT 0 10;
BA_DEF_DEF_ "BusType" "CAN FD";
BA_DEF_DEF_ "DBName" "";
BA_DEF_DEF_ "NodeLayer" 0;
BA_DEF_DEF_ "GenMsgCycleTime" 0;
BA_DEF_DEF_ "GenMsgSendType" "Cyclic";
BA_DEF_DEF_ "VFrameFormat" "StandardCAN";
BA_DEF_DEF_ "GenSigStartValue" 0;
BA_DEF_DEF_ "SigId" 0;
BA_DEF_DEF_ "SigScale" 0.5;
BA_DEF_DEF_ "EvLevel" 1;
BA_DEF_DEF_REL_ "RelAttr" 0;
BA_ "DBName" "Demo";
BA_ "NodeLayer" BU_ Engine 3;
BA_ "GenMsgCycleTime" BO_ 100 20;
BA_ "GenMsgSendType" BO_ 100 1;
BA_ "VFrameFormat" BO_ 2566844672 15;
BA_ "VFrameFormat" BO_ 2364540158 3;
BA_ "GenSigStartValue" SG_ 100 Rpm 3200;
BA_ "SigId" SG_ 100 Temp 255;
BA_ "SigScale" SG_ 100 Ratio -0.25;
BA_ "EvLevel" EV_ EnvSpeed 2;
BA_REL_ "RelAttr" BU_SG_REL_ Dash SG_ 100 Rpm 5;
SIG_GROUP_ 100 Group1 1 : Rpm Temp;
CAT_DEF_ 1 Cat1 0 ;
CAT_ BO_ 100 1;
FILTER 0 "ByCat" : 1;
SGTYPE_ TypeA : 8@1+ (1,0) [0|255] "" 0 OnOff;
SIG_TYPE_REF_ 100 Mode : TypeA;
BU_SG_REL_ Dash SG_ 100 Rpm;
BU_BO_REL_ Dash 100;

VAL_ 100 Mode 0 "Off" 1 "Idle" 2 "Run" 3 "Fault" ;
VAL_ 2566844672 Mux 0 "Zero" 1 "One" 2 "Two" 3 "Three" 9 "Nine" ;
SIG_VALTYPE_ 2566844672 Value : 1;
SG_MUL_VAL_ 2566844672 Sub Mux 1-1;
SG_MUL_VAL_ 2566844672 B Sub 2-5, 7-7;
SG_MUL_VAL_ 2566844672 C Mux 2-2;
`;

/** 1-based line of FULL_DBC that starts with `prefix`. */
function fullLine(prefix: string): number {
  const index = FULL_DBC.split('\n').findIndex((l) => l.startsWith(prefix));
  assert.ok(index >= 0, prefix);
  return index + 1;
}

describe('every statement form is read', () => {
  const db = parseDbc(FULL_DBC, { file: 'full.dbc', strict: true });

  it('parses in strict mode with no warnings (but the one for VECTOR__INDEPENDENT_SIG_MSG)', () => {
    assert.deepEqual(
      db.warnings.filter((w) => !w.message.startsWith('message VECTOR__INDEPENDENT_SIG_MSG:')),
      [],
    );
    assert.equal(db.file, 'full.dbc');
    assert.equal(db.encoding, 'utf-8');
  });

  it('VECTOR__INDEPENDENT_SIG_MSG (0 bytes, never on a bus) gets no layout warning', () => {
    assert.deepEqual(db.warnings, []);
  });

  it('VERSION, NS_, BS_ with baud rate and BTR, BU_ on two lines', () => {
    assert.equal(db.version, '1.2.3');
    assert.deepEqual(
      db.nodes.map((n) => n.name),
      ['Engine', 'Gateway', 'Dash'],
    );
    assert.equal(parseDbc('BS_: 500\nBU_: A\n').nodes[0]!.name, 'A');
    assert.equal(parseDbc('BS_:\nBU_:\nBO_ 1 X: 8 Vector__XXX\n').messages.length, 1);
  });

  it('VAL_TABLE_ with a negative key', () => {
    assert.deepEqual([...db.valueTables.keys()], ['OnOff', 'Gear']);
    assert.deepEqual(
      [...db.valueTables.get('Gear')!],
      [
        [-1, 'Reverse'],
        [0, 'Neutral'],
        [1, 'First'],
      ],
    );
    assert.deepEqual(
      [...db.valueTables.get('OnOff')!],
      [
        [1, 'On'],
        [0, 'Off'],
      ],
    );
  });

  it('BO_ and SG_ with every field', () => {
    const engine = message(db, 'EngineData');
    assert.deepEqual(
      { id: engine.id, extended: engine.extended, length: engine.length, senders: engine.senders, line: engine.line },
      { id: 100, extended: false, length: 8, senders: ['Engine', 'Gateway', 'Dash'], line: fullLine('BO_ 100 ') },
    );
    const rpm = signal(db, 'EngineData', 'Rpm');
    assert.deepEqual(
      {
        startBit: rpm.startBit,
        length: rpm.length,
        byteOrder: rpm.byteOrder,
        signed: rpm.signed,
        valueType: rpm.valueType,
        factor: rpm.factor,
        offset: rpm.offset,
        integerScaling: rpm.integerScaling,
        minimum: rpm.minimum,
        maximum: rpm.maximum,
        unit: rpm.unit,
        receivers: rpm.receivers,
        isMultiplexer: rpm.isMultiplexer,
        line: rpm.line,
      },
      {
        startBit: 0,
        length: 16,
        byteOrder: 'little_endian',
        signed: false,
        valueType: 'integer',
        factor: 0.25,
        offset: 0,
        integerScaling: false,
        minimum: 0,
        maximum: 16383.75,
        unit: 'rpm',
        receivers: ['Gateway', 'Dash'],
        isMultiplexer: false,
        line: fullLine(' SG_ Rpm '),
      },
    );
    const temp = signal(db, 'EngineData', 'Temp');
    assert.deepEqual(
      [temp.startBit, temp.length, temp.byteOrder, temp.signed, temp.factor, temp.offset, temp.integerScaling, temp.minimum],
      [23, 8, 'big_endian', true, 1, -40, true, -168],
    );
    assert.deepEqual(signal(db, 'EngineData', 'Mode').receivers, ['Vector__XXX']);
    const ratio = signal(db, 'EngineData', 'Ratio');
    assert.deepEqual([ratio.factor, ratio.offset, ratio.minimum, ratio.maximum, ratio.unit], [0.001, -15, -100, 100, '%']);
    assert.deepEqual(
      engine.signals.map((s) => s.name),
      ['Rpm', 'Temp', 'Mode', 'Ratio'],
    );
  });

  it('29-bit IDs lose the bit-31 flag; VECTOR__INDEPENDENT_SIG_MSG loads without a warning', () => {
    const mux = message(db, 'Mux29');
    assert.deepEqual([mux.id, mux.extended], [0x18fef100, true]);
    const eec1 = message(db, 'EEC1');
    assert.deepEqual([eec1.id, eec1.extended], [0x0cf004fe, true]);
    const independent = message(db, 'VECTOR__INDEPENDENT_SIG_MSG');
    assert.deepEqual([independent.id, independent.extended, independent.length], [0, true, 0]);
  });

  it('SG_ multiplexing: M, m<n>, m<n>M, overridden by SG_MUL_VAL_ with ranges', () => {
    const mux = signal(db, 'Mux29', 'Mux');
    assert.equal(mux.isMultiplexer, true);
    assert.equal(mux.multiplexerSignal, undefined);
    const a = signal(db, 'Mux29', 'A');
    assert.deepEqual([a.isMultiplexer, a.multiplexerSignal, a.multiplexerIds], [false, 'Mux', [0]]);
    const sub = signal(db, 'Mux29', 'Sub');
    assert.deepEqual([sub.isMultiplexer, sub.multiplexerSignal, sub.multiplexerIds], [true, 'Mux', [1]]);
    // m3 in the SG_ line, but SG_MUL_VAL_ says it hangs off Sub for 2..5 and 7.
    const b = signal(db, 'Mux29', 'B');
    assert.deepEqual([b.isMultiplexer, b.multiplexerSignal, b.multiplexerIds], [false, 'Sub', [2, 3, 4, 5, 7]]);
    const c = signal(db, 'Mux29', 'C');
    assert.deepEqual([c.multiplexerSignal, c.multiplexerIds], ['Mux', [2]]);
    const value = signal(db, 'Mux29', 'Value');
    assert.deepEqual([value.multiplexerSignal, value.multiplexerIds], [undefined, undefined]);
    // Without SG_MUL_VAL_, m3M and m5 both hang off the message's M signal.
    const plain = parseDbc(
      'BO_ 1 X: 8 N\n SG_ Sel M : 0|4@1+ (1,0) [0|0] "" N\n SG_ Inner m3M : 4|4@1+ (1,0) [0|0] "" N\n SG_ Leaf m5 : 8|8@1+ (1,0) [0|0] "" N\n',
      { strict: true },
    ).messages[0]!;
    const summary = plain.signals.map((s) => [s.name, s.isMultiplexer, s.multiplexerSignal, s.multiplexerIds]);
    assert.deepEqual(summary, [
      ['Sel', true, undefined, undefined],
      ['Inner', true, 'Sel', [3]],
      ['Leaf', false, 'Sel', [5]],
    ]);
  });

  it('SIG_VALTYPE_ sets float32 and float64', () => {
    assert.equal(signal(db, 'Mux29', 'Value').valueType, 'float32');
    const f64 = parseDbc('BO_ 1 X: 8 N\n SG_ D : 0|64@1- (1,0) [0|0] "" N\nSIG_VALTYPE_ 1 D : 2;\n', { strict: true });
    assert.equal(f64.messages[0]!.signals[0]!.valueType, 'float64');
  });

  it('VAL_ attaches value descriptions to signals (the env-var form is read and dropped)', () => {
    assert.deepEqual(
      [...signal(db, 'EngineData', 'Mode').choices!],
      [
        [0, 'Off'],
        [1, 'Idle'],
        [2, 'Run'],
        [3, 'Fault'],
      ],
    );
    assert.equal(signal(db, 'Mux29', 'Mux').choices?.get(9), 'Nine');
    assert.equal(signal(db, 'EngineData', 'Rpm').choices, undefined);
  });

  it('CM_ in every form, before and after the object it names', () => {
    assert.equal(db.comment, 'Network comment, see http://example.com // not a comment');
    assert.equal(db.nodes.find((n) => n.name === 'Engine')!.comment, 'Engine ECU');
    assert.equal(db.nodes.find((n) => n.name === 'Dash')!.comment, 'Commented before BU_ names it');
    assert.equal(message(db, 'EngineData').comment, 'Engine data; commented before its BO_');
    assert.equal(signal(db, 'EngineData', 'Rpm').comment, 'Engine speed, "quoted", commented before its BO_');
    assert.equal(message(db, 'Mux29').comment, 'Commented after its BO_,\nover two lines');
    assert.equal(signal(db, 'Mux29', 'A').comment, 'A, commented after its BO_');
    assert.equal(db.environmentVariables.find((e) => e.name === 'EnvSpeed')!.comment, 'Speed environment variable');
  });

  it('BA_DEF_ of every type and object type, with BA_DEF_DEF_ defaults', () => {
    const defs = db.attributeDefinitions;
    const summary = (name: string): unknown => {
      const d = defs.get(name)!;
      return [d.objectType, d.valueType, d.minimum, d.maximum, d.enumValues, d.defaultValue];
    };
    assert.deepEqual(summary('BusType'), ['', 'STRING', undefined, undefined, undefined, 'CAN FD']);
    assert.deepEqual(summary('NodeLayer'), ['BU_', 'INT', 0, 255, undefined, 0]);
    assert.deepEqual(summary('GenMsgSendType'), ['BO_', 'ENUM', undefined, undefined, ['Cyclic', 'Spontaneous', 'IfActive'], 'Cyclic']);
    assert.deepEqual(summary('GenSigStartValue'), ['SG_', 'FLOAT', 0, 100000, undefined, 0]);
    assert.deepEqual(summary('SigId'), ['SG_', 'HEX', 0, 4095, undefined, 0]);
    assert.deepEqual(summary('SigScale'), ['SG_', 'FLOAT', -1.5, 1.5, undefined, 0.5]);
    assert.deepEqual(summary('EvLevel'), ['EV_', 'INT', 0, 10, undefined, 1]);
    assert.deepEqual(summary('NoRange'), ['BO_', 'INT', undefined, undefined, undefined, undefined]);
    assert.equal(defs.get('VFrameFormat')!.enumValues!.length, 16);
    assert.equal(defs.get('RelAttr')!.objectType, 'BU_SG_REL_');
  });

  it('BA_ on the network, nodes, messages and signals; enum indices become labels', () => {
    assert.deepEqual(db.attributes, { DBName: 'Demo' });
    assert.deepEqual(db.nodes.find((n) => n.name === 'Engine')!.attributes, { NodeLayer: 3 });
    assert.deepEqual(message(db, 'EngineData').attributes, { GenMsgCycleTime: 20, GenMsgSendType: 'Spontaneous' });
    assert.deepEqual(message(db, 'Mux29').attributes, { VFrameFormat: 'ExtendedCAN_FD' });
    assert.deepEqual(message(db, 'EEC1').attributes, { VFrameFormat: 'J1939PG' });
    assert.deepEqual(signal(db, 'EngineData', 'Rpm').attributes, { GenSigStartValue: 3200 });
    assert.deepEqual(signal(db, 'EngineData', 'Temp').attributes, { SigId: 255 });
    assert.deepEqual(signal(db, 'EngineData', 'Ratio').attributes, { SigScale: -0.25 });
  });

  it('GenMsgCycleTime → cycleTime, VFrameFormat → fd / j1939, GenSigStartValue → startValue', () => {
    assert.equal(message(db, 'EngineData').cycleTime, 20);
    assert.equal(message(db, 'Mux29').cycleTime, undefined); // default 0: none
    const mux = message(db, 'Mux29');
    assert.deepEqual([mux.fd, mux.j1939, mux.length], [true, false, 8]);
    const eec1 = message(db, 'EEC1');
    assert.deepEqual([eec1.fd, eec1.j1939], [false, true]);
    assert.deepEqual([message(db, 'EngineData').fd, message(db, 'EngineData').j1939], [false, false]);
    assert.equal(signal(db, 'EngineData', 'Rpm').startValue, 3200);
    assert.equal(signal(db, 'EngineData', 'Temp').startValue, 0); // the BA_DEF_DEF_ default
  });

  it('attribute defaults alone decide cycleTime and the frame format', () => {
    const text =
      'BO_ 1 X: 8 N\n' +
      'BA_DEF_ BO_ "GenMsgCycleTime" INT 0 1000;\nBA_DEF_ BO_ "VFrameFormat" ENUM "StandardCAN","ExtendedCAN","StandardCAN_FD","ExtendedCAN_FD","J1939PG";\n' +
      'BA_DEF_DEF_ "GenMsgCycleTime" 100;\nBA_DEF_DEF_ "VFrameFormat" "StandardCAN_FD";\n';
    const m = parseDbc(text).messages[0]!;
    assert.deepEqual([m.cycleTime, m.fd, m.j1939], [100, true, false]);
  });

  it('BO_TX_BU_ adds senders', () => {
    assert.deepEqual(message(db, 'EngineData').senders, ['Engine', 'Gateway', 'Dash']);
    assert.deepEqual(message(db, 'Mux29').senders, ['Gateway']);
  });

  it('EV_ and ENVVAR_DATA_ are read without trouble', () => {
    assert.deepEqual(
      db.environmentVariables.map((e) => ({ ...e, comment: undefined })),
      [
        {
          name: 'EnvSpeed',
          type: 0,
          minimum: 0,
          maximum: 300,
          unit: 'km/h',
          initialValue: 10,
          id: 1,
          accessType: 'DUMMY_NODE_VECTOR0',
          accessNodes: ['Engine', 'Dash'],
          comment: undefined,
        },
        {
          name: 'EnvRatio',
          type: 1,
          minimum: -1.5,
          maximum: 2.5,
          unit: '',
          initialValue: 0.5,
          id: 2,
          accessType: 'DUMMY_NODE_VECTOR8000',
          accessNodes: ['Vector__XXX'],
          comment: undefined,
        },
      ],
    );
    const only = parseDbc('ENVVAR_DATA_ EnvData: 8;\nEV_DATA_ X: 1;\nBO_ 1 X: 8 N\n', { strict: true });
    assert.deepEqual([only.messages.length, only.warnings], [1, []]);
  });

  it('BA_DEF_REL_, BA_REL_, BA_DEF_DEF_REL_, SIG_GROUP_, CAT_, FILTER, SGTYPE_, SIG_TYPE_REF_ and BU_*_REL_ are skipped without error', () => {
    // Nothing they say reaches the signals they name.
    assert.deepEqual(Object.keys(signal(db, 'EngineData', 'Rpm').attributes), ['GenSigStartValue']);
    assert.equal(message(db, 'EngineData').signals.length, 4);
    assert.equal(db.messages.length, 4);
  });

  it('CRLF line ends read the same database', () => {
    const crlf = parseDbc(FULL_DBC.replace(/\n/g, '\r\n'), { file: 'full.dbc', strict: true });
    // A comment that spans lines keeps its line break as written.
    const expected = db.messages.map((m) => (m.comment === undefined ? m : { ...m, comment: m.comment.replace(/\n/g, '\r\n') }));
    assert.deepEqual(crlf.messages, expected);
    assert.deepEqual(crlf.nodes, db.nodes);
    assert.deepEqual(crlf.attributeDefinitions, db.attributeDefinitions);
    assert.deepEqual(crlf.environmentVariables, db.environmentVariables);
    assert.deepEqual(crlf.warnings, db.warnings);
  });

  it('a UTF-8 BOM is skipped, from bytes and from a string', () => {
    const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(FULL_DBC, 'utf8')]);
    const fromBytes = parseDbc(bytes, { file: 'full.dbc', strict: true });
    assert.equal(fromBytes.encoding, 'utf-8');
    assert.equal(fromBytes.version, '1.2.3');
    assert.deepEqual(fromBytes.messages, db.messages);
    const fromString = parseDbc(`\uFEFF${FULL_DBC}`, { file: 'full.dbc', strict: true });
    assert.deepEqual(fromString.messages, db.messages);
  });

  it('bytes that are not UTF-8 are read as windows-1252; UTF-8 bytes stay UTF-8', () => {
    const ascii = (t: string): Buffer => Buffer.from(t, 'ascii');
    // 0xB0 '°', 0xFC 'ü', 0xDF 'ß': the same in latin-1 and windows-1252.
    const cp1252 = Buffer.concat([
      ascii('BO_ 1 Msg: 8 N\n SG_ S : 0|8@1+ (1,0) [0|0] "'),
      Buffer.from([0xb0]),
      ascii('C" N\nVAL_ 1 S 1 "gr'),
      Buffer.from([0xfc, 0xdf]),
      ascii('" ;\n'),
    ]);
    const latin = parseDbc(cp1252);
    assert.equal(latin.encoding, 'windows-1252');
    assert.equal(latin.messages[0]!.signals[0]!.unit, '°C');
    assert.equal(latin.messages[0]!.signals[0]!.choices?.get(1), 'grüß');
    const utf8 = parseDbc(Buffer.from('BO_ 1 Msg: 8 N\n SG_ S : 0|8@1+ (1,0) [0|0] "°C" N\nVAL_ 1 S 1 "grüß €" ;\n', 'utf8'));
    assert.equal(utf8.encoding, 'utf-8');
    assert.equal(utf8.messages[0]!.signals[0]!.unit, '°C');
    assert.equal(utf8.messages[0]!.signals[0]!.choices?.get(1), 'grüß €');
  });

  it("windows-1252's own characters 0x80-0x9F (€, curly quotes) are decoded as windows-1252, not latin-1", () => {
    const bytes = Buffer.concat([Buffer.from('CM_ "', 'ascii'), Buffer.from([0x80, 0x20, 0x93, 0x71, 0x94, 0x20, 0x92]), Buffer.from('";\n', 'ascii')]);
    const db2 = parseDbc(bytes);
    assert.equal(db2.encoding, 'windows-1252');
    assert.equal(db2.comment, '\u20ac \u201cq\u201d \u2019');
  });

  it('names may carry non-ASCII letters (German umlauts in real files)', () => {
    const db2 = parseDbc(Buffer.from('BO_ 1 Bremsdrück: 8 N\n SG_ Öl : 0|8@1+ (1,0) [0|0] "" N\n', 'utf8'));
    assert.equal(db2.messages[0]!.name, 'Bremsdrück');
    assert.equal(db2.messages[0]!.signals[0]!.name, 'Öl');
  });

  it('an empty file and a file of comments load as an empty database', () => {
    for (const text of ['', '\n\n', '// only a comment\n', '\uFEFF']) {
      const empty = parseDbc(text, { strict: true });
      assert.deepEqual([empty.messages, empty.nodes, empty.warnings, empty.version], [[], [], [], '']);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// pathological inputs

describe('pathological inputs', () => {
  it('a malformed EV_ is never fatal in lenient mode', () => {
    const db = parseDbc('EV_ Broken 0 1;\nBO_ 1 X: 8 N\n SG_ S : 0|8@1+ (1,0) [0|0] "" N\n', { file: 'x.dbc' });
    assert.equal(db.messages.length, 1);
    assert.ok(db.warnings.some((w) => w.message.startsWith('tolerated:') && w.message.includes('EV_')));
  });

  it('a signal that multiplexes itself (duplicate names + SG_MUL_VAL_) loads in bounded time and memory', () => {
    // Run in a child process with a time and memory limit, so the defect cannot take this test run down with it.
    const text = 'BO_ 1 X: 8 N\n SG_ A M : 0|8@1+ (1,0) [0|0] "" N\n SG_ A m1M : 8|8@1+ (1,0) [0|0] "" N\nSG_MUL_VAL_ 1 A A 0-3;\n';
    const dbc = new URL('../../src/dbc/index.js', import.meta.url).href;
    const script = `import { parseDbc, compileDatabase } from ${JSON.stringify(dbc)};
const db = parseDbc(${JSON.stringify(text)});
compileDatabase(db).find(1, false).decode(new Uint8Array(8));`;
    const child = spawnSync(process.execPath, ['--max-old-space-size=256', '--input-type=module', '-e', script], {
      timeout: 3000,
      encoding: 'utf8',
    });
    assert.equal(child.error, undefined, 'the child did not finish within 3 s');
    assert.equal(child.status, 0, child.stderr.slice(-2000));
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// encodings declared by a byte-order mark, and files that define nothing

describe('byte-order marks and empty files', () => {
  /** The file's text as saved by a tool in another encoding: UTF-16 LE or BE, or UTF-8, each with its byte-order mark. */
  function reencode(text: string, encoding: 'utf-16le' | 'utf-16be' | 'utf-8'): Buffer {
    if (encoding === 'utf-8') return Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text, 'utf8')]);
    const le = Buffer.from(text, 'utf16le');
    return encoding === 'utf-16le' ? Buffer.concat([Buffer.from([0xff, 0xfe]), le]) : Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from(le).swap16()]);
  }

  /** Decodes each of the database's first messages from the same payloads: values, or the decode error's message. */
  function decodedSamples(db: Database): unknown[] {
    const compiled = compileDatabase(db);
    const out: unknown[] = [];
    for (const m of db.messages.filter((msg) => msg.signals.length > 0).slice(0, 12)) {
      const codec = compiled.find(m.id, m.extended)!;
      for (let k = 0; k < 3; k++) {
        const payload = Uint8Array.from({ length: m.length }, (_, i) => (i * 37 + k * 101 + m.id) & 0xff);
        try {
          out.push([m.name, codec.decode(payload, { choices: true })]);
        } catch (err) {
          if (!(err instanceof DecodeError)) throw err;
          out.push([m.name, err.message]);
        }
      }
    }
    return out;
  }

  it('[14.8] a real DBC saved as UTF-16 LE or BE (or UTF-8) with a byte-order mark decodes exactly as the original', { skip: skipShared }, () => {
    const dir = makeTempDir('dbc-bom-');
    // Windows-1252 with degree signs (vehicle), UTF-8 with non-ASCII text (J1939 demo), multiplexing, value tables.
    for (const name of ['vehicle.dbc', 'css_j1939_demo.dbc', 'multiplex_2.dbc', 'choices.dbc']) {
      const file = sharedTestdata('dbc', name);
      const original = loadDbcFile(file);
      const { text } = decodeDbcBytes(readFileSync(file));
      const expected = decodedSamples(original);
      assert.ok(expected.length > 0, name);
      for (const encoding of ['utf-16le', 'utf-16be', 'utf-8'] as const) {
        const copy = path.join(dir, `${encoding}-${name}`);
        writeFileSync(copy, reencode(text, encoding));
        const db = loadDbcFile(copy);
        const what = `${name} as ${encoding}`;
        assert.equal(db.encoding, encoding, what);
        assert.ok(db.messages.length > 0, what);
        assert.deepEqual(db.messages, original.messages, what);
        assert.deepEqual(db.nodes, original.nodes, what);
        assert.deepEqual(db.valueTables, original.valueTables, what);
        assert.deepEqual(db.attributeDefinitions, original.attributeDefinitions, what);
        assert.deepEqual([db.version, db.comment], [original.version, original.comment], what);
        const withoutFile = (d: Database): unknown[] => d.warnings.map(({ file: _file, ...rest }) => rest);
        assert.deepEqual(withoutFile(db), withoutFile(original), what);
        assert.deepEqual(decodedSamples(db), expected, what);
      }
    }
  });

  it('[14.8] UTF-16 that is not valid UTF-16 is an error naming the file, not a guess', () => {
    const dir = makeTempDir('dbc-bom-');
    const odd = path.join(dir, 'odd.dbc');
    writeFileSync(odd, Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('BO_ 1 X: 8 N\n', 'utf16le'), Buffer.from([0x42])]));
    const err = parseError(() => loadDbcFile(odd));
    assert.equal(err.file, odd);
    assert.match(err.message, /odd\.dbc:1:1: starts with a UTF-16LE byte-order mark but is not valid UTF-16LE/);
    const surrogate = path.join(dir, 'surrogate.dbc');
    writeFileSync(surrogate, Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from([0xd8, 0x00, 0x00, 0x41])]));
    assert.match(parseError(() => loadDbcFile(surrogate)).message, /surrogate\.dbc:1:1: .*not valid UTF-16BE/);
  });

  it('[14.8] a DBC file that defines no message is refused, naming the file', () => {
    const dir = makeTempDir('dbc-empty-');
    for (const [name, bytes] of [
      ['empty.dbc', Buffer.alloc(0)],
      ['header-only.dbc', Buffer.from('VERSION "1.0"\n\nNS_ :\n\tCM_\n\nBS_:\n\nBU_: ECU GW\n', 'utf8')],
      // UTF-16 without its byte-order mark: no message can be read out of it, and the error says what it looks like.
      ['no-bom.dbc', Buffer.from('VERSION ""\n', 'utf16le')],
    ] as const) {
      const file = path.join(dir, name);
      writeFileSync(file, bytes);
      const err = parseError(() => loadDbcFile(file));
      assert.equal(err.file, file);
      assert.match(err.message, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: no message \\(BO_\\) found in this DBC file`), name);
      if (name === 'no-bom.dbc') assert.match(err.message, /UTF-16 without a byte-order mark\?/);
    }
  });
});
