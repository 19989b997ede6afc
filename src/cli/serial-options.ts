/**
 * Command-line values for serial ports, shared by the commands that open one (`obd --port`, `gnss --port`): each
 * parser throws commander's InvalidArgumentError with what was expected, so the command line shows it beside the option.
 */
import { InvalidArgumentError } from 'commander';

export function parseBaud(text: string): number {
  if (!/^\d{3,7}$/.test(text)) throw new InvalidArgumentError('expected a baud rate such as 38400');
  return Number(text);
}

export function parsePortPath(text: string): string {
  if (text.trim() === '' || text.includes('\0')) throw new InvalidArgumentError('expected a serial port path such as /dev/ttyUSB0');
  return text;
}
