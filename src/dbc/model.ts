/** The in-memory form of a DBC file, as the parser builds it and the codec compiles it. */

export type ByteOrder = 'little_endian' | 'big_endian';
export type ValueType = 'integer' | 'float32' | 'float64';
export type AttributeValue = number | string;

/** A decoded signal value: a number, an exact BigInt beyond 2^53, or a value-table label. */
export type SignalValue = number | bigint | string;

export interface SignalDef {
  name: string;
  /** Start bit as written in the DBC: the LSB for Intel, the MSB (sawtooth numbering) for Motorola. */
  startBit: number;
  length: number;
  byteOrder: ByteOrder;
  signed: boolean;
  valueType: ValueType;
  factor: number;
  offset: number;
  /** Factor and offset were both written as integers: scaling keeps values integral (and exact as BigInt). */
  integerScaling: boolean;
  minimum: number;
  maximum: number;
  unit: string;
  receivers: string[];
  /** This signal selects which multiplexed signals are present (`M`, or `mNM`). */
  isMultiplexer: boolean;
  /** The multiplexer signal this one depends on, if multiplexed. */
  multiplexerSignal?: string;
  /** Multiplexer values for which this signal is present. */
  multiplexerIds?: number[];
  /** Value table, keyed by raw value. */
  choices?: Map<number, string>;
  comment?: string;
  attributes: Record<string, AttributeValue>;
  /** GenSigStartValue, as a raw value. */
  startValue?: number;
  /** 1-based line in the DBC file, for diagnostics. */
  line: number;
}

export interface MessageDef {
  /** Identifier without the DBC's bit-31 extended flag. */
  id: number;
  extended: boolean;
  name: string;
  /** Payload length in bytes (up to 64 for CAN FD). */
  length: number;
  senders: string[];
  signals: SignalDef[];
  comment?: string;
  attributes: Record<string, AttributeValue>;
  /** GenMsgCycleTime in ms, when the DBC gives one. */
  cycleTime?: number;
  /** CAN FD frame format (VFrameFormat StandardCAN_FD / ExtendedCAN_FD, or length above 8). */
  fd: boolean;
  /** J1939 parameter group (VFrameFormat J1939PG). */
  j1939: boolean;
  line: number;
}

export interface AttributeDefinition {
  name: string;
  /** `''` for network-wide attributes, otherwise BU_, BO_, SG_, EV_ or a relation kind such as BU_SG_REL_. */
  objectType: string;
  valueType: 'INT' | 'HEX' | 'FLOAT' | 'STRING' | 'ENUM';
  minimum?: number;
  maximum?: number;
  enumValues?: string[];
  defaultValue?: AttributeValue;
}

export interface NodeDef {
  name: string;
  comment?: string;
  attributes: Record<string, AttributeValue>;
}

export interface EnvironmentVariable {
  name: string;
  type: number;
  minimum: number;
  maximum: number;
  unit: string;
  initialValue: number;
  id: number;
  accessType: string;
  accessNodes: string[];
  comment?: string;
  dataSize?: number;
}

export interface DbcWarning {
  file: string;
  line: number;
  column: number;
  message: string;
}

export interface Database {
  file: string;
  version: string;
  /**
   * Source encoding: `utf-16le` or `utf-16be` (declared by a byte-order mark), else `utf-8` or `windows-1252` (a
   * superset of latin-1's printable range) as detected.
   */
  encoding: string;
  comment?: string;
  nodes: NodeDef[];
  messages: MessageDef[];
  valueTables: Map<string, Map<number, string>>;
  attributeDefinitions: Map<string, AttributeDefinition>;
  attributes: Record<string, AttributeValue>;
  environmentVariables: EnvironmentVariable[];
  signalGroups: { messageId: number; name: string; repetitions: number; signals: string[] }[];
  warnings: DbcWarning[];
}
