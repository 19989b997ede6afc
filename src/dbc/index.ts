/** DBC databases: parse a file, compile it, decode and encode frames. */
export { loadDbcFile, parseDbc, decodeDbcBytes, DbcParseError, type DbcParseOptions } from './parser.js';
export {
  compileDatabase,
  CompiledDatabase,
  MessageCodec,
  DecodeError,
  EncodeError,
  pgnOfFrameId,
  DECODE_TOO_SHORT,
  DECODE_BAD_MULTIPLEXER,
  DECODE_UNPACKABLE,
  type CompileOptions,
  type DecodeOptions,
  type EncodeOptions,
} from './codec.js';
export { j1939Declaration } from './protocol.js';
export type * from './model.js';
