/**
 * `telematics-agent dbc FILE`: what a DBC file holds, and what the parser had to tolerate in it. A file that cannot be
 * read, does not parse or defines no message fails with one line naming it (exit status 1).
 */
import type { Command } from 'commander';
import { j1939Declaration, loadDbcFile, type Database, type MessageDef, type SignalDef } from '../dbc/index.js';
import { forTerminal } from '../text/terminal-text.js';

function hexId(message: MessageDef): string {
  return `0x${message.id
    .toString(16)
    .toUpperCase()
    .padStart(message.extended ? 8 : 3, '0')}`;
}

function muxLabel(signal: SignalDef): string {
  const ids = signal.multiplexerIds ?? [];
  const shown = ids.length > 4 ? `${ids[0]}..${ids[ids.length - 1]} (${ids.length} values)` : ids.join(',');
  if (signal.multiplexerSignal) return ` [${signal.multiplexerSignal}=${shown}${signal.isMultiplexer ? ', multiplexer' : ''}]`;
  return signal.isMultiplexer ? ' [multiplexer]' : '';
}

function signalLine(signal: SignalDef): string {
  const order = signal.byteOrder === 'little_endian' ? 'Intel' : 'Motorola';
  const type = signal.valueType === 'integer' ? (signal.signed ? 'signed' : 'unsigned') : signal.valueType;
  const scaling = signal.factor === 1 && signal.offset === 0 ? '' : ` *${signal.factor} +${signal.offset}`;
  const unit = signal.unit ? ` ${signal.unit}` : '';
  const labels = signal.choices?.size ? ` (${signal.choices.size} labels)` : '';
  return `    ${signal.name}: bit ${signal.startBit}, ${signal.length} bits, ${order}, ${type}${scaling}${unit}${labels}${muxLabel(signal)}`;
}

export function summarizeDatabase(db: Database, verbose: boolean): string {
  const lines: string[] = [];
  const signals = db.messages.reduce((n, m) => n + m.signals.length, 0);
  const extended = db.messages.filter((m) => m.extended).length;
  const fd = db.messages.filter((m) => m.fd).length;
  const j1939 = db.messages.filter((m) => m.j1939).length;
  const multiplexed = db.messages.filter((m) => m.signals.some((s) => s.isMultiplexer)).length;
  lines.push(`${db.file} (${db.encoding}${db.version ? `, version "${db.version}"` : ''})`);
  lines.push(
    `${db.messages.length} messages (${extended} extended ID, ${fd} CAN FD, ${j1939} J1939, ${multiplexed} multiplexed), ` +
      `${signals} signals, ${db.nodes.length} nodes, ${db.valueTables.size} value tables`,
  );
  const j1939Declared = j1939Declaration(db);
  if (j1939Declared !== undefined) lines.push(`J1939 database (${j1939Declared}): decode matches its 29-bit messages by parameter group (PGN)`);
  if (db.warnings.length > 0) {
    lines.push(`${db.warnings.length} warning(s):`);
    for (const w of db.warnings) lines.push(`  line ${w.line}: ${w.message}`);
  }
  lines.push('messages:');
  for (const message of db.messages) {
    const cycle = message.cycleTime ? `, every ${message.cycleTime} ms` : '';
    const flags = [message.fd ? 'FD' : '', message.j1939 ? 'J1939' : ''].filter(Boolean).join(' ');
    lines.push(
      `  ${hexId(message)} ${message.name}: ${message.length} bytes, ${message.signals.length} signals${cycle}` +
        `${flags ? `, ${flags}` : ''}${message.senders.length ? `, from ${message.senders.join(', ')}` : ''}`,
    );
    if (verbose) for (const signal of message.signals) lines.push(signalLine(signal));
  }
  // Names, units, the version and the warnings come from the file: shown, never interpreted by the terminal.
  return lines.map(forTerminal).join('\n');
}

export function registerDbcCommand(program: Command): void {
  program
    .command('dbc')
    .description('summarise a DBC file: messages, signals, multiplexing and warnings')
    .argument('<file>', 'DBC file')
    .option('-s, --signals', 'list every signal', false)
    .option('--strict', 'reject files that deviate from the DBC grammar', false)
    .action((file: string, opts: { signals: boolean; strict: boolean }) => {
      const db = loadDbcFile(file, { strict: opts.strict });
      process.stdout.write(`${summarizeDatabase(db, opts.signals)}\n`);
    });
}
