/**
 * Which DBC files declare J1939 (j1939Declaration), the fact `decode` turns PGN matching on from: the shared corpus's
 * J1939 files by their ProtocolType attribute (set, or as the definition's default), a file by its messages' J1939PG
 * frame format alone, and files that say nothing or have no 29-bit message.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { j1939Declaration, loadDbcFile, parseDbc } from '../../src/dbc/index.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { hasSharedTestdata, NO_SHARED_TESTDATA, sharedDbcFiles, sharedTestdata } from '../support/shared.js';

const FORMAT_DEFINITION = 'BA_DEF_ BO_ "VFrameFormat" ENUM "StandardCAN","ExtendedCAN","reserved","J1939PG";';

describe('[16.cli] j1939Declaration', () => {
  it(
    '[16.cli] the shared J1939 DBCs declare it by ProtocolType, set or by default; the others do not',
    { skip: hasSharedTestdata() ? false : NO_SHARED_TESTDATA },
    () => {
      assert.equal(j1939Declaration(loadDbcFile(sharedTestdata('dbc', 'css_j1939_demo.dbc'))), 'ProtocolType "J1939"');
      // multiplex_2.dbc sets no ProtocolType, but its definition's default is "J1939".
      assert.equal(j1939Declaration(loadDbcFile(sharedTestdata('dbc', 'multiplex_2.dbc'))), 'ProtocolType "J1939"');
      // Defines J1939PG among its frame formats, uses none, and its ProtocolType is "".
      assert.equal(j1939Declaration(loadDbcFile(sharedTestdata('dbc', 'css_tp', 'tp_uds.dbc'))), undefined);
      const declared = sharedDbcFiles()
        .filter((file) => j1939Declaration(loadDbcFile(file)) !== undefined)
        .map((file) => path.relative(sharedTestdata('dbc'), file));
      assert.ok(declared.includes('css_j1939_demo.dbc') && declared.includes('multiplex_2.dbc'), declared.join(', '));
      assert.ok(!declared.some((file) => /toyota|tesla|vw_|ford|acura/.test(file)), declared.join(', '));
    },
  );

  it('[16.cli] by the J1939PG frame format of its 29-bit messages alone; never for a DBC without 29-bit messages', () => {
    // Messages by their DBC IDs (bit 31: extended), the J1939PG frame format set on those in `pgs`.
    const dbc = (ids: number[], pgs: number[]): string =>
      [
        ...ids.map((id) => `BO_ ${id} M${id}: 8 ECU\n SG_ S : 0|8@1+ (1,0) [0|0] "" X`),
        FORMAT_DEFINITION,
        ...pgs.map((id) => `BA_ "VFrameFormat" BO_ ${id} 3;`),
        '',
      ].join('\n');
    const eec1 = 0x80000000 + 0x0cf00400;
    const ccvs = 0x80000000 + 0x18fef100;
    assert.equal(j1939Declaration(parseDbc(dbc([eec1, ccvs, 0x100], [eec1, ccvs]))), 'VFrameFormat J1939PG on every 29-bit message');
    assert.equal(j1939Declaration(parseDbc(dbc([eec1, ccvs], [eec1]))), 'VFrameFormat J1939PG on 1 of its 2 29-bit messages');
    assert.equal(j1939Declaration(parseDbc(dbc([eec1, ccvs], []))), undefined);
    // ProtocolType J1939 on a DBC of 11-bit messages: PGN matching would change nothing, so nothing is declared.
    assert.equal(
      j1939Declaration(parseDbc('BA_DEF_ "ProtocolType" STRING;\nBA_ "ProtocolType" "J1939";\nBO_ 256 M: 8 ECU\n SG_ S : 0|8@1+ (1,0) [0|0] "" X\n')),
      undefined,
    );
    assert.equal(j1939Declaration(loadDbcFile(DEMO_DBC_PATH)), undefined);
  });
});
